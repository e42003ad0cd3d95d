"""Slow consumer: does one client that stops reading slow the others, and is it made whole?

One pgcast server with a small PGCAST_SOCKET_BACKLOG_BYTES (1 MiB), one user, N sockets that
keep reading. After a second of unreported warm-up, phase A: R messages/s for S seconds, one
transaction each, commit->socket latency of the N sockets. Phase B: the same plus one stalled
socket (small SO_RCVBUF, an Ethernet MSS) that reads its `connected` frame and no more.
/metrics is polled in both phases until pgcast_slow_sockets_closed_total rises; B lasts until
that close plus 2 s (bounded). At the close the stalled client reads again (what was still
buffered for it, and the close frame) and reconnects with `?after=<its connected cursor>`:
that socket must get every message of B once, in order. Traffic to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

from bench.lib import render, runner
from bench.lib.meters import Meter, usage_notes
from bench.lib.receivers import (
    CONNECT_TIMEOUT,
    HOST,
    OPEN_ENDED,
    SETTLE_TIMEOUT,
    Receiver,
    check_delivery,
    close_sockets,
    handshake,
    open_sockets,
    wait_delivered,
)
from bench.lib.results import BenchError, Delivery, Latency, Result, Usage, ratio
from bench.lib.servers import PgcastProcess
from bench.lib.writers import SteadyWrites, connect, write_steadily

POST_CLOSE_SECONDS = 2.0
POLL_INTERVAL, KERNEL_SAMPLE_INTERVAL = 0.05, 0.25
SLOW_CLOSES, CONNECTED = "pgcast_slow_sockets_closed_total", "pgcast_sockets_connected"
NOTIFY_TO_SEND = "pgcast_notify_to_send_seconds"
SLOW_WAKEUP_BUCKETS = (0.05, 0.1, 0.25)
# Above both, the stalled socket is said to have slowed the others (a note, not a failure).
SLOWED_RATIO, SLOWED_EXTRA_MS = 1.5, 2.0
# Bytes of a WebSocket header for a server frame of 126..65535 bytes.
FRAME_HEADER_BYTES = 4


@dataclass
class Options(runner.Options):
    sockets: int = runner.option(100, 5, "reading sockets")
    rate: float = runner.option(100.0, None, "messages/s in each phase")
    seconds: float = runner.option(10.0, 2.0, "length of each phase", minimum=0.1)
    content_chars: int = runner.option(2000, None, "message length")
    backlog_bytes: int = runner.option(1 << 20, 64 * 1024, "PGCAST_SOCKET_BACKLOG_BYTES", 65536)
    rcvbuf: int = runner.option(4096, None, "SO_RCVBUF the stalled client asks for")
    mss: int = runner.option(1448, None, "TCP MSS of the stalled client, 0: loopback's", 0)
    # pgcast's heartbeat drops a socket that has not answered a ping for 30 + 15 s.
    max_stall_seconds: float = runner.option(40.0, None, "phase B at most this long")

    def check(self) -> str | None:
        return (
            "--mss must be 0 or from 88 to 65535"
            if self.mss and not 88 <= self.mss <= 65535
            else None
        )


class StalledReceiver(Receiver):
    """Stops reading right after its `connected` frame: the kernel's receive buffer fills,
    then the server's send buffer, then pgcast's per-socket backlog."""

    stalled_at = math.nan

    def opening_text(self, payload: bytes, now: float) -> None:
        super().opening_text(payload, now)
        if self.opened.done():
            self.pause(True)
            self.stalled_at = time.time()


async def open_stalled(
    server: PgcastProcess, cookie: str, rcvbuf: int, mss: int
) -> tuple[StalledReceiver, int, int]:
    """The stalled socket, the receive buffer the kernel granted it and its local port."""
    request, accept = handshake(server.port, "/ws", cookie)
    receiver = StalledReceiver(-1, request, accept, True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Before connecting, so the window scale the handshake agrees on is small too. Linux sizes
    # the server's send buffer from the MSS the peer announces: ~100 KiB with an Ethernet
    # MSS, up to tcp_wmem's maximum (4 MiB) with loopback's 64 KiB, read or not.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if mss:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await loop.sock_connect(sock, (HOST, server.port))
            granted, port = (
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                sock.getsockname()[1],
            )
            await loop.create_connection(lambda: receiver, sock=sock)
            await receiver.opened
    except BaseException:
        sock.close()
        raise
    if receiver.cursor is None:
        raise BenchError("the stalled socket's connected frame had no cursor")
    return receiver, granted, port


def tcp_queues(server_port: int, client_port: int) -> int | None:
    """Bytes the server socket has not had acknowledged + bytes unread in the client's
    receive queue, from /proc/net/tcp; None when the connection is not there. Searched as
    bytes: the table can have thousands of lines."""
    with contextlib.suppress(OSError):
        table = Path("/proc/net/tcp").read_bytes()
        found = []
        for local, remote, side in ((server_port, client_port, 0), (client_port, server_port, 1)):
            pair = f"0100007F:{local:04X} 0100007F:{remote:04X} ".encode()
            at = table.find(pair)
            if at < 0:
                return None
            fields = table[at + len(pair) : at + len(pair) + 32].split()
            found.append(int(fields[1].split(b":")[side], 16))
        return sum(found)
    return None


@dataclass
class Watch:
    """/metrics polled during a phase: the close happened in (last_clear_at, closed_at]."""

    baseline: float
    ports: tuple[int, int] = (0, 0)
    polls: int = 0
    closes: float = 0.0
    last_clear_at: float = -math.inf
    closed_at: float | None = None
    gone_at: float | None = None
    """When pgcast let go of the socket another way (pgcast_sockets_connected fell with no
    slow close, or the connection left /proc/net/tcp)."""
    gone: str = ""
    kernel_queued: int | None = None
    """The largest kernel send + receive queues of the stalled connection before the close."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def poll(self, server: PgcastProcess, stop: asyncio.Event) -> None:
        sampled, connected = -math.inf, None
        while not stop.is_set():
            if self.closed_at is None and time.monotonic() - sampled >= KERNEL_SAMPLE_INTERVAL:
                sampled = time.monotonic()
                queued = await asyncio.to_thread(tcp_queues, *self.ports)
                if queued is not None:
                    self.kernel_queued = max(self.kernel_queued or 0, queued)
                elif self.kernel_queued is not None and self.gone_at is None:
                    self.gone_at, self.gone = time.time(), "its connection left /proc/net/tcp"
            asked = time.time()
            with contextlib.suppress(OSError, Exception):
                metrics = await server.metrics()
                self.polls += 1
                self.closes = metrics.get(SLOW_CLOSES, 0.0) - self.baseline
                connected = connected or metrics.get(CONNECTED)
                if self.closed_at is None and self.closes > 0:
                    self.closed_at = time.time()
                    self.closed.set()
                elif self.closed_at is None:
                    self.last_clear_at = asked
                    if metrics.get(CONNECTED, 0) < (connected or 0) and self.gone_at is None:
                        self.gone_at, self.gone = time.time(), "pgcast_sockets_connected fell"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_INTERVAL)


@dataclass
class Phase:
    name: str
    messages: int
    seconds: float
    latency: Latency
    commit_rtt: Latency
    usage: Usage
    delivery: Delivery
    slow_wakeups: list[int]
    notify_to_send_ms: float
    polls: int
    closes: float


def slow_wakeups(metrics: dict[str, float]) -> list[int]:
    """Socket wake-ups with notify->send over each of SLOW_WAKEUP_BUCKETS (server side)."""
    total = metrics.get(f'{NOTIFY_TO_SEND}_bucket{{le="+Inf"}}', 0.0)
    return [
        round(total - metrics.get(f'{NOTIFY_TO_SEND}_bucket{{le="{b}"}}', total))
        for b in SLOW_WAKEUP_BUCKETS
    ]


async def steady(
    name: str,
    server: PgcastProcess,
    conn: psycopg.Connection[Any],
    user_id: int,
    receivers: Sequence[Receiver],
    o: Options,
    meter: Meter,
    more: Callable[[int, float], int],
    watch: Watch,
) -> tuple[Phase, SteadyWrites]:
    """Writes at o.rate a chunk (at most a second) at a time while `more` says how many,
    /metrics polled; then until every reading socket has every message."""
    for receiver in receivers:
        receiver.start_phase(OPEN_ENDED, keep_text=receiver.index == 0)
    stop, writes = asyncio.Event(), SteadyWrites()
    before = await server.metrics()
    meter.start()
    poller = asyncio.create_task(watch.poll(server, stop))
    began = time.monotonic()
    try:
        while (count := more(len(writes.ids), time.monotonic() - began)) > 0:
            writes.extend(
                await asyncio.to_thread(
                    write_steadily, conn, user_id, count, o.rate, o.content_chars
                )
            )
        writes.seconds = time.monotonic() - began
        for receiver in receivers:
            receiver.expect(len(writes.ids))
        await wait_delivered(receivers, SETTLE_TIMEOUT)
    finally:
        stop.set()
        await poller
    usage = await meter.stop()
    after = await server.metrics()
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    count = delta.get(f"{NOTIFY_TO_SEND}_count", 0.0)
    phase = Phase(
        name,
        len(writes.ids),
        writes.seconds,
        Latency.of(writes.latencies(receivers)),
        Latency.of(writes.commit_rtts),
        usage,
        check_delivery(receivers, writes.ids),
        slow_wakeups(delta),
        1000 * ratio(delta.get(f"{NOTIFY_TO_SEND}_sum", 0.0), count),
        watch.polls,
        watch.closes,
    )
    return phase, writes


@dataclass
class SlowResult(Result):
    options: dict[str, float]
    frame_bytes_mean: float
    rcvbuf_granted: int
    warmup: Phase
    a: Phase
    b: Phase
    while_stalled: Latency
    after_close: Latency
    during_replay: Latency
    closed_after_s: float | None
    close_poll_window_s: float
    messages_before_close: int
    messages_surely_before_close: int
    bytes_before_close: float
    kernel_queued: int | None
    readable_messages: int
    readable_bytes: float
    close_code: int | None
    close_reason: str
    replayed_messages: int | None
    replay_ms: float
    resumed: Delivery | None
    server_warnings: int

    @property
    def p99_ratio(self) -> float:
        return ratio(self.b.latency.p99, self.a.latency.p99)

    def render(self) -> list[str]:
        o, a, b, r = self.options, self.a, self.b, self.resumed

        def kib(value: float | None) -> str:
            return "n/a" if value is None or math.isnan(value) else f"{value / 1024:,.0f} KiB"

        if self.closed_after_s is not None:
            closed = (
                f"**after {self.closed_after_s:.2f} s stalled, {self.messages_surely_before_close} "
                f"to {self.messages_before_close} messages committed** (the close lies between two "
                f"polls {1000 * self.close_poll_window_s:.0f} ms apart): "
                f"{kib(self.bytes_before_close)} of frames, against a bound of "
                f"{kib(o['backlog_bytes'])}"
            )
            dropped = (
                f"at most {self.messages_before_close - self.readable_messages} messages, "
                f"{kib(self.bytes_before_close - self.readable_bytes)}"
            )
        else:
            closed, dropped = "**NOT CLOSED as slow** (see the problems)", "n/a"
        seen = (
            f"close frame {self.close_code} `{self.close_reason}`"
            if self.close_code is not None
            else f"no close frame ({self.close_reason or 'connection closed'})"
        )
        resumed = (
            "FAIL"
            if r is None
            else (
                f"{render.ok(r.ok)} ({r.frames} of {b.messages} received; losses {r.losses}, "
                f"duplicates {r.duplicates}, out of order {r.out_of_order}, "
                f"unexpected {r.unexpected})"
            )
        )
        replay = (
            "reconnect failed"
            if self.replayed_messages is None
            else (
                f"{self.replayed_messages} messages replayed (committed before the reconnect), the "
                f"last of them {self.replay_ms:.0f} ms after reconnecting; the rest live"
            )
        )
        cpus = ("server", "postgres", "loadgen")
        return render.figures(
            [
                f"setup | {o['sockets']:.0f} reading sockets + 1 stalled, 1 user, "
                f"{o['content_chars']:.0f}-char "
                f"messages ({self.frame_bytes_mean:,.0f}-byte frames), PGCAST_SOCKET_BACKLOG_BYTES="
                f"{o['backlog_bytes']:.0f}, stalled client: SO_RCVBUF {o['rcvbuf']:.0f} (granted "
                f"{self.rcvbuf_granted}), MSS {o['mss'] or 'loopback'}",
                "messages A / B (B lasts until the close + 2 s), target / achieved rate A / B | "
                f"{a.messages} in {a.seconds:.1f} s / {b.messages} in {b.seconds:.1f} s, "
                f"{o['rate']:.0f} / "
                f"{a.messages / a.seconds:.0f} / {b.messages / b.seconds:.0f} msg/s",
                "**A: commit→socket p50 / p99 / p99.9 / max (ms), no stalled socket** | "
                f"{render.ms(a.latency, 'p50', 'p99', 'p999', 'max')} ({a.latency.count} pairs)",
                "**B: commit→socket p50 / p99 / p99.9 / max (ms), one stalled socket** | "
                f"{render.ms(b.latency, 'p50', 'p99', 'p999', 'max')} ({b.latency.count} pairs)",
                "B, messages committed while it was stalled, p50 / p99 / max (ms) | "
                + render.ms(self.while_stalled, "p50", "p99", "max"),
                "B, messages committed after its close (replay + live), p50 / p99 / max (ms) | "
                + render.ms(self.after_close, "p50", "p99", "max"),
                "B, of those, committed during the resumed socket's replay, p50 / p99 / max (ms) | "
                + render.ms(self.during_replay, "p50", "p99", "max"),
                f"**p99 with / without the stalled socket** | **{render.num(self.p99_ratio, 2)}**",
                "COMMIT round trip p99 A / B (ms) | "
                f"{a.commit_rtt.p99:.1f} / {b.commit_rtt.p99:.1f}",
                f"phase A CPU (% of one core) | {render.cpu(a.usage, *cpus)}",
                f"phase B CPU (% of one core) | {render.cpu(b.usage, *cpus)}",
                "server peak RSS A / B (MB) | "
                f"{render.num(a.usage.peak_rss_mb['server'])} / "
                f"{render.num(b.usage.peak_rss_mb['server'])}",
                "notify→send mean A / B (ms, server metric) | "
                f"{render.num(a.notify_to_send_ms, 1)} / {render.num(b.notify_to_send_ms, 1)}",
                "socket wake-ups with notify→send over 50 / 100 / 250 ms, A / B (server metric) | "
                + " ; ".join(" / ".join(map(str, p.slow_wakeups)) for p in (a, b)),
                f"**stalled socket closed (pgcast_slow_sockets_closed_total = 1)** | {closed}",
                "largest kernel queues of the stalled connection before the close (server send + "
                f"client receive) | {kib(self.kernel_queued)}",
                "what the stalled client could still read after the close (kernel + aiohttp "
                "buffers) | "
                f"{self.readable_messages} messages ({kib(self.readable_bytes)}), then {seen}",
                "left in pgcast's own queue at the close (dropped, replayed on resume) | "
                + dropped,
                f"**reconnect with `?after=<connected cursor>`** | {replay}",
                f"**resumed socket: every message of phase B, exactly once, in order** | {resumed}",
                "delivery check to the reading sockets warm-up / A / B | "
                + " / ".join(render.ok(p.delivery.ok) for p in (self.warmup, a, b)),
                "slow-socket closes in B; /metrics polls A / B | "
                f"{b.closes:.0f}; {a.polls} / {b.polls}",
                f"server log warnings/errors | {self.server_warnings}",
            ]
        )


async def measure(run: runner.Run[Options]) -> SlowResult:
    o = run.options
    per_chunk = max(1, round(o.rate))

    def for_seconds(seconds: float) -> Callable[[int, float], int]:
        target = max(1, round(seconds * o.rate))
        return lambda written, _: min(per_chunk, target - written)

    def until_closed(written: int, elapsed: float) -> int:
        """At least o.seconds, then until the close was seen and POST_CLOSE_SECONDS more
        passed, or pgcast let go of the socket another way, or o.max_stall_seconds."""
        if (least := for_seconds(o.seconds)(written, elapsed)) > 0:
            return least
        if watch.closed_at is not None:
            left = POST_CLOSE_SECONDS - (time.time() - watch.closed_at)
            return min(per_chunk, math.ceil(left * o.rate)) if left > 0 else 0
        return 0 if watch.gone_at is not None or elapsed >= o.max_stall_seconds else per_chunk

    env = {"PGCAST_SOCKET_BACKLOG_BYTES": str(o.backlog_bytes)}
    conn = connect(run.conninfo)
    resumed: list[Receiver] = []
    async with await PgcastProcess.start(run.conninfo, run.workdir, env=env) as server:
        meter = Meter.for_server(server.pid, run.postmaster)
        user_id, cookie = await server.sign_in()
        receivers = await open_sockets(server.port, "/ws", cookie, o.sockets)
        try:
            args = (server, conn, user_id, receivers, o, meter)
            warmup, _ = await steady(
                "warm-up", *args, for_seconds(1.0), Watch(0.0, (server.port, 0))
            )
            a, _ = await steady("A", *args, for_seconds(o.seconds), Watch(0.0, (server.port, 0)))
            stalled, granted, client_port = await open_stalled(server, cookie, o.rcvbuf, o.mss)
            watch = Watch(
                (await server.metrics()).get(SLOW_CLOSES, 0.0), (server.port, client_port)
            )

            async def resume() -> float:
                """What a client does on 1013: reconnect at once with its last cursor."""
                await watch.closed.wait()
                stalled.pause(False)
                began = time.time()
                path = "/ws?after=" + quote(stalled.cursor or "", safe="")
                resumed.extend(
                    await open_sockets(server.port, path, cookie, 1, expected=OPEN_ENDED)
                )
                return began

            follower = asyncio.create_task(resume())
            b, writes = await steady("B", *args, until_closed, watch)
            forced = watch.closed_at is None
            if forced:
                # Never closed as slow: read what pgcast still sends if it let go another way,
                # else drop it; either way the resume is still checked.
                if watch.gone_at is None:
                    stalled.abort()
                watch.closed.set()
            with contextlib.suppress(BenchError):
                reconnected = await follower
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(stalled.lost), 5)
            delivery = None
            if resumed:
                resumed[0].expect(len(writes.ids))
                await wait_delivered(resumed, SETTLE_TIMEOUT + len(writes.ids) / 1000)
                delivery = check_delivery(resumed, writes.ids)
        finally:
            await close_sockets([*receivers, *resumed])
            stalled.abort()
    conn.close()
    sizes = {
        i: len(t.encode()) + FRAME_HEADER_BYTES
        for i, t in zip(receivers[0].ids, receivers[0].texts, strict=True)
    }
    mean = sum(sizes.values()) / len(sizes) if sizes else math.nan
    closed_at = None if forced else watch.closed_at
    before = [i for i in writes.ids if closed_at is not None and writes.committed[i] <= closed_at]
    surely = [i for i in before if writes.committed[i] <= watch.last_clear_at]
    readable = list(stalled.ids)
    replayed = [i for i in writes.ids if resumed and writes.committed[i] < reconnected]
    got = dict(zip(resumed[0].ids, resumed[0].times, strict=True)) if resumed else {}
    replay_end = got.get(replayed[-1]) if replayed else None
    end = closed_at or math.inf
    problems = server.exit_problems()
    for phase in (warmup, a, b):
        problems += phase.delivery.problems(f"{phase.name}: the reading sockets'")
    if closed_at is None:
        what = (
            f"pgcast let go of it without a 1013 ({watch.gone})"
            if watch.gone_at
            else "it was not closed"
        )
        problems.append(
            f"the stalled socket: {what} within phase B ({b.messages} messages, {b.seconds:.0f} s)"
        )
    if b.closes > 1 or a.closes or warmup.closes:
        problems.append(
            f"{b.closes:.0f} sockets closed as slow in B, {a.closes + warmup.closes:.0f} before"
        )
    if readable != writes.ids[: len(readable)]:
        problems.append(
            f"what the stalled socket could read is not B's first messages: {readable[:5]}"
        )
    if closed_at is not None and stalled.close_code not in (1013, None):
        problems.append(f"the stalled socket was closed with {stalled.close_code}, expected 1013")
    if stalled.other_frames:
        problems.append(f"the stalled socket got unexpected frames: {stalled.other_samples}")
    problems += delivery.problems("the resumed socket") if delivery else ["reconnecting failed"]
    notes = usage_notes([("phase A", a.usage), ("phase B", b.usage)])
    if (
        b.latency.p99 > SLOWED_RATIO * a.latency.p99
        and b.latency.p99 - a.latency.p99 > SLOWED_EXTRA_MS
    ):
        notes.append(
            "p99 with the stalled socket is well above the p99 without: rerun to tell it from noise"
        )
    notes += [f"server log: {line}" for line in server.warnings[:3]]

    def window(since: float, until: float) -> Latency:
        return Latency.of(writes.latencies(receivers, since, until))

    return SlowResult(
        {
            k: getattr(o, k)
            for k in ("sockets", "content_chars", "backlog_bytes", "rcvbuf", "mss", "rate")
        },
        mean,
        granted,
        warmup,
        a,
        b,
        window(stalled.stalled_at, end),
        window(end, math.inf),
        window(reconnected, replay_end) if replay_end else Latency.of([]),
        None if closed_at is None else closed_at - stalled.stalled_at,
        (closed_at or math.nan) - watch.last_clear_at,
        len(before),
        len(surely),
        float(sum(sizes.get(i, mean) for i in before)),
        watch.kernel_queued,
        len(readable),
        float(sum(sizes.get(i, mean) for i in readable)),
        stalled.close_code,
        stalled.close_reason,
        len(replayed) if resumed else None,
        1000 * ((replay_end or math.nan) - reconnected) if resumed else math.nan,
        delivery,
        server.warning_count,
        problems=problems,
        notes=notes,
    )


SCENARIO = runner.Scenario("slow_consumer", "slow-consumer bench", __doc__, Options, measure)

if __name__ == "__main__":
    sys.exit(runner.main(SCENARIO))
