"""Slow consumer: does one client that stops reading slow the others, and is it made whole?
bench/README.md says how it is measured."""

import asyncio
import contextlib
import math
import socket
import time
from dataclasses import dataclass
from urllib.parse import quote

from bench.lib import receivers as rx
from bench.lib import render, runner
from bench.lib.results import BenchError, Delivery, Result, Steady
from bench.lib.servers import usage_notes
from bench.lib.writers import Session, latencies, pgcast_session, steady_phase, write_steadily

POST_CLOSE_SECONDS, CHUNK_SECONDS = 2.0, 0.1
SLOW_CLOSES = "pgcast_slow_sockets_closed_total"
# The stalled client's receive buffer and TCP MSS, set before it connects (the window scale is
# agreed then). Linux sizes the server's send buffer from the peer's MSS, read or not: ~100 KiB
# with an Ethernet MSS, up to tcp_wmem's maximum (4 MiB) with loopback's 64 KiB.
RCVBUF, MSS = 4096, 1448


@dataclass
class Options(runner.Options):
    sockets: int = runner.option(100, 5, "reading sockets")
    rate: float = runner.option(100.0, None, "messages/s in each phase")
    seconds: float = runner.option(10.0, 2.0, "length of each phase", minimum=0.1)
    content_chars: int = runner.option(2000, None, "message length")
    backlog_bytes: int = runner.option(1 << 20, 64 * 1024, "PGCAST_SOCKET_BACKLOG_BYTES", 65536)
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


async def open_stalled(s: Session) -> StalledReceiver:
    receiver = StalledReceiver(-1, *rx.handshake(s.server.port, "/ws", s.cookie))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, MSS)
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
class SlowResult(Result):
    a: Steady
    b: Steady
    closed_after_s: float | None
    close_code: int | None
    resumed: Delivery | None

    def render(self) -> list[str]:
        o, a, b, r = self.options, self.a, self.b, self.resumed
        closed = "**NOT CLOSED as slow**"
        if self.closed_after_s is not None:
            closed = f"after {self.closed_after_s:.2f} s stalled, close code {self.close_code}"
        return render.figures(
            [
                f"setup | {o['sockets']:.0f} reading sockets + 1 stalled, "
                f"{o['content_chars']:.0f}-char messages at {o['rate']:.0f}/s, "
                f"PGCAST_SOCKET_BACKLOG_BYTES={o['backlog_bytes']:.0f}, stalled client: SO_RCVBUF "
                f"{RCVBUF}, MSS {MSS}",
                "**commit→socket p50 / p99 (ms), A: no stalled socket / B: one** | "
                f"{render.ms(a.latency)} / {render.ms(b.latency)}",
                "**p99 with / without the stalled socket** | "
                f"**{render.x(b.latency.p99, a.latency.p99)}**",
                f"**stalled socket closed as slow** | {closed}",
                "**resumed socket: every message of B, exactly once, in order** | "
                + ("FAIL" if r is None else f"{render.ok(r.ok)} ({r.frames} of {b.messages})"),
            ]
        )


async def resume(s: Session, stalled: StalledReceiver) -> list[rx.Receiver]:
    """What a client does on 1013: read what is left, reconnect at once with its last cursor."""
    stalled.pause(False)
    path = "/ws?after=" + quote(stalled.cursor or "", safe="")
    return await rx.open_sockets(s.server.port, path, s.cookie, 1, expected=rx.OPEN_ENDED)


async def measure(run: runner.Run[Options]) -> SlowResult:
    o = run.options
    env = {"PGCAST_SOCKET_BACKLOG_BYTES": str(o.backlog_bytes)}
    closed_at, resumed = None, list[rx.Receiver]()
    async with pgcast_session(run, env=env) as s:
        receivers = await rx.open_sockets(s.server.port, "/ws", s.cookie, o.sockets)
        stalled = None
        try:
            closes = (await s.server.metrics()).get(SLOW_CLOSES, 0.0)
            phase = (o.rate, o.content_chars)
            warmup = await steady_phase(s, receivers, max(1, round(o.rate)), *phase)
            a = await steady_phase(s, receivers, max(1, round(o.rate * o.seconds)), *phase)
            stalled = await open_stalled(s)
            earlier = (await s.server.metrics()).get(SLOW_CLOSES, 0.0) - closes
            for receiver in receivers:
                receiver.start_phase(rx.OPEN_ENDED)
            committed: dict[int, float] = {}
            s.meter.start()
            began, follower = time.monotonic(), None
            # At least o.seconds, then until the close was seen and POST_CLOSE_SECONDS more
            # passed, or o.max_stall_seconds.
            while (elapsed := time.monotonic() - began) < o.seconds or (
                time.time() - closed_at < POST_CLOSE_SECONDS
                if closed_at is not None
                else elapsed < o.max_stall_seconds
            ):
                chunk = (s.writer, s.user_id, max(1, round(CHUNK_SECONDS * o.rate)), *phase)
                # /metrics read while the chunk is written: a stalled socket sees no close frame.
                written, metrics = await asyncio.gather(
                    asyncio.to_thread(write_steadily, *chunk), s.server.metrics()
                )
                committed.update(written[0])
                if closed_at is None and metrics.get(SLOW_CLOSES, 0.0) > closes + earlier:
                    closed_at, follower = time.time(), asyncio.create_task(resume(s, stalled))
            seconds = time.monotonic() - began
            for receiver in receivers:
                receiver.expect(len(committed))
            await rx.wait_delivered(receivers, rx.SETTLE_TIMEOUT)
            latency, usage = latencies(committed, receivers), await s.meter.stop()
            b_delivery = rx.check_delivery(receivers, [*committed])
            achieved = len(committed) / seconds
            b = Steady(b_delivery, usage, len(committed), o.rate, achieved, latency)
            # Never closed as slow, it is not resumed: the run fails either way.
            with contextlib.suppress(BenchError):
                resumed += await follower if follower else []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(stalled.lost), 5)
            in_b = (await s.server.metrics()).get(SLOW_CLOSES, 0.0) - closes - earlier
            delivery = None
            if resumed:
                resumed[0].expect(len(committed))
                await rx.wait_delivered(resumed, rx.SETTLE_TIMEOUT + len(committed) / 1000)
                delivery = rx.check_delivery(resumed, [*committed])
        finally:
            await rx.close_sockets([*receivers, *resumed])
            if stalled is not None:
                stalled.abort()
    problems = s.server.exit_problems()
    for name, phase_b in (("warm-up", warmup), ("A", a), ("B", b)):
        problems += phase_b.delivery.problems(f"{name}: the reading sockets'")
    if closed_at is None:
        problems.append(f"the stalled socket was not closed as slow in B ({b.messages} messages)")
    if earlier > 0 or in_b > 1:
        problems.append(f"{in_b:.0f} sockets closed as slow in B, {earlier:.0f} before")
    if closed_at is not None and stalled.close_code not in (1013, None):
        problems.append(f"the stalled socket was closed with {stalled.close_code}, expected 1013")
    problems += delivery.problems("the resumed socket") if delivery else ["reconnecting failed"]
    stalled_for = None if closed_at is None else closed_at - stalled.stalled_at
    return SlowResult(
        *(a, b, stalled_for, stalled.close_code, delivery),
        problems=problems,
        notes=usage_notes([("phase A", a.usage), ("phase B", b.usage)]),
    )


SCENARIO = runner.Scenario("slow_consumer", "slow-consumer bench", Options, measure)
