"""Slow consumer: does one client that stops reading slow the others, and is it made whole?
bench/README.md says how it is measured."""

import asyncio
import contextlib
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from bench.lib import receivers as rx
from bench.lib import render, runner
from bench.lib.results import BenchError, Delivery, Result, Steady, ratio
from bench.lib.servers import usage_notes
from bench.lib.writers import Commits, Session, latencies, pgcast_session, write_steadily

POST_CLOSE_SECONDS, POLL_INTERVAL = 2.0, 0.05
SLOW_CLOSES, CONNECTED = "pgcast_slow_sockets_closed_total", "pgcast_sockets_connected"


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


class StalledReceiver(rx.Receiver):
    """Stops reading right after its `connected` frame: the kernel's buffers fill, then
    pgcast's per-socket backlog."""

    stalled_at = math.nan

    def go_live(self) -> None:
        super().go_live()
        self.pause(True)
        self.stalled_at = time.time()


async def open_stalled(s: Session, o: Options) -> StalledReceiver:
    receiver = StalledReceiver(-1, *rx.handshake(s.server.port, "/ws", s.cookie))
    sock = socket.socket()
    # Before connecting, so the window scale the handshake agrees on is small too. Linux sizes
    # the server's send buffer from the MSS the peer announces: ~100 KiB with an Ethernet
    # MSS, up to tcp_wmem's maximum (4 MiB) with loopback's 64 KiB, read or not.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, o.rcvbuf)
    if o.mss:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, o.mss)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(rx.CONNECT_TIMEOUT):
            await loop.sock_connect(sock, (rx.HOST, s.server.port))
            await loop.create_connection(lambda: receiver, sock=sock)
            await receiver.opened
    except BaseException:
        sock.close()
        raise
    if receiver.cursor is None:
        raise BenchError("the stalled socket's connected frame had no cursor")
    return receiver


@dataclass
class Watch:
    """/metrics polled during a phase: when the slow close was seen, or when pgcast let go of
    the socket another way (pgcast_sockets_connected fell with no slow close)."""

    baseline: float = 0.0
    closes: float = 0.0
    closed_at: float | None = None
    gone_at: float | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def poll(self, s: Session) -> None:
        connected = None
        while True:
            with contextlib.suppress(OSError, Exception):
                metrics = await s.server.metrics()
                self.closes = metrics.get(SLOW_CLOSES, 0.0) - self.baseline
                connected = connected or metrics.get(CONNECTED)
                if self.closed_at is None and self.closes > 0:
                    self.closed_at = time.time()
                    self.ended.set()
                elif self.closed_at is None and metrics.get(CONNECTED, 0) < (connected or 0):
                    self.gone_at = self.gone_at or time.time()
                    self.ended.set()
            await asyncio.sleep(POLL_INTERVAL)


@dataclass
class SlowResult(Result):
    a: Steady
    b: Steady
    closed_after_s: float | None
    close_code: int | None
    resumed: Delivery | None

    @property
    def p99_ratio(self) -> float:
        return ratio(self.b.latency.p99, self.a.latency.p99)

    def render(self) -> list[str]:
        o, a, b, r = self.options, self.a, self.b, self.resumed
        closed = "**NOT CLOSED as slow**"
        if self.closed_after_s is not None:
            closed = f"after {self.closed_after_s:.2f} s stalled, close code {self.close_code}"
        cpus = ("server", "postgres", "loadgen")
        return render.figures(
            [
                f"setup | {o['sockets']:.0f} reading sockets + 1 stalled, "
                f"{o['content_chars']:.0f}-char messages at {o['rate']:.0f}/s, "
                f"PGCAST_SOCKET_BACKLOG_BYTES={o['backlog_bytes']:.0f}, stalled client: SO_RCVBUF "
                f"{o['rcvbuf']:.0f}, MSS {o['mss'] or 'loopback'}",
                f"messages A / B | {a.messages} at {a.achieved_rate:.0f}/s / "
                f"{b.messages} at {b.achieved_rate:.0f}/s",
                "**commit→socket p50 / p99 (ms), A: no stalled socket / B: one** | "
                f"{render.ms(a.latency)} / {render.ms(b.latency)}",
                f"**p99 with / without the stalled socket** | **{render.num(self.p99_ratio, 2)}**",
                f"CPU (% of one core) A / B | {render.cpu(a.usage, *cpus)} / "
                f"{render.cpu(b.usage, *cpus)}",
                f"**stalled socket closed as slow** | {closed}",
                "**resumed socket: every message of B, exactly once, in order** | "
                + ("FAIL" if r is None else f"{render.ok(r.ok)} ({r.frames} of {b.messages})"),
            ]
        )


async def measure(run: runner.Run[Options]) -> SlowResult:
    o = run.options
    per_chunk = max(1, round(o.rate))

    def for_seconds(seconds: float) -> Callable[[int, float], int]:
        return lambda written, _: min(per_chunk, max(1, round(seconds * o.rate)) - written)

    def until_closed(written: int, elapsed: float) -> int:
        """At least o.seconds, then until the close was seen and POST_CLOSE_SECONDS more
        passed, or pgcast let go of the socket another way, or o.max_stall_seconds."""
        if (least := for_seconds(o.seconds)(written, elapsed)) > 0:
            return least
        if watch.closed_at is not None:
            left = POST_CLOSE_SECONDS - (time.time() - watch.closed_at)
            return min(per_chunk, math.ceil(left * o.rate)) if left > 0 else 0
        return 0 if watch.gone_at is not None or elapsed >= o.max_stall_seconds else per_chunk

    async def steady(more: Callable[[int, float], int], watch: Watch) -> tuple[Steady, Commits]:
        """Writes at o.rate a chunk (at most a second) at a time while `more` says how many,
        /metrics polled; then until every reading socket has every message."""
        for receiver in receivers:
            receiver.start_phase(rx.OPEN_ENDED)
        committed: Commits = {}
        s.meter.start()
        poller, began = asyncio.create_task(watch.poll(s)), time.monotonic()
        try:
            while (count := more(len(committed), time.monotonic() - began)) > 0:
                chunk = (s.writer, s.user_id, count, o.rate, o.content_chars)
                committed.update((await asyncio.to_thread(write_steadily, *chunk))[0])
            seconds = time.monotonic() - began
            for receiver in receivers:
                receiver.expect(len(committed))
            await rx.wait_delivered(receivers, rx.SETTLE_TIMEOUT)
        finally:
            poller.cancel()
        latency, usage = latencies(committed, receivers), await s.meter.stop()
        delivery, rate = rx.check_delivery(receivers, [*committed]), len(committed) / seconds
        return Steady(len(committed), o.rate, rate, latency, delivery, usage), committed

    resumed: list[rx.Receiver] = []
    env = {"PGCAST_SOCKET_BACKLOG_BYTES": str(o.backlog_bytes)}
    async with pgcast_session(run, env=env) as s:
        receivers = await rx.open_sockets(s.server.port, "/ws", s.cookie, o.sockets)
        try:
            before = [Watch(), Watch()]  # the warm-up's and A's, which must see no slow close
            warmup, _ = await steady(for_seconds(1.0), before[0])
            a, _ = await steady(for_seconds(o.seconds), before[1])
            stalled = await open_stalled(s, o)
            watch = Watch((await s.server.metrics()).get(SLOW_CLOSES, 0.0))

            async def resume() -> None:
                """What a client does on 1013: reconnect at once with its last cursor."""
                await watch.ended.wait()
                stalled.pause(False)
                path = "/ws?after=" + quote(stalled.cursor or "", safe="")
                resumed.extend(
                    await rx.open_sockets(s.server.port, path, s.cookie, 1, expected=rx.OPEN_ENDED)
                )

            follower = asyncio.create_task(resume())
            b, committed = await steady(until_closed, watch)
            if (closed_at := watch.closed_at) is None:
                # Never closed as slow: read what pgcast still sends if it let go another way,
                # else drop it; either way the resume is still checked.
                if watch.gone_at is None:
                    stalled.abort()
                watch.ended.set()
            with contextlib.suppress(BenchError):
                await follower
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(stalled.lost), 5)
            delivery = None
            if resumed:
                resumed[0].expect(len(committed))
                await rx.wait_delivered(resumed, rx.SETTLE_TIMEOUT + len(committed) / 1000)
                delivery = rx.check_delivery(resumed, [*committed])
        finally:
            await rx.close_sockets([*receivers, *resumed])
            stalled.abort()
    problems = s.server.exit_problems()
    for name, phase in (("warm-up", warmup), ("A", a), ("B", b)):
        problems += phase.delivery.problems(f"{name}: the reading sockets'")
    if closed_at is None:
        problems.append(f"the stalled socket was not closed as slow in B ({b.messages} messages)")
    if (earlier := sum(w.closes for w in before)) > 0 or watch.closes > 1:
        problems.append(f"{watch.closes:.0f} sockets closed as slow in B, {earlier:.0f} before")
    if closed_at is not None and stalled.close_code not in (1013, None):
        problems.append(f"the stalled socket was closed with {stalled.close_code}, expected 1013")
    problems += delivery.problems("the resumed socket") if delivery else ["reconnecting failed"]
    stalled_for = None if closed_at is None else closed_at - stalled.stalled_at
    return SlowResult(
        *(a, b, stalled_for, stalled.close_code, delivery),
        problems=problems,
        notes=usage_notes([("phase A", a.usage), ("phase B", b.usage)]),
    )


SCENARIO = runner.Scenario("slow_consumer", "slow-consumer bench", __doc__, Options, measure)
runner.run_as_script(SCENARIO, __name__)
