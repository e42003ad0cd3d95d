"""Private chat and notifications: direct messages between two users, beside a crowd or not,
and one INSERT notifying many users. bench/README.md says how it is measured."""

import asyncio
import contextlib
import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.lib import receivers as rx
from bench.lib import render, runner
from bench.lib.results import CostPhase, Delivery, Latency, Result, ratio
from bench.lib.servers import cpu_seconds, usage_notes, wait_quiet
from bench.lib.writers import cost_phase, pgcast_session

USER_CHANNEL = "private-user.{}"
DIRECT_MESSAGE_EVENT = "new-direct-message"
NOTIFICATION_EVENT = "Illuminate\\Notifications\\Events\\BroadcastNotificationCreated"
# A duplicate or stray frame sent after the last socket had its notification shows within
# this long of the server going quiet.
LATE_FRAMES_SECONDS = 0.5
INSERT_DIRECT_MESSAGE = """
INSERT INTO direct_messages (sender_id, recipient_id, content)
VALUES (%s, %s, repeat('x', 100)) RETURNING id
"""
NOTIFY_USERS = """
INSERT INTO notifications (user_id, type, data)
SELECT id, 'hello', '{}' FROM users WHERE id = ANY(%s::bigint[]) RETURNING id::text, user_id
"""


@dataclass
class Options(runner.Options):
    crowd: int = runner.option(5000, 50, "sockets on messages alone, from (b)")
    messages: int = runner.option(1000, 30, "direct messages in (a) and (b)")
    rate: float = runner.option(100.0, 50.0, "direct messages/s in (a) and (b)")
    notified: int = runner.option(1000, 20, "users notified by one INSERT")
    rounds: int = runner.option(5, 2, "measured notification INSERTs")
    idle_seconds: float = runner.option(3.0, 0.5, "idle CPU window per phase", minimum=0.01)


class PrivateReceiver(rx.Receiver):
    """A socket of one user on its own channel. Its direct messages are recorded as new
    messages are (so check_delivery applies), its notifications as (time, id); a frame on any
    other channel, or any other event, is unexpected."""

    def __init__(self, index: int, request: bytes, accept: str, user_id: int) -> None:
        super().__init__(index, request, accept)
        self.user_id, self.channel = user_id, USER_CHANNEL.format(user_id)
        self.notifications: list[tuple[float, str]] = []

    def start_phase(self, expected: int, keep_text: bool = False) -> None:
        self.notifications = []
        super().start_phase(expected, keep_text)

    def other_text(self, payload: bytes, now: float) -> None:
        found: Any = None
        with contextlib.suppress(ValueError, KeyError, TypeError):
            frame = json.loads(payload)
            if frame["channel"] == self.channel and frame["event"] == DIRECT_MESSAGE_EVENT:
                found = frame["data"]["direct_message"]["id"]
            elif frame["channel"] == self.channel and frame["event"] == NOTIFICATION_EVENT:
                found = str(frame["data"]["id"]) if frame["data"]["type"] == "hello" else None
        if isinstance(found, int):
            self.record(found, now)
        elif isinstance(found, str):
            self.notifications.append((now, found))
            if len(self.ids) + len(self.notifications) >= self.expected:
                self.done.set()
        else:
            super().other_text(payload, now)


def check_notifications(
    notified: Sequence[PrivateReceiver], owners: dict[str, int], others: Sequence[rx.Receiver]
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
    result.other_frames += sum(map(rx.frames_of, others))
    del result.samples[5:]
    return result


@dataclass
class NotificationRound:
    round: int
    notified: int
    sockets: int
    latency: Latency  # commit -> each socket's notification; its max is commit -> the last
    commit_to_first_ms: float
    server_cpu_ms: float  # from sending the INSERT to the last socket's notification
    delivery: Delivery

    @property
    def commit_to_last_ms(self) -> float:
        return self.latency.max


@dataclass
class PrivateResult(Result):
    phases: list[CostPhase]
    rounds: list[NotificationRound]

    def ratio(self, measured: bool = False) -> float:
        a, b = (p.server_us if measured else p.net_server_us for p in self.phases)
        return ratio(b, a)

    def median(self, name: str) -> float:
        later = [getattr(r, name) for r in self.rounds[1:]]
        return statistics.median(later) if later else math.nan

    def render(self) -> list[str]:
        a, b = self.phases
        crowd, notified = b.sockets - a.sockets, self.rounds[0].notified if self.rounds else 0
        phases = [
            f"({p.name}) | {p.sockets:,} | {p.cells()} | **{render.ms(p.latencies[0])}** "
            f"| {render.ms(p.latencies[1])} | {render.ok(p.ok)}"
            for p in self.phases
        ]
        rounds = [
            f"{r.round}{' (first)' if r.round == 0 else ''} | {r.sockets:,} "
            f"| {r.commit_to_first_ms:.1f} | {render.ms(r.latency)} | **{r.latency.max:.1f}** "
            f"| **{r.server_cpu_ms:.1f}** | {1000 * r.server_cpu_ms / max(1, r.notified):.1f} "
            f"| {render.ok(r.delivery.ok)}"
            for r in self.rounds
        ]
        return [
            f"**Direct messages** between two users on their own channels; in (b) {crowd:,} more "
            "sockets on `messages`. A message is two frames, the recipient's and the sender's.",
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
            f"**Notifications**: each round one INSERT of {notified:,}, one per user, each user "
            "with a socket on their own channel. Round 0 is not in the medians.",
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


async def measure(run: runner.Run[Options]) -> PrivateResult:
    o = run.options
    people: list[PrivateReceiver] = []
    crowd: list[rx.Receiver] = []
    notified: list[PrivateReceiver] = []
    phases: list[CostPhase] = []
    rounds: list[NotificationRound] = []

    async def phase(name: str) -> None:
        pair, recipients = (people[0].user_id, people[1].user_id), {}

        def write(n: int) -> int:
            sender, recipient = pair if n % 2 == 0 else pair[::-1]
            row = s.writer.execute(INSERT_DIRECT_MESSAGE, [sender, recipient]).fetchone()
            assert row is not None
            recipients[row[0]] = recipient
            return int(row[0])

        latency = [
            (people, lambda r, n: recipients[n] == r.user_id),  # commit→recipient
            (people, lambda r, n: recipients[n] != r.user_id),  # commit→sender
        ]
        count, rate = o.messages, o.rate
        phases.append(await cost_phase(s, name, "", people, crowd, count, rate, write, latency))

    async def notify(number: int) -> NotificationRound:
        others, users = [*people, *crowd], [receiver.user_id for receiver in notified]
        for receiver in others:
            receiver.start_phase(0)
        for receiver in notified:
            receiver.start_phase(1)
        await wait_quiet(s.server.pid)
        began = cpu_seconds(s.server.pid)

        def insert() -> tuple[dict[str, int], float]:
            return dict(s.writer.execute(NOTIFY_USERS, [users]).fetchall()), time.time()

        owners, committed = await asyncio.to_thread(insert)
        await rx.wait_delivered(notified, 15 + len(users) / 1000)
        server_ms = 1000 * (cpu_seconds(s.server.pid) - began)
        # Only once the server is quiet again has every duplicate or stray frame been sent.
        await wait_quiet(s.server.pid)
        await asyncio.sleep(LATE_FRAMES_SECONDS)  # a window for late frames to show
        delivery = check_notifications(notified, owners, others)
        if len(owners) != len(users):
            delivery.samples.append(f"the INSERT wrote {len(owners)} for {len(users)} users")
        arrivals = [r.notifications[0][0] - committed for r in notified if r.notifications]
        first, sockets = 1000 * min(arrivals, default=math.nan), len(others) + len(notified)
        latency = Latency.of(arrivals)
        return NotificationRound(number, len(owners), sockets, latency, first, server_ms, delivery)

    def where(_: int, user_id: int) -> tuple[int, str]:
        """Each user's own channel, and `messages` too."""
        return s.server.port, f"/ws?channels={USER_CHANNEL.format(user_id)},messages"

    async with pgcast_session(run, autocommit=True, idle_seconds=o.idle_seconds) as s:
        try:
            pair = [("alice@example.com", "Alice"), ("bob@example.com", "Bob")]
            people += await rx.open_each(await s.server.sign_in_many(pair), where, PrivateReceiver)
            await phase("a")
            _, cookie = await s.server.sign_in("crowd@example.com", "Crowd")
            crowd += await rx.open_sockets(s.server.port, "/ws", cookie, o.crowd, first_index=2)
            await phase("b")
            many = [(f"notified{n}@example.com", f"Notified {n}") for n in range(o.notified)]
            users = await s.server.sign_in_many(many)
            notified += await rx.open_each(users, where, PrivateReceiver, 2 + o.crowd)
            rounds += [await notify(number) for number in range(o.rounds + 1)]
        finally:
            await rx.close_sockets([*people, *crowd, *notified])
    problems = s.server.exit_problems() + [f for p in phases for f in p.problems()]
    for r in rounds:
        problems += r.delivery.problems(f"notification round {r.round}")
    notes = usage_notes([(f"phase {p.name}", p.usage) for p in phases])
    return PrivateResult(phases, rounds, problems=problems, notes=notes)


SCENARIO = runner.Scenario("private", "private chat and notifications", Options, measure)
