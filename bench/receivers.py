"""Receiving sockets in a child process of their own, at a lower CPU priority.

On a 2-core machine the receivers of a broadcast compete for CPU with the writers and
PostgreSQL. In production they are browsers on other machines; here, so that their cost does
not show up as writers slowed by pgcast, they run niced in their own process and take what
CPU is left over. They catch up once the writers stop, and every frame is still checked.

    fleet = await ReceiverProcess.start(nice=10)
    await fleet.open(port, url, cookie, count)
    await fleet.start_phase()
    ... writers ...
    reception = await fleet.finish(ids, limit_seconds)
    await fleet.close()
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bench.fanout import Fleet
from bench.quick import Receiver, close_sockets, run_load_generator, wait_delivered

# No more than this many frames are expected of one phase; the real count is set at its end.
OPEN_ENDED = 1 << 62


@dataclass
class Reception:
    """What the sockets got of the messages with `ids` (times: `time.time()`)."""

    frames: int
    expected: int
    frames_per_second: float
    losses: int
    duplicates: int
    closed_sockets: int
    first_at: float
    last_at: float


def reception(receivers: Sequence[Receiver], ids: Sequence[int]) -> Reception:
    """Exactly once, not order: with several writers, id order is not commit order."""
    wanted = set(ids)
    frames = losses = duplicates = closed = 0
    firsts, lasts = [], []
    for receiver in receivers:
        got = [found for found in receiver.ids if found in wanted]
        frames += len(got)
        unique = set(got)
        duplicates += len(got) - len(unique)
        losses += len(wanted - unique)
        closed += receiver.closed
        if receiver.times:
            firsts.append(receiver.times[0])
            lasts.append(receiver.times[-1])
    first, last = (min(firsts), max(lasts)) if firsts else (math.nan, math.nan)
    span = last - first
    return Reception(
        frames=frames,
        expected=len(wanted) * len(receivers),
        frames_per_second=frames / span if span > 0 else math.nan,
        losses=losses,
        duplicates=duplicates,
        closed_sockets=closed,
        first_at=first,
        last_at=last,
    )


class ReceiverProcess:
    """The parent's handle: each call sends one command and waits for its answer."""

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self._process = process
        self._conn = conn
        self.sockets = 0

    @classmethod
    async def start(cls, nice: int) -> ReceiverProcess:
        # spawn: a fork would copy the parent's running event loop and threads.
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(target=_child_main, args=(child, nice), daemon=True)
        process.start()
        child.close()
        return cls(process, parent)

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    async def _call(self, *command: Any) -> Any:
        self._conn.send(command)
        answer = await asyncio.to_thread(self._conn.recv)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def open(self, port: int, url: str, cookie: str, count: int) -> None:
        """Open sockets, or close some, until `count` are open."""
        self.sockets = await self._call("open", port, url, cookie, count)

    async def start_phase(self, expected: int = OPEN_ENDED) -> None:
        await self._call("start", expected)

    async def finish(self, ids: Sequence[int], limit_seconds: float) -> Reception:
        """Wait until every socket has every id (or is closed), at most `limit_seconds`;
        then replace the sockets that were closed or behind."""
        result: Reception = await self._call("finish", list(ids), limit_seconds)
        return result

    async def close(self) -> None:
        try:
            await self._call("close")
        finally:
            self._conn.close()
            await asyncio.to_thread(self._process.join, 10)
            if self._process.is_alive():
                self._process.kill()


def _child_main(conn: Connection, nice: int) -> None:
    os.nice(nice)
    run_load_generator(_serve(conn))


async def _serve(conn: Connection) -> None:
    fleet: Fleet | None = None
    while True:
        # A thread, not add_reader: uvloop makes a watched descriptor non-blocking, and
        # Connection.recv then fails halfway through a message.
        command, *params = await asyncio.to_thread(conn.recv)
        try:
            if command == "close":
                if fleet is not None:
                    await close_sockets(fleet.receivers)
                conn.send(None)
                return
            if command == "open":
                port, url, cookie, count = params
                if fleet is None:
                    fleet = Fleet(port, url, cookie)
                await fleet.ensure(count)
                conn.send(len(fleet.receivers))
                continue
            assert fleet is not None, "open first"
            if command == "start":
                for receiver in fleet.receivers:
                    receiver.start_phase(params[0])
                conn.send(None)
            elif command == "finish":
                conn.send(await _finish(fleet, params[0], params[1]))
            else:
                raise ValueError(f"unknown command {command!r}")
        except Exception as error:
            # The parent raises it.
            conn.send(error)


async def _finish(fleet: Fleet, ids: list[int], limit_seconds: float) -> Reception:
    for receiver in fleet.receivers:
        receiver.expected = len(ids)
        if len(receiver.ids) >= len(ids) or receiver.closed:
            receiver.done.set()
    await wait_delivered(fleet.receivers, limit_seconds)
    got = reception(fleet.receivers, ids)
    await fleet.settle()
    return got
