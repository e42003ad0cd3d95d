"""Private chat and notifications: a direct message costs its two people's sockets, and one
INSERT notifies a thousand users, each on a channel of their own.

    .venv/bin/python bench/private.py [--crowd 5000] [--messages 1000] [--rate 100]
        [--notified 1000] [--rounds 5] [--smoke]

One pgcast server. Alice and Bob sign in and each open a socket on their own channel
(`/ws?channels=private-user.{me},messages`). Three phases, in this order, in one run:

(a) direct messages: `--messages` rows at `--rate`, Alice to Bob and Bob to Alice in turn,
    one `INSERT INTO direct_messages` per transaction (autocommit), its commit time taken when
    the INSERT returns; each reaches the sender's and the recipient's socket;
(b) the same once `--crowd` sockets of a third user are connected to `messages` alone: none
    of them may get a frame, and a direct message should cost what it cost in (a);
(n) notifications: `--notified` more users sign in (a few at a time) and each opens a socket
    on its own `private-user.{id}`; then `--rounds` times (after one unreported first round),
    one `INSERT INTO notifications ... SELECT ... FROM users` gives each of them one
    notification. Each must get exactly its own, once; no other socket may get any.

Server CPU is taken from every thread's schedstat. For the direct messages it is given as
measured and less the server's idle CPU, measured for `--idle-seconds` once it is quiet before
each phase (thousands of sockets cost a ping each every 30 s). A notification round's fan-out
lasts a tenth of a second, over which that idle CPU is little and comes in bursts (a socket's
pings fall every 30 s from when it opened): its CPU is given as measured.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import psycopg

if __package__ in (None, ""):  # run as a script: bench/private.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.channels import WARM_UP_RATE, idle_cpu_share
from bench.idle_sockets import cpu_seconds
from bench.lib.meters import wait_quiet
from bench.quick import (
    CONNECT_CONCURRENCY,
    HOST,
    SETTLE_TIMEOUT,
    BenchError,
    Meter,
    Receiver,
    ServerProcess,
    Usage,
    _delivery_dict,
    _ms,
    _ratio,
    _usage_dict,
    add_report_options,
    bench_main,
    check_delivery,
    close_sockets,
    finish_report,
    free_port,
    open_sockets,
    pgcast_env,
    report_head,
    run_bench,
    settle_options,
    sign_in,
    sign_in_many,
    summarize_ms,
    try_open_sockets,
    usage_notes,
    wait_delivered,
)

USER_CHANNEL = "private-user.{}"
DIRECT_MESSAGE_EVENT = "new-direct-message"
NOTIFICATION_EVENT = "Illuminate\\Notifications\\Events\\BroadcastNotificationCreated"
NOTIFICATION_TYPE = "hello"
WARM_UP_MESSAGES = 6
CONTENT = "x" * 100
# A duplicate or a stray frame sent after the last socket had its notification shows within
# this long of the server going quiet.
LATE_FRAMES_SECONDS = 0.5

INSERT_DIRECT_MESSAGE = """
INSERT INTO direct_messages (sender_id, recipient_id, content)
VALUES (%(sender)s, %(recipient)s, %(content)s) RETURNING id
"""
NOTIFY_USERS = """
INSERT INTO notifications (user_id, type, data)
SELECT id, %(type)s, '{}' FROM users WHERE id = ANY(%(users)s::bigint[])
RETURNING id::text, user_id
"""

DEFAULTS: dict[str, Any] = {
    "crowd": 5000,
    "messages": 1000,
    "rate": 100.0,
    "notified": 1000,
    "rounds": 5,
    "idle_seconds": 3.0,
}
SMOKE: dict[str, Any] = {
    "crowd": 50,
    "messages": 30,
    "rate": 50.0,
    "notified": 20,
    "rounds": 2,
    "idle_seconds": 0.5,
}


class PrivateReceiver(Receiver):
    """A socket of one user on its own `private-user.{id}` (and `messages`). Its direct
    messages are recorded as Receiver records new messages (receive time and id, so
    check_delivery applies), its notifications as (receive time, notification id). A frame
    on any other channel, or any other event, counts as an unexpected frame."""

    def __init__(
        self,
        index: int,
        request: bytes,
        accept: str,
        expect_connected: bool,
        user_id: int,
    ) -> None:
        super().__init__(index, request, accept, expect_connected)
        self.user_id = user_id
        self.channel = USER_CHANNEL.format(user_id)
        self.notifications: list[tuple[float, str]] = []

    def start_phase(self, expected: int, keep_text: bool = False) -> None:
        self.notifications = []
        super().start_phase(expected, keep_text)

    def other_text(self, payload: bytes, now: float) -> None:
        try:
            frame = json.loads(payload)
            event, channel, data = frame["event"], frame["channel"], frame["data"]
        except (ValueError, KeyError, TypeError):
            super().other_text(payload, now)
            return
        received = 0
        if channel == self.channel and isinstance(data, dict):
            if event == DIRECT_MESSAGE_EVENT:
                message = data.get("direct_message")
                found = message.get("id") if isinstance(message, dict) else None
                if isinstance(found, int):
                    self.times.append(now)
                    self.ids.append(found)
                    received = len(self.ids)
            elif event == NOTIFICATION_EVENT and data.get("type") == NOTIFICATION_TYPE:
                found = data.get("id")
                if isinstance(found, str):
                    self.notifications.append((now, found))
                    received = len(self.notifications)
        if not received:
            super().other_text(payload, now)
        elif received >= self.expected:
            self.done.set()

    @property
    def frames(self) -> int:
        """Every frame of the phase: direct messages, notifications and unexpected ones."""
        return len(self.ids) + len(self.notifications) + self.other_frames


def frames_of(receiver: Receiver) -> int:
    if isinstance(receiver, PrivateReceiver):
        return receiver.frames
    return len(receiver.ids) + receiver.other_frames


async def open_private_sockets(
    port: int, url: str, people: Sequence[tuple[int, str]], first_index: int
) -> list[PrivateReceiver]:
    """One socket per (user id, Cookie header) on that user's own channel, a few handshakes at
    a time, each past its `connected` frame."""
    limit = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(index: int, user_id: int, cookie: str) -> list[Receiver]:
        factory = functools.partial(PrivateReceiver, user_id=user_id)
        path = f"/ws?channels={USER_CHANNEL.format(user_id)},messages"
        async with limit:
            opened, errors = await try_open_sockets(
                port, path, url, cookie, 1, True, first_index=index, factory=factory
            )
        if errors:
            raise errors[0]
        return opened

    results = await asyncio.gather(
        *(one(first_index + n, user_id, cookie) for n, (user_id, cookie) in enumerate(people)),
        return_exceptions=True,
    )
    receivers = [r for result in results if isinstance(result, list) for r in result]
    errors = [result for result in results if isinstance(result, BaseException)]
    if errors:
        await close_sockets(receivers)
        raise BenchError(f"{len(errors)} of {len(people)} sockets failed to open: {errors[0]!r}")
    return [r for r in receivers if isinstance(r, PrivateReceiver)]


@dataclass
class DirectMessages:
    ids: list[int]
    committed: dict[int, float]
    recipients: dict[int, int]
    seconds: float


def write_direct_messages(
    conn: psycopg.Connection[Any], people: tuple[int, int], count: int, rate: float
) -> DirectMessages:
    """`count` direct messages at `rate`/s, one per transaction, the two people writing in
    turn; a message's commit time is when its INSERT returned. Runs in a thread, on the
    receivers' clock. One writer commits one at a time, so id order is commit order."""
    result = DirectMessages([], {}, {}, 0.0)
    began = time.monotonic()
    for n in range(count):
        time.sleep(max(0.0, began + n / rate - time.monotonic()))
        sender, recipient = people if n % 2 == 0 else people[::-1]
        row = conn.execute(
            INSERT_DIRECT_MESSAGE, {"sender": sender, "recipient": recipient, "content": CONTENT}
        ).fetchone()
        assert row is not None
        result.committed[row[0]] = time.time()
        result.ids.append(row[0])
        result.recipients[row[0]] = recipient
    result.seconds = time.monotonic() - began
    return result


@dataclass
class Notified:
    owners: dict[str, int]
    """Each notification's user, by the notification's id."""
    insert_seconds: float
    committed: float
    """When COMMIT returned: the commit instant lies within the commit round trip before it."""
    commit_rtt: float


def notify_users(conn: psycopg.Connection[Any], users: list[int]) -> Notified:
    """One notification to each of `users` in one INSERT, in a transaction of its own. COMMIT
    is sent on its own, so the commit time is known to its round trip, not to the INSERT's
    (the triggers write a broadcast per row before it returns)."""
    began = time.monotonic()
    conn.execute("BEGIN")
    rows = conn.execute(NOTIFY_USERS, {"type": NOTIFICATION_TYPE, "users": users}).fetchall()
    inserted = time.monotonic()
    before = time.time()
    conn.execute("COMMIT")
    committed = time.time()
    return Notified(
        {notification: user for notification, user in rows},
        inserted - began,
        committed,
        committed - before,
    )


@dataclass
class DirectMessagePhase:
    name: str
    sockets: int
    messages: int
    target_rate: float
    achieved_rate: float
    server_us_per_message: float
    idle_server_percent: float
    net_server_us_per_message: float
    """Less the server's idle CPU over the phase's length."""
    recipient_latency_ms: dict[str, float]
    sender_latency_ms: dict[str, float]
    frames: int
    usage: dict[str, Any]
    delivery: dict[str, Any]
    unrouted_frames: int
    """Frames that reached any socket but the two people's (must be 0)."""


@dataclass
class NotificationDelivery:
    sockets: int
    received: int = 0
    missing: int = 0
    duplicates: int = 0
    wrong_user: int = 0
    other_frames: int = 0
    closed_sockets: int = 0
    unrouted_frames: int = 0
    """Frames that reached a socket of someone not notified (must be 0)."""
    samples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.received == self.sockets and not (
            self.missing
            or self.duplicates
            or self.wrong_user
            or self.other_frames
            or self.closed_sockets
            or self.unrouted_frames
        )

    def sample(self, text: str) -> None:
        if len(self.samples) < 5:
            self.samples.append(text)


def check_notifications(
    notified: Sequence[PrivateReceiver], owners: dict[str, int], others: Sequence[Receiver]
) -> NotificationDelivery:
    """Each notified socket got exactly one notification, one of its own user's rows, and
    nothing else; no other socket got any frame."""
    result = NotificationDelivery(sockets=len(notified))
    for receiver in notified:
        got = [found for _, found in receiver.notifications]
        result.received += min(1, len(got))
        result.missing += not got
        result.duplicates += max(0, len(got) - 1)
        strangers = [found for found in got if owners.get(found) != receiver.user_id]
        result.wrong_user += len(strangers)
        if strangers:
            result.sample(
                f"user {receiver.user_id} got notification {strangers[0]} of user "
                f"{owners.get(strangers[0])}"
            )
        result.other_frames += len(receiver.ids) + receiver.other_frames
        result.samples.extend(receiver.other_samples[: max(0, 5 - len(result.samples))])
        if receiver.closed:
            result.closed_sockets += 1
            result.sample(
                f"socket {receiver.index} closed: {receiver.close_code} {receiver.close_reason}"
            )
    result.unrouted_frames = sum(frames_of(r) for r in others)
    return result


@dataclass
class NotificationRound:
    round: int
    first: bool
    """The first INSERT after the sockets connected, not among the measured rounds."""
    notified: int
    sockets: int
    insert_ms: float
    commit_rtt_ms: float
    """COMMIT's round trip: the commit instant lies within it, latencies may be this much
    larger than reported."""
    latency_ms: dict[str, float]
    """Commit → each socket's notification, over the sockets; max is commit → the last."""
    commit_to_first_ms: float
    commit_to_last_ms: float
    window_ms: float
    """From sending the INSERT to the last socket's notification: what the CPU is over."""
    server_cpu_ms: float
    """As measured: the server's idle CPU is not taken off. Over a window this short it is
    little, and it comes in bursts (each socket's ping every 30 s from when it opened), so a
    rate measured apart could take off more than the window held."""
    server_us_per_notification: float
    loadgen_cpu_ms: float
    """This process over the same window (its receivers and the writer thread): near the
    window's length, the load generator, not the server, set the pace of the fan-out."""
    delivery: dict[str, Any]


class Bench:
    """The server, its sockets and the writer, across the phases of one run."""

    def __init__(self, server: ServerProcess, writer: psycopg.Connection[Any], meter: Meter):
        self.server = server
        self.writer = writer
        self.meter = meter
        self.people: list[PrivateReceiver] = []
        self.crowd: list[Receiver] = []
        self.notified: list[PrivateReceiver] = []
        self.usages: list[tuple[str, Usage]] = []

    @property
    def sockets(self) -> list[Receiver]:
        return [*self.people, *self.crowd, *self.notified]

    async def direct_messages(self, name: str, count: int, rate: float) -> DirectMessagePhase:
        deaf = self.crowd + self.notified
        for receiver in self.people:
            receiver.start_phase(count)
        for receiver in deaf:
            receiver.start_phase(0)
        alice, bob = self.people
        self.meter.start()
        server_began = cpu_seconds(self.server.pid)
        writes = await asyncio.to_thread(
            write_direct_messages, self.writer, (alice.user_id, bob.user_id), count, rate
        )
        await wait_delivered(self.people, SETTLE_TIMEOUT)
        server_cpu = cpu_seconds(self.server.pid) - server_began
        usage = await self.meter.stop()
        latency: dict[bool, list[float]] = {True: [], False: []}
        for receiver in self.people:
            for received, found in zip(receiver.times, receiver.ids, strict=True):
                if found in writes.committed:
                    is_recipient = writes.recipients[found] == receiver.user_id
                    latency[is_recipient].append(received - writes.committed[found])
        delivery = check_delivery(self.people, writes.ids)
        self.usages.append((f"phase {name}", usage))
        return DirectMessagePhase(
            name=name,
            sockets=len(self.sockets),
            messages=count,
            target_rate=rate,
            achieved_rate=count / writes.seconds if writes.seconds > 0 else math.nan,
            server_us_per_message=1e6 * server_cpu / count,
            idle_server_percent=math.nan,
            net_server_us_per_message=math.nan,
            recipient_latency_ms=summarize_ms(latency[True]),
            sender_latency_ms=summarize_ms(latency[False]),
            frames=delivery.frames,
            usage=_usage_dict(usage),
            delivery=_delivery_dict(delivery),
            unrouted_frames=sum(frames_of(r) for r in deaf),
        )

    async def measure_direct_messages(
        self, name: str, count: int, rate: float, idle_seconds: float
    ) -> DirectMessagePhase:
        await self.direct_messages("warm-up", WARM_UP_MESSAGES, WARM_UP_RATE)
        idle_share = await idle_cpu_share(self.server.pid, idle_seconds)
        phase = await self.direct_messages(name, count, rate)
        phase.idle_server_percent = 100 * idle_share
        idle_us = 1e6 * idle_share * phase.usage["seconds"]
        phase.net_server_us_per_message = phase.server_us_per_message - idle_us / count
        print(_phase_line(phase), file=sys.stderr)
        return phase

    async def notify(self, number: int) -> NotificationRound:
        others = self.people + self.crowd
        for receiver in self.notified:
            receiver.start_phase(1)
        for receiver in others:
            receiver.start_phase(0)
        await wait_quiet(self.server.pid)
        users = [receiver.user_id for receiver in self.notified]
        began, server_began = time.monotonic(), cpu_seconds(self.server.pid)
        loadgen_began = time.process_time()
        notified = await asyncio.to_thread(notify_users, self.writer, users)
        await wait_delivered(self.notified, SETTLE_TIMEOUT + len(users) / 1000)
        server_cpu = cpu_seconds(self.server.pid) - server_began
        loadgen_cpu = time.process_time() - loadgen_began
        seconds = time.monotonic() - began
        owners, committed = notified.owners, notified.committed
        # Only once the server is quiet again has every duplicate or stray frame been sent.
        await wait_quiet(self.server.pid)
        await asyncio.sleep(LATE_FRAMES_SECONDS)  # a window for late frames to show
        delivery = check_notifications(self.notified, owners, others)
        if len(owners) != len(users):
            delivery.sample(f"the INSERT wrote {len(owners)} notifications for {len(users)} users")
        latencies = [
            receiver.notifications[0][0] - committed
            for receiver in self.notified
            if receiver.notifications
        ]
        summary = summarize_ms(latencies)
        notification_round = NotificationRound(
            round=number,
            first=number == 0,
            notified=len(owners),
            sockets=len(self.sockets),
            insert_ms=1000 * notified.insert_seconds,
            commit_rtt_ms=1000 * notified.commit_rtt,
            latency_ms=summary,
            commit_to_first_ms=1000 * min(latencies) if latencies else math.nan,
            commit_to_last_ms=summary["max"],
            window_ms=1000 * seconds,
            server_cpu_ms=1000 * server_cpu,
            server_us_per_notification=1e6 * server_cpu / len(users),
            loadgen_cpu_ms=1000 * loadgen_cpu,
            delivery={**asdict(delivery), "ok": delivery.ok},
        )
        print(_round_line(notification_round), file=sys.stderr)
        return notification_round


async def _bench(
    args: argparse.Namespace, conninfo: str, workdir: Path, postmaster: psutil.Process | None
) -> dict[str, Any]:
    port = free_port()
    url = f"http://{HOST}:{port}"
    server = await ServerProcess.start(
        "pgcast serve",
        [sys.executable, "-m", "server", "serve", "--no-migrate"],
        pgcast_env(conninfo, workdir / "server-data", port),
    )
    writer: psycopg.Connection[Any] | None = None
    bench: Bench | None = None
    phases: list[DirectMessagePhase] = []
    rounds: list[NotificationRound] = []
    sign_in_seconds = open_seconds = math.nan
    notification_usage: Usage | None = None
    try:
        await server.wait_ready(url + "/readyz")
        writer = await asyncio.to_thread(
            psycopg.connect, conninfo, autocommit=True, application_name="pgcast-bench"
        )
        bench = Bench(server, writer, Meter.for_server(server.pid, postmaster))
        people = await sign_in_many(
            url, [("alice@example.com", "Alice"), ("bob@example.com", "Bob")]
        )
        bench.people = await open_private_sockets(port, url, people, 0)
        phases.append(
            await bench.measure_direct_messages("a", args.messages, args.rate, args.idle_seconds)
        )
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            _, crowd_cookie = await sign_in(http, url, "crowd@example.com", "Crowd")
        bench.crowd = await open_sockets(port, "/ws", url, crowd_cookie, args.crowd, True)
        phases.append(
            await bench.measure_direct_messages("b", args.messages, args.rate, args.idle_seconds)
        )
        began = time.monotonic()
        notified = await sign_in_many(
            url, [(f"notified{n}@example.com", f"Notified {n}") for n in range(args.notified)]
        )
        sign_in_seconds = time.monotonic() - began
        began = time.monotonic()
        first_index = len(bench.people) + len(bench.crowd)
        bench.notified = await open_private_sockets(port, url, notified, first_index)
        open_seconds = time.monotonic() - began
        # One meter over every round, for the other load on the host: a round's fan-out lasts
        # a few tens of ms, too short for per-process CPU ticks of 10 ms.
        bench.meter.start()
        for number in range(args.rounds + 1):
            rounds.append(await bench.notify(number))
        notification_usage = await bench.meter.stop()
        bench.usages.append(("notification rounds", notification_usage))
    finally:
        if bench is not None:
            await close_sockets(bench.sockets)
        if writer is not None:
            await asyncio.to_thread(writer.close)
        await server.stop()
    assert bench is not None
    assert notification_usage is not None
    alone, crowded = phases
    problems = [f"pgcast serve exited with {server.exit_code}"] if server.exit_code else []
    for phase in phases:
        if not phase.delivery["ok"]:
            problems.append(
                f"phase {phase.name}: direct messages delivery failed "
                f"{phase.delivery['samples'][:3]}"
            )
        if phase.unrouted_frames:
            problems.append(
                f"phase {phase.name}: {phase.unrouted_frames} frames reached sockets other "
                "than the two people's"
            )
    for notification_round in rounds:
        delivery = notification_round.delivery
        if not delivery["ok"]:
            fields = ("received", "missing", "duplicates", "wrong_user", "other_frames")
            counts = ", ".join(f"{name} {delivery[name]}" for name in fields)
            problems.append(
                f"notification round {notification_round.round}: of {delivery['sockets']} "
                f"sockets {counts}, closed {delivery['closed_sockets']}, "
                f"{delivery['unrouted_frames']} frames to sockets not notified "
                f"{delivery['samples'][:3]}"
            )
    measured = [r for r in rounds if not r.first]
    return {
        "direct_message_phases": [asdict(phase) for phase in phases],
        "ratio_b_a": _ratio(crowded.net_server_us_per_message, alone.net_server_us_per_message),
        "ratio_b_a_measured": _ratio(crowded.server_us_per_message, alone.server_us_per_message),
        "notified_users": args.notified,
        "sign_in_seconds": sign_in_seconds,
        "open_seconds": open_seconds,
        "notification_rounds": [asdict(r) for r in rounds],
        "notification_usage": _usage_dict(notification_usage),
        "notification_medians": {
            key: statistics.median(getattr(r, key) for r in measured)
            for key in (
                "commit_to_first_ms",
                "commit_to_last_ms",
                "window_ms",
                "server_cpu_ms",
                "server_us_per_notification",
            )
        },
        "server_warnings": server.warning_count,
        "server_warning_samples": server.warnings,
        "problems": problems,
        "notes": usage_notes([u for u in bench.usages if u[0] != "phase warm-up"]),
    }


def _phase_line(phase: DirectMessagePhase) -> str:
    return (
        f"private: ({phase.name}) direct messages among {phase.sockets} sockets: "
        f"{phase.net_server_us_per_message:,.0f} µs server CPU per message, recipient p50 "
        f"{phase.recipient_latency_ms['p50']:.1f} ms"
    )


def _round_line(notification_round: NotificationRound) -> str:
    return (
        f"private: notification round {notification_round.round}: "
        f"{notification_round.notified} users, commit→last socket "
        f"{notification_round.commit_to_last_ms:.1f} ms, server CPU "
        f"{notification_round.server_cpu_ms:.1f} ms"
    )


def _cpu_cells(usage: dict[str, Any]) -> str:
    cpu = usage["cpu_percent"]
    return " / ".join(
        f"{cpu.get(name, math.nan):.0f}" for name in ("server", "postgres", "loadgen")
    )


def private_table(result: dict[str, Any]) -> list[str]:
    """Both measurements in Markdown, from the saved figures alone (bench/report.py renders
    them into RESULTS.md)."""
    a, b = result["direct_message_phases"]
    crowd = b["sockets"] - a["sockets"]
    lines = [
        "**Direct messages.** Alice and Bob write to each other in turn, one INSERT per "
        f"transaction, each on `private-user.{{me}}`; in (b) {crowd:,} more sockets of a third "
        "user listen to `messages`. Each message is two frames: the recipient's and the "
        "sender's.",
        "",
        "| phase | sockets connected | messages, /s target / achieved "
        "| **server µs per message, less idle** | as measured | server idle CPU % "
        "| **commit→recipient p50 / p99 ms** | commit→sender p50 / p99 ms "
        "| CPU % server / postgres / loadgen | delivery |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- | --- | --- | --- |",
    ]
    for phase in result["direct_message_phases"]:
        ok = phase["delivery"]["ok"] and not phase["unrouted_frames"]
        lines.append(
            f"| ({phase['name']}) | {phase['sockets']:,} | {phase['messages']:,}, "
            f"{phase['target_rate']:g} / {phase['achieved_rate']:.0f} "
            f"| **{phase['net_server_us_per_message']:,.0f}** "
            f"| {phase['server_us_per_message']:,.0f} | {phase['idle_server_percent']:.1f} "
            f"| **{_ms(phase['recipient_latency_ms'], 'p50', 'p99')}** "
            f"| {_ms(phase['sender_latency_ms'], 'p50', 'p99')} | {_cpu_cells(phase['usage'])} "
            f"| {'ok' if ok else 'FAILED'} |"
        )
    rounds = result["notification_rounds"]
    medians = result["notification_medians"]
    notified = result["notified_users"]
    lines += [
        "",
        f"**(b) / (a) = {result['ratio_b_a']:.2f}** less idle, {result['ratio_b_a_measured']:.2f} "
        f"as measured (near 1: the {crowd:,} other sockets cost a direct message nothing).",
        "",
        f"**Notifications.** {notified:,} users signed in ({result['sign_in_seconds']:.1f} s, "
        f"{CONNECT_CONCURRENCY} at a time) and opened a socket each on their own "
        f"`private-user.{{id}}` ({result['open_seconds']:.1f} s), beside the sockets above; "
        f"each round is one INSERT of {notified:,} notifications, a row per user "
        "selected from `users`. Round 0, the first after the sockets connected, is not in "
        "the medians. Server CPU is over the INSERT and the fan-out (INSERT sent → last "
        "socket), as measured.",
        "",
        "| round | sockets connected | INSERT / COMMIT ms | commit→first socket ms "
        "| commit→socket p50 / p99 ms | **commit→last socket ms** | **server CPU ms** "
        "| over ms (% of a core) | µs per notification | load generator CPU ms | delivery |",
        "| ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rounds:
        lines.append(
            f"| {r['round']}{' (first)' if r['first'] else ''} | {r['sockets']:,} "
            f"| {r['insert_ms']:.1f} / {r['commit_rtt_ms']:.1f} | {r['commit_to_first_ms']:.1f} "
            f"| {_ms(r['latency_ms'], 'p50', 'p99')} | **{r['commit_to_last_ms']:.1f}** "
            f"| **{r['server_cpu_ms']:.1f}** | {r['window_ms']:.0f} "
            f"({100 * _ratio(r['server_cpu_ms'], r['window_ms']):.0f}) "
            f"| {r['server_us_per_notification']:.1f} | {r['loadgen_cpu_ms']:.1f} "
            f"| {'ok' if r['delivery']['ok'] else 'FAILED'} |"
        )
    failed = [str(r["round"]) for r in rounds if not r["delivery"]["ok"]]
    usage = result["notification_usage"]
    lines += [
        "",
        f"Median of rounds 1 to {len(rounds) - 1}: **commit→last socket "
        f"{medians['commit_to_last_ms']:.1f} ms**, **server CPU "
        f"{medians['server_cpu_ms']:.1f} ms** "
        f"({medians['server_us_per_notification']:.1f} µs per notification). Delivery: "
        + (
            f"FAILED in round {', '.join(failed)}"
            if failed
            else "in every round each user got exactly one notification, its own (by the "
            "row's id), on its own channel, and no other socket got a frame"
        )
        + f". Over the rounds, quiet waits included, everything else on the host used "
        f"{usage['others_percent']:.0f}% of a core.",
    ]
    return lines


def render_report(result: dict[str, Any]) -> str:
    lines = [
        *report_head("private chat and notifications", result),
        "",
        *private_table(result),
        "",
        f"Server log warnings: {result['server_warnings']}.",
    ]
    return finish_report(lines, result)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/private.py", description=__doc__.splitlines()[0])
    parser.add_argument("--crowd", type=int, help="sockets on messages alone, from (b) (5000)")
    parser.add_argument("--messages", type=int, help="direct messages in (a) and (b) (1000)")
    parser.add_argument("--rate", type=float, help="direct messages/s in (a) and (b) (100)")
    parser.add_argument("--notified", type=int, help="users notified by one INSERT (1000)")
    parser.add_argument("--rounds", type=int, help="measured notification INSERTs (5)")
    parser.add_argument("--idle-seconds", type=float, help="idle CPU window per phase (3)")
    parser.add_argument("--smoke", action="store_true", help="50 + 20 sockets, a few seconds")
    add_report_options(parser)
    args = parser.parse_args(argv)
    settle_options(
        parser,
        args,
        SMOKE if args.smoke else DEFAULTS,
        ("crowd", "messages", "notified", "rounds"),
    )
    for name in ("rate", "idle_seconds"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be more than 0")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the three phases once; every figure in a dict. `problems` is empty when both
    people got every direct message once, in order, each notified user exactly its own
    notification, and no other socket any frame."""
    return run_bench(args, "private", _bench, render_report)


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, run, argv, (BenchError, OSError))


if __name__ == "__main__":
    sys.exit(main())
