"""Open sockets of every process, one row each in `pgcast_sockets`: the limits on sockets per
user and per address count them all, and Pusher's channel state (`GET /apps/{id}/channels`,
`subscription_count`) is read from their channels.

A socket's row is written as it opens (after the limit check, in one transaction), written
again when its channels change (a Pusher subscribe or unsubscribe), and deleted as it
closes: one write each, nothing per message. A row whose write failed (the database was
away) is put right by a task that keeps trying; the rows of a process that died go with its
row in `pgcast_processes` (ON DELETE CASCADE), and so do those of a process shutting down,
which therefore does not delete them one by one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import psycopg

from server import queries
from server.db import DbPool
from server.errors import ApiError
from server.pg.listener import backoff

log = logging.getLogger(__name__)

NATIVE = "native"
PUSHER = "pusher"


@dataclass(slots=True)
class _Held:
    """A socket this process holds, as its row should read."""

    protocol: str
    user_id: int | None
    address: str
    channels: list[str]
    # Made by the first write after the row's insert: an idle socket never needs one.
    _writing: asyncio.Lock | None = None

    def writing(self) -> asyncio.Lock:
        """One write of the row at a time, each from `channels` as it then is: whichever
        runs last leaves the row as the socket is."""
        if self._writing is None:
            self._writing = asyncio.Lock()
        return self._writing


class SocketRegistry:
    def __init__(self, pool: DbPool, process_id: str, per_user: int, per_address: int) -> None:
        self._pool = pool
        self._process_id = process_id
        self._per_user = per_user
        self._per_address = per_address
        self._held: dict[str, _Held] = {}
        self._unwritten: set[str] = set()
        self._undeleted: set[str] = set()
        self._repairing: asyncio.Task[None] | None = None
        self._stopping = False

    def __len__(self) -> int:
        return len(self._held)

    async def open(
        self,
        socket_id: str,
        protocol: str,
        user_id: int | None,
        address: str,
        channels: Collection[str] = (),
    ) -> None:
        """Count the socket, or refuse it with 429 `too_many_sockets`; `release` must follow
        once it ends. `user_id` None: a socket with no pgcast user (a Pusher socket in open
        mode), counted against its address only."""
        held = _Held(protocol, user_id, address, sorted(set(channels)))
        await self._open(socket_id, held)
        self._held[socket_id] = held

    async def release(self, socket_id: str) -> None:
        held = self._held.pop(socket_id)
        self._unwritten.discard(socket_id)
        if not self._stopping:
            await self._delete(socket_id, held)

    async def set_channels(self, socket_id: str, channels: Iterable[str]) -> None:
        """Record the socket's channels now. On a database error, the error is raised and the
        row is written later, from the channels the socket has by then."""
        held = self._held[socket_id]
        wanted = sorted(set(channels))
        if wanted == held.channels and socket_id not in self._unwritten:
            return
        held.channels = wanted
        try:
            await self._write_channels(socket_id, held)
        except psycopg.Error:
            self._repair_later(unwritten=socket_id)
            raise

    def set_channels_later(self, socket_id: str, channels: Iterable[str]) -> None:
        """Record the socket's channels as soon as the database lets us, without waiting."""
        held = self._held.get(socket_id)
        if held is None:
            return
        wanted = sorted(set(channels))
        if wanted != held.channels or socket_id in self._unwritten:
            held.channels = wanted
            self._repair_later(unwritten=socket_id)

    def stopping(self) -> None:
        """The process is shutting down: its sockets' rows go with its own, in one go."""
        self._stopping = True

    async def write_again(self) -> None:
        """Write every socket's row again: this process's row was taken for dead and removed
        with them, while the sockets stayed open."""
        rows = [self._row(socket_id, held) for socket_id, held in self._held.items()]
        async with self._pool.connection() as conn:
            async with conn.cursor() as cursor:
                await cursor.executemany(queries.RESTORE_SOCKET, rows)
            # A socket that closed meanwhile may have had its row deleted before it was
            # written again here.
            closed = [row["socket_id"] for row in rows if row["socket_id"] not in self._held]
            if closed:
                await conn.execute(
                    queries.CLOSE_SOCKETS, {"socket_ids": closed, "process_id": self._process_id}
                )
        # And one whose channels changed meanwhile may have had them written over.
        for row in rows:
            held = self._held.get(str(row["socket_id"]))
            if held is not None and held.channels != row["channels"]:
                self._repair_later(unwritten=str(row["socket_id"]))
        log.info("wrote the rows of %d open socket(s) again", len(rows))

    async def close(self) -> None:
        if self._repairing is not None:
            self._repairing.cancel()
            await asyncio.gather(self._repairing, return_exceptions=True)

    async def _open(self, socket_id: str, held: _Held) -> None:
        per_user = self._per_user if held.user_id is not None else 0
        keys = []
        if per_user:
            keys.append(f"user:{held.user_id}")
        if self._per_address:
            keys.append(f"address:{held.address}")
        row = {**self._row(socket_id, held), "per_user": per_user, "per_address": self._per_address}
        try:
            async with self._pool.connection() as conn, conn.transaction():
                if keys:
                    await conn.execute(
                        queries.LOCK_SOCKET_KEYS,
                        {"lock_class": queries.SOCKET_LOCK_CLASS, "keys": keys},
                    )
                cursor = await conn.execute(queries.OPEN_SOCKET, row)
                counts = await cursor.fetchone()
        except psycopg.errors.ForeignKeyViolation:
            # This process's row was taken for dead; its next heartbeat writes it again.
            raise ApiError(
                503,
                "process_not_registered",
                "This server is registering with its database again; try again shortly.",
                {"Retry-After": "1"},
            ) from None
        assert counts is not None
        of_user, opened = counts
        if opened:
            return
        if per_user and of_user >= per_user:
            raise ApiError(429, "too_many_sockets", f"At most {per_user} open sockets per user.")
        raise ApiError(
            429, "too_many_sockets", f"At most {self._per_address} open sockets per address."
        )

    async def _write_channels(self, socket_id: str, held: _Held) -> None:
        async with held.writing(), self._pool.connection() as conn:
            await conn.execute(
                queries.SET_SOCKET_CHANNELS,
                {
                    "socket_id": socket_id,
                    "process_id": self._process_id,
                    "channels": list(held.channels),
                },
            )

    async def _delete(self, socket_id: str, held: _Held) -> None:
        try:
            async with held.writing(), self._pool.connection() as conn:
                await conn.execute(
                    queries.CLOSE_SOCKETS,
                    {"socket_ids": [socket_id], "process_id": self._process_id},
                )
        except psycopg.Error:
            # Left, the row would count against the user and the address for as long as
            # this process lives.
            self._repair_later(undeleted=socket_id)

    def _repair_later(self, *, unwritten: str | None = None, undeleted: str | None = None) -> None:
        if unwritten is not None:
            self._unwritten.add(unwritten)
        if undeleted is not None:
            self._undeleted.add(undeleted)
        if self._repairing is None or self._repairing.done():
            self._repairing = asyncio.create_task(self._repair())

    async def _repair(self) -> None:
        failures = 0
        while self._unwritten or self._undeleted:
            try:
                if self._undeleted:
                    ids = list(self._undeleted)
                    async with self._pool.connection() as conn:
                        await conn.execute(
                            queries.CLOSE_SOCKETS,
                            {"socket_ids": ids, "process_id": self._process_id},
                        )
                    self._undeleted.difference_update(ids)
                for socket_id in list(self._unwritten):
                    held = self._held.get(socket_id)
                    # Taken off first: a change made while this write runs asks for another.
                    self._unwritten.discard(socket_id)
                    if held is not None:
                        try:
                            await self._write_channels(socket_id, held)
                        except BaseException:
                            if socket_id in self._held:
                                self._unwritten.add(socket_id)
                            raise
                failures = 0
            except psycopg.Error as error:
                failures += 1
                log.warning("recording open sockets failed: %s", str(error).strip())
                await asyncio.sleep(backoff(failures))

    def _row(self, socket_id: str, held: _Held) -> dict[str, object]:
        return {
            "socket_id": socket_id,
            "process_id": self._process_id,
            "protocol": held.protocol,
            "user_id": held.user_id,
            "address": held.address,
            "channels": list(held.channels),
        }


async def subscription_counts(pool: DbPool, channels: Collection[str]) -> dict[str, int]:
    """Sockets subscribed to each of `channels`, on every process (absent: none)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(queries.SUBSCRIPTION_COUNTS, {"channels": list(channels)})
        return {channel: int(count) for channel, count in await cursor.fetchall()}


async def occupied_channels(pool: DbPool, prefix: str = "") -> dict[str, int]:
    """Every channel starting with `prefix` that a socket on some process is subscribed to,
    and how many are."""
    async with pool.connection() as conn:
        cursor = await conn.execute(queries.OCCUPIED_CHANNELS, {"prefix": prefix})
        return {channel: int(count) for channel, count in await cursor.fetchall()}
