"""Presence: joins and leaves among `--members` users on three `pgcast serve` processes, their
latency to the other members and their cost. bench/README.md says how it is measured."""

import asyncio
import contextlib
import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psutil
import psycopg

from bench.lib import receivers, render, runner
from bench.lib.receivers import Receiver
from bench.lib.results import Latency, Result, Usage
from bench.lib.servers import Meter, PgcastProcess, usage_notes

CHANNEL, PROCESSES = "presence-bench", 3
PATH = f"/ws?channels={CHANNEL}"
# Leaves are announced at once, and the heartbeat, (timeout - grace) / 6 = 600 s, stays out of
# the database's figures.
ENV = {"PGCAST_PRESENCE_GRACE": "0", "PGCAST_PRESENCE_TIMEOUT": "3600"}
STATS = ("xact_commit", "tup_inserted", "tup_updated", "tup_deleted")
READ_STATS = """
SELECT xact_commit, tup_inserted, tup_updated, tup_deleted
FROM pg_stat_database WHERE datname = current_database()
"""
# An idle backend flushes its statistics within 10 s (PostgreSQL's PGSTAT_IDLE_INTERVAL).
STATS_FLUSH, STATS_DEADLINE = 10.5, 60.0


@dataclass
class Options(runner.Options):
    members: int = runner.option(1000, 30, "users with a socket each before the changes")
    changes: int = runner.option(50, 5, "users who join, then leave, one at a time")
    spacing: float = runner.option(0.2, 0.05, "seconds between two changes", minimum=0)


class Member(Receiver):
    """A user's socket on CHANNEL: the member list it was sent and the changes after it,
    each change's receive time, and how many contradicted its list."""

    def __init__(self, index: int, request: bytes, accept: str, user_id: int) -> None:
        super().__init__(index, request, accept)
        self.user, self.view, self.listed, self.wrong = str(user_id), set[str](), False, 0
        self.seen: dict[str, dict[str, float]] = {"member_added": {}, "member_removed": {}}
        self.until(lambda _: True)

    def until(self, check: Callable[["Member"], bool]) -> None:
        self.check = check
        (self.done.set if check(self) else self.done.clear)()

    def other_text(self, payload: bytes, now: float) -> None:
        frame = json.loads(payload)
        event, data = frame.get("event"), frame.get("data") or {}
        if frame.get("channel") != CHANNEL or event not in ("presence", *self.seen):
            super().other_text(payload, now)
        elif event == "presence":
            self.view, self.listed = {m["user_id"] for m in data["members"]}, True
        else:
            user, adding = data["user_id"], event == "member_added"
            self.wrong += (user in self.view) == adding or user in self.seen[event]
            (self.view.add if adding else self.view.discard)(user)
            self.seen[event][user] = now
        if self.check(self):
            self.done.set()


@dataclass
class Changes:
    """`count` joins or leaves, one at a time, each awaited on every other member's socket."""

    event: str
    count: int
    expected: int  # (change, other member) notifications due; `seen` of them arrived
    seen: int
    first: Latency
    last: Latency
    usage: Usage
    database: dict[str, int]

    def pgcast_us(self) -> float:
        """The CPU of the three pgcast processes ("server", "server 1", "server 2")."""
        names = [name for name in self.usage.cpu_percent if name.startswith("server")]
        return sum(self.usage.us_per(name, self.count) for name in names)

    def row(self) -> str:
        rows = "/".join(f"{self.database[s] / self.count:.1f}" for s in STATS[1:])
        return (
            f"{self.event} | {self.count} | {self.seen:,} / {self.expected:,} "
            f"| {render.ms(self.first, 'p50', 'p99', 'max')} "
            f"| **{render.ms(self.last, 'p50', 'p99', 'max')}** | {render.us(self.pgcast_us())} "
            f"| **{render.us(self.usage.us_per('postgres', self.count))}** "
            f"| {self.database['xact_commit'] / self.count:.1f} | {rows}"
        )


@dataclass
class PresenceResult(Result):
    members: int
    processes: int
    phases: list[Changes]

    def render(self) -> list[str]:
        header = (
            "change | count | notified / due | to first member ms p50 / p99 / max "
            "| **to last member ms p50 / p99 / max** | pgcast µs CPU (3 processes) "
            "| **PostgreSQL µs CPU** | commits | rows inserted / updated / deleted"
        )
        return [
            f"{self.members:,} members of `{CHANNEL}` over {self.processes} processes; costs per "
            "change, over the phase.",
            "",
            *render.table(header, [p.row() for p in self.phases], "lrrllrrrr"),
        ]


async def read_stats(conn: psycopg.AsyncConnection[Any], notes: list[str]) -> tuple[int, ...]:
    """pg_stat_database once every backend has flushed what it counted until now (it does
    within STATS_FLUSH s when idle) and it has then kept still for a second. Each read is
    rolled back, so that reading commits nothing."""
    began = since = time.monotonic()
    last = None
    while time.monotonic() - began < STATS_FLUSH or time.monotonic() - since < 1:
        if time.monotonic() - began > STATS_DEADLINE:
            notes.append("pg_stat_database kept moving: its counts are rough (autovacuum?)")
            break
        row = await (await conn.execute(READ_STATS)).fetchone()
        await conn.rollback()
        last, since = (last, since) if row == last else (row, time.monotonic())
        await asyncio.sleep(0.25)  # a polling interval: nothing signals a flush
    return tuple(last or ())


async def measure(run: runner.Run[Options]) -> PresenceResult:
    o, problems, notes, sockets = run.options, list[str](), list[str](), list[Member]()

    def where(index: int, _: int) -> tuple[int, str]:
        return servers[index % PROCESSES].port, PATH

    async def change(event: str, users: Sequence[tuple[int, str]]) -> Changes:
        firsts, lasts, seen, expected = [], [], 0, 0
        meter.start()
        for user_id, cookie in users:
            user = str(user_id)
            others = [s for s in sockets if not s.closed and s.user != user]
            for s in others:
                s.until(lambda s, user=user: user in s.seen[event])
            if event == "member_added":
                [joiner] = await receivers.open_each(
                    [(user_id, cookie)], where, Member, len(sockets)
                )
                sockets.append(joiner)
                joiner.until(lambda s: s.listed)
                await receivers.wait_delivered([*others, joiner], receivers.SETTLE_TIMEOUT)
                began = joiner.connection_made_at
                if joiner.view != {user, *(s.user for s in others)}:
                    problems.append(f"user {user} joined to a list of {len(joiner.view)}")
            else:
                [leaving], began = [s for s in sockets if s.user == user], time.time()
                await asyncio.gather(
                    leaving.close(), receivers.wait_delivered(others, receivers.SETTLE_TIMEOUT)
                )
            times = [s.seen[event][user] - began for s in others if user in s.seen[event]]
            firsts.append(min(times, default=math.nan))
            lasts.append(max(times, default=math.nan))
            seen, expected = seen + len(times), expected + len(others)
            await asyncio.sleep(o.spacing)  # spacing the changes, not waiting for an event
        first, last = Latency.of(firsts), Latency.of(lasts)
        return Changes(event, len(users), expected, seen, first, last, await meter.stop(), {})

    async with contextlib.AsyncExitStack() as stack:
        db = await stack.enter_async_context(await psycopg.AsyncConnection.connect(run.conninfo))
        start = functools.partial(PgcastProcess.start, run.conninfo, run.workdir, env=ENV)
        servers = [await stack.enter_async_context(await start()) for _ in range(PROCESSES)]
        more = {f"server {n}": (psutil.Process(s.pid), False) for n, s in enumerate(servers) if n}
        meter = Meter.for_server(servers[0].pid, run.postmaster, **more)
        people = [(f"member{n}@example.com", f"Member {n}") for n in range(o.members + o.changes)]
        signed = [await s.sign_in_many(people[n::PROCESSES]) for n, s in enumerate(servers)]
        users = [signed[n % PROCESSES][n // PROCESSES] for n in range(len(people))]
        try:
            sockets += await receivers.open_each(users[: o.members], where, Member)
            everyone = {s.user for s in sockets}
            for s in sockets:
                s.until(lambda s: s.listed and s.view == everyone)
            if not await receivers.wait_delivered(sockets, 30 + o.members / 20):
                problems.append("not every member had the whole list")
            marks = [await read_stats(db, notes)]
            phases = []
            for event in ("member_added", "member_removed"):
                phases.append(await change(event, users[o.members :]))
                marks.append(await read_stats(db, notes))
                phases[-1].database = {k: b - a for k, a, b in zip(STATS, *marks[-2:], strict=True)}
        finally:
            await receivers.close_sockets(sockets)
    problems += [p for s in servers for p in s.exit_problems()]
    problems += [f"{p.event}: {p.seen} of {p.expected} seen" for p in phases if p.seen < p.expected]
    problems += [
        f"user {s.user}'s socket: {s.wrong} changes against its list, {s.other_samples}"
        for s in sockets
        if s.wrong or s.other_frames or s.close_code != 1000
    ]
    notes += usage_notes((p.event, p.usage) for p in phases)
    return PresenceResult(len(everyone), PROCESSES, phases, problems=problems, notes=notes)


SCENARIO = runner.Scenario("presence", "presence", Options, measure)
