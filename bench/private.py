"""Private chat and notifications: Alice and Bob exchange direct messages on their own
`private-user.{id}` channels, (a) alone and (b) beside `--crowd` sockets on `messages`: server
CPU per message and commit->recipient/sender latency, (b) / (a) near 1; then one INSERT
notifies `--notified` users, each on a channel of their own: commit->first/last socket and the
fan-out's server CPU. Every delivery is checked exact, no other socket gets a frame.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.lib import render, runner
from bench.lib.meters import Meter, cpu_seconds, idle_cpu_share, usage_notes, wait_quiet
from bench.lib.receivers import (
    CONNECT_CONCURRENCY,
    Receiver,
    check_delivery,
    close_sockets,
    open_sockets,
    wait_delivered,
)
from bench.lib.results import BenchError, Delivery, Latency, Result, SteadyCost, ratio
from bench.lib.servers import PgcastProcess
from bench.lib.writers import connect

USER_CHANNEL = "private-user.{}"
DIRECT_MESSAGE_EVENT = "new-direct-message"
NOTIFICATION_EVENT = "Illuminate\\Notifications\\Events\\BroadcastNotificationCreated"
# A duplicate or stray frame sent after the last socket had its notification shows within
# this long of the server going quiet.
LATE_FRAMES_SECONDS = 0.5
INSERT_DIRECT_MESSAGE = """
INSERT INTO direct_messages (sender_id, recipient_id, content)
VALUES (%(sender)s, %(recipient)s, repeat('x', 100)) RETURNING id
"""
NOTIFY_USERS = """
INSERT INTO notifications (user_id, type, data)
SELECT id, 'hello', '{}' FROM users WHERE id = ANY(%(users)s::bigint[]) RETURNING id::text, user_id
"""


@dataclass
class Options(runner.Options):
    crowd: int = runner.option(5000, 50, "sockets on messages alone, from (b)")
    messages: int = runner.option(1000, 30, "direct messages in (a) and (b)")
    rate: float = runner.option(100.0, 50.0, "direct messages/s in (a) and (b)")
    notified: int = runner.option(1000, 20, "users notified by one INSERT")
    rounds: int = runner.option(5, 2, "measured notification INSERTs")
    idle_seconds: float = runner.option(3.0, 0.5, "idle CPU window per phase", minimum=0.01)


class PrivateReceiver(Receiver):
    """A socket of one user on its own channel. Its direct messages are recorded as new
    messages are (so check_delivery applies), its notifications as (time, id); a frame on any
    other channel, or any other event, is unexpected."""

    def __init__(self, index: int, request: bytes, accept: str, expect: bool, user_id: int) -> None:
        super().__init__(index, request, accept, expect)
        self.user_id, self.channel = user_id, USER_CHANNEL.format(user_id)
        self.notifications: list[tuple[float, str]] = []

    def start_phase(self, expected: int, keep_text: bool = False) -> None:
        self.notifications = []
        super().start_phase(expected, keep_text)

    def other_text(self, payload: bytes, now: float) -> None:
        with_id: Any = None
        try:
            frame = json.loads(payload)
            if frame["channel"] == self.channel and frame["event"] == DIRECT_MESSAGE_EVENT:
                with_id = frame["data"]["direct_message"]["id"]
            elif frame["channel"] == self.channel and frame["event"] == NOTIFICATION_EVENT:
                with_id = str(frame["data"]["id"]) if frame["data"]["type"] == "hello" else None
        except (ValueError, KeyError, TypeError):
            pass
        if isinstance(with_id, int):
            self.times.append(now)
            self.ids.append(with_id)
        elif isinstance(with_id, str):
            self.notifications.append((now, with_id))
        else:
            super().other_text(payload, now)
            return
        if len(self.ids) + len(self.notifications) >= self.expected:
            self.done.set()


def frames_of(receiver: Receiver) -> int:
    """Every frame of the phase: direct messages, notifications and unexpected ones."""
    return len(receiver.ids) + len(getattr(receiver, "notifications", [])) + receiver.other_frames


def check_notifications(
    notified: Sequence[PrivateReceiver], owners: dict[str, int], others: Sequence[Receiver]
) -> Delivery:
    """Each notified socket got exactly one notification, one of its own user's rows, and
    nothing else; no other socket got any frame (counted as other frames)."""
    result = Delivery(sockets=len(notified), expected_per_socket=1)
    for receiver in notified:
        got = [found for _, found in receiver.notifications]
        result.frames += min(1, len(got))
        result.losses += not got
        result.duplicates += max(0, len(got) - 1)
        strangers = [found for found in got if owners.get(found) != receiver.user_id]
        result.unexpected += len(strangers)
        result.samples += [f"user {receiver.user_id} got notification {s}" for s in strangers]
        result.other_frames += len(receiver.ids) + receiver.other_frames
        result.closed_sockets += receiver.closed
    result.other_frames += sum(frames_of(r) for r in others)
    del result.samples[5:]
    return result


@dataclass
class DirectMessages(SteadyCost):
    name: str
    sockets: int
    recipient_latency: Latency
    sender_latency: Latency
    delivery: Delivery
    unrouted_frames: int
    """Frames that reached any socket but the two people's (must be 0)."""


@dataclass
class NotificationRound:
    round: int
    notified: int
    sockets: int
    latency: Latency
    """Commit -> each socket's notification; its max is commit -> the last socket."""
    commit_to_first_ms: float
    server_cpu_ms: float
    """From sending the INSERT to the last socket's notification."""
    delivery: Delivery

    @property
    def commit_to_last_ms(self) -> float:
        return self.latency.max

    @property
    def server_us_per_notification(self) -> float:
        return 1000 * self.server_cpu_ms / max(1, self.notified)


@dataclass
class PrivateResult(Result):
    phases: list[DirectMessages]
    rounds: list[NotificationRound]

    def ratio(self, measured: bool = False) -> float:
        a, b = self.phases
        return (
            ratio(b.server_us, a.server_us) if measured else ratio(b.net_server_us, a.net_server_us)
        )

    def median(self, name: str) -> float:
        later = [getattr(r, name) for r in self.rounds[1:]]
        return statistics.median(later) if later else math.nan

    def render(self) -> list[str]:
        a, b = self.phases
        crowd, notified = b.sockets - a.sockets, self.rounds[0].notified if self.rounds else 0
        phases = [
            f"({p.name}) | {p.sockets:,} | {p.cells()} "
            f"| **{render.ms(p.recipient_latency)}** | {render.ms(p.sender_latency)} "
            f"| {render.ok(p.delivery.ok and not p.unrouted_frames)}"
            for p in self.phases
        ]
        rounds = [
            f"{r.round}{' (first)' if r.round == 0 else ''} | {r.sockets:,} "
            f"| {r.commit_to_first_ms:.1f} | {render.ms(r.latency)} | **{r.latency.max:.1f}** "
            f"| **{r.server_cpu_ms:.1f}** | {r.server_us_per_notification:.1f} "
            f"| {render.ok(r.delivery.ok)}"
            for r in self.rounds
        ]
        return [
            "**Direct messages.** Alice and Bob write to each other in turn, one INSERT per "
            f"transaction, each on `private-user.{{me}}`; in (b) {crowd:,} more sockets of a "
            "third user listen to `messages`. Each message is two frames: the recipient's and "
            "the sender's.",
            "",
            *render.table(
                "phase | sockets connected | messages, /s target / achieved "
                "| **server µs per message, less idle** | as measured | server idle CPU % "
                "| **commit→recipient p50 / p99 ms** | commit→sender p50 / p99 ms | delivery",
                phases,
                "lrlrrrlll",
            ),
            "",
            f"**(b) / (a) = {self.ratio():.2f}** less idle, {self.ratio(True):.2f} as measured "
            f"(near 1: the {crowd:,} other sockets cost a direct message nothing).",
            "",
            f"**Notifications.** {notified:,} users with a socket each on their own "
            f"`private-user.{{id}}`; each round is one INSERT of {notified:,} notifications. "
            "Round 0 is not in the medians. Server CPU is from the INSERT sent to the last "
            "socket's notification.",
            "",
            *render.table(
                "round | sockets connected | commit→first socket ms "
                "| commit→socket p50 / p99 ms | **commit→last socket ms** | **server CPU ms** "
                "| µs per notification | delivery",
                rounds,
                "rrrlrrrl",
            ),
            "",
            f"Median of rounds 1 to {len(self.rounds) - 1}: **commit→last socket "
            f"{self.median('commit_to_last_ms'):.1f} ms**, **server CPU "
            f"{self.median('server_cpu_ms'):.1f} ms**.",
        ]


def write_direct_messages(
    conn: psycopg.Connection[Any], people: tuple[int, int], count: int, rate: float
) -> tuple[dict[int, float], dict[int, int], float]:
    """`count` direct messages at `rate`/s, the two writing in turn, in a thread on the
    receivers' clock; each id's commit time (when its INSERT returned) and recipient."""
    committed: dict[int, float] = {}
    recipients: dict[int, int] = {}
    began = time.monotonic()
    for n in range(count):
        time.sleep(max(0.0, began + n / rate - time.monotonic()))
        sender, recipient = people if n % 2 == 0 else people[::-1]
        row = conn.execute(
            INSERT_DIRECT_MESSAGE, {"sender": sender, "recipient": recipient}
        ).fetchone()
        assert row is not None
        committed[row[0]], recipients[row[0]] = time.time(), recipient
    return committed, recipients, time.monotonic() - began


def notify_users(conn: psycopg.Connection[Any], users: list[int]) -> tuple[dict[str, int], float]:
    """One notification to each of `users` in one INSERT: each one's user, and when it
    committed."""
    rows = conn.execute(NOTIFY_USERS, {"users": users}).fetchall()
    return dict(rows), time.time()


async def open_private(
    server: PgcastProcess, people: Sequence[tuple[int, str]], first: int
) -> list[PrivateReceiver]:
    """One socket per (user id, Cookie header) on that user's own channel."""
    limit = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(index: int, user_id: int, cookie: str) -> list[Receiver]:
        path = f"/ws?channels={USER_CHANNEL.format(user_id)},messages"
        factory = functools.partial(PrivateReceiver, user_id=user_id)
        async with limit:
            return await open_sockets(
                server.port, path, cookie, 1, first_index=index, factory=factory
            )

    found = await asyncio.gather(
        *(one(first + n, *p) for n, p in enumerate(people)), return_exceptions=True
    )
    opened = [r for result in found if isinstance(result, list) for r in result]
    errors = [result for result in found if isinstance(result, BaseException)]
    if errors:
        await close_sockets(opened)
        raise BenchError(f"{len(errors)} of {len(people)} sockets failed to open: {errors[0]!r}")
    return [r for r in opened if isinstance(r, PrivateReceiver)]


async def measure(run: runner.Run[Options]) -> PrivateResult:
    o = run.options
    writer = connect(run.conninfo, autocommit=True)
    people: list[PrivateReceiver] = []
    crowd: list[Receiver] = []
    notified: list[PrivateReceiver] = []
    phases: list[DirectMessages] = []
    rounds: list[NotificationRound] = []

    async def direct_messages(name: str, count: int, rate: float, idle: float) -> DirectMessages:
        for receiver in [*people, *crowd]:
            receiver.start_phase(count if receiver in people else 0)
        meter.start()
        began = cpu_seconds(server.pid)
        pair = (people[0].user_id, people[1].user_id)
        committed, recipients, seconds = await asyncio.to_thread(
            write_direct_messages, writer, pair, count, rate
        )
        await wait_delivered(people, 15)
        server_cpu = cpu_seconds(server.pid) - began
        latency: dict[bool, list[float]] = {True: [], False: []}
        for receiver in people:
            for received, found in zip(receiver.times, receiver.ids, strict=True):
                if found in committed:
                    latency[recipients[found] == receiver.user_id].append(
                        received - committed[found]
                    )
        cost = (count, rate, seconds, server_cpu, idle, await meter.stop())
        latencies = Latency.of(latency[True]), Latency.of(latency[False])
        delivery, unrouted = check_delivery(people, sorted(committed)), sum(map(frames_of, crowd))
        return DirectMessages(*cost, name, len(people) + len(crowd), *latencies, delivery, unrouted)

    async def phase(name: str) -> None:
        await direct_messages("warm-up", 6, 20.0, 0.0)
        idle = await idle_cpu_share(server.pid, o.idle_seconds)
        phases.append(await direct_messages(name, o.messages, o.rate, idle))

    async def notify(number: int) -> NotificationRound:
        others = [*people, *crowd]
        for receiver in [*notified, *others]:
            receiver.start_phase(1 if receiver in notified else 0)
        await wait_quiet(server.pid)
        users = [receiver.user_id for receiver in notified]
        server_began = cpu_seconds(server.pid)
        owners, committed = await asyncio.to_thread(notify_users, writer, users)
        await wait_delivered(notified, 15 + len(users) / 1000)
        server_cpu = cpu_seconds(server.pid) - server_began
        # Only once the server is quiet again has every duplicate or stray frame been sent.
        await wait_quiet(server.pid)
        await asyncio.sleep(LATE_FRAMES_SECONDS)  # a window for late frames to show
        delivery = check_notifications(notified, owners, others)
        if len(owners) != len(users):
            delivery.samples.append(
                f"the INSERT wrote {len(owners)} notifications for {len(users)} users"
            )
        arrivals = [r.notifications[0][0] - committed for r in notified if r.notifications]
        return NotificationRound(
            number,
            len(owners),
            len(others) + len(notified),
            Latency.of(arrivals),
            1000 * min(arrivals, default=math.nan),
            1000 * server_cpu,
            delivery,
        )

    async with await PgcastProcess.start(run.conninfo, run.workdir) as server:
        meter = Meter.for_server(server.pid, run.postmaster)
        try:
            two = await server.sign_in_many(
                [("alice@example.com", "Alice"), ("bob@example.com", "Bob")]
            )
            people += await open_private(server, two, 0)
            await phase("a")
            _, crowd_cookie = await server.sign_in("crowd@example.com", "Crowd")
            crowd += await open_sockets(server.port, "/ws", crowd_cookie, o.crowd, first_index=2)
            await phase("b")
            many = await server.sign_in_many(
                [(f"notified{n}@example.com", f"Notified {n}") for n in range(o.notified)]
            )
            notified += await open_private(server, many, 2 + o.crowd)
            for number in range(o.rounds + 1):
                rounds.append(await notify(number))
        finally:
            await close_sockets([*people, *crowd, *notified])
    writer.close()
    problems = server.exit_problems()
    for p in phases:
        problems += p.delivery.problems(f"phase {p.name}")
        if p.unrouted_frames:
            problems.append(f"phase {p.name}: {p.unrouted_frames} frames to other sockets")
    for r in rounds:
        problems += r.delivery.problems(f"notification round {r.round}")
    notes = usage_notes([(f"phase {p.name}", p.usage) for p in phases])
    return PrivateResult(phases, rounds, problems=problems, notes=notes)


SCENARIO = runner.Scenario("private", "private chat and notifications", __doc__, Options, measure)

if __name__ == "__main__":
    sys.exit(runner.main(SCENARIO))
