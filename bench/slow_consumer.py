"""Slow-consumer bench: does one client that stops reading slow the others, and is it made whole?

    .venv/bin/python bench/slow_consumer.py [--sockets 100] [--rate 100] [--seconds 10]
        [--content-chars 2000] [--backlog-bytes 1048576] [--mss 1448] [--smoke] [--no-write]

One pgcast server process (PGCAST_SOCKET_BACKLOG_BYTES set small, 1 MiB by default, so the
stalled socket passes it within the run), one signed-in user, N sockets that keep reading:

- warm-up: one second of steady writes, not reported.
- phase A: a writer thread inserts R messages/s for S seconds, one transaction each (the
  writer of bench/quick.py); commit->socket latency of the N sockets.
- phase B: the same, plus one stalled socket: a WebSocket client with a small SO_RCVBUF that
  reads its `connected` frame (and keeps that cursor), then never reads again. /metrics is
  polled (in both phases, so they carry the same load) until pgcast_slow_sockets_closed_total
  rises: the stalled client cannot see its close frame, as it does not read. Phase B lasts at
  least S seconds, then until the close was seen and 2 s more passed (bounded). At the close,
  as a real client would on 1013, the stalled client reads again (to see what was still
  buffered for it, and the close frame) and reconnects with `?after=<its connected cursor>`
  using bench/quick.py's Receiver. That socket must get every message committed since the
  cursor, exactly once and in order: the replay, then live ones.

Everything talks to 127.0.0.1 only. bench/README.md ("a client that stops reading") explains
each figure. `run(parse_args([...]))` returns every figure as a dict; `problems` is empty when
the checks passed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import aiohttp
import psutil
import psycopg

# Run as a script, only bench/ is on sys.path: make the repository's `bench` package importable.
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.quick import (
    CONNECT_TIMEOUT,
    HOST,
    SETTLE_TIMEOUT,
    BenchError,
    Delivery,
    Meter,
    Receiver,
    ServerProcess,
    SteadyWrites,
    Usage,
    _cpu,
    _delivery_dict,
    _notify_to_send_ms,
    _usage_dict,
    add_report_options,
    bench_main,
    check_delivery,
    close_sockets,
    connect_writer,
    fetch_metrics,
    finish_report,
    free_port,
    handshake,
    metrics_delta,
    open_sockets,
    pgcast_env,
    run_bench,
    settle_options,
    sign_in,
    summarize_ms,
    usage_notes,
    wait_delivered,
    write_steadily,
)

DEFAULTS: dict[str, Any] = {
    "sockets": 100,
    "rate": 100.0,
    "seconds": 10.0,
    "content_chars": 2000,
    "backlog_bytes": 1 << 20,
}
SMOKE: dict[str, Any] = {
    "sockets": 5,
    "rate": 100.0,
    "seconds": 2.0,
    "content_chars": 2000,
    "backlog_bytes": 64 * 1024,
}
# pgcast's own limits for PGCAST_SOCKET_BACKLOG_BYTES (server/config.py).
BACKLOG_LOW, BACKLOG_HIGH = 64 * 1024, 1 << 31
# Requested SO_RCVBUF of the stalled client; Linux doubles it and has a floor of a few KB.
STALLED_RCVBUF = 4096
# The MSS the stalled client announces: an Ethernet path's (1500 - 40 - 12 bytes of options).
STALLED_MSS = 1448
WARMUP_SECONDS = 1.0
# Phase B goes on this long after the close was seen: the replay and the resumed socket's seam
# with live delivery happen under the same steady load.
POST_CLOSE_SECONDS = 2.0
# aiohttp closes a socket that has not answered a ping for 30 + 15 s (HEARTBEAT_SECONDS in
# server/ws.py): past that, the stall would end by heartbeat, not by the backlog bound.
MAX_STALL_SECONDS = 40.0
MAX_CHUNKS = 10_000
# Receivers wait for this many messages until a phase knows how many it wrote.
UNKNOWN_YET = 1 << 62
POLL_INTERVAL = 0.05
# The stalled connection's kernel queues are read this often (in both phases, as the same
# work: in phase A the port pair matches nothing).
KERNEL_SAMPLE_INTERVAL = 0.25
# The server gives a close frame 2 s (CLOSE_TIMEOUT_SECONDS in server/ws.py), then aborts.
STALLED_CLOSE_WAIT = 5.0
SLOW_CLOSES = "pgcast_slow_sockets_closed_total"
SOCKETS_CONNECTED = "pgcast_sockets_connected"
NOTIFY_TO_SEND = "pgcast_notify_to_send_seconds"
# Bucket bounds of that histogram (server/metrics.py) to count slow wake-ups above.
SLOW_WAKEUP_BUCKETS = (0.05, 0.1, 0.25)
# Above both, the stalled socket is said to have slowed the others (a note, not a failure).
SLOWED_RATIO, SLOWED_EXTRA_MS = 1.5, 2.0
# Bytes of a WebSocket header for a server frame of 126..65535 bytes.
FRAME_HEADER_BYTES = 4


# --------------------------------------------------------------------------------------------
# The stalled client


class StalledReceiver(Receiver):
    """bench/quick.py's Receiver that keeps the cursor of its `connected` frame and stops
    reading right after it: the kernel's receive buffer (small SO_RCVBUF) fills, then the
    server's send buffer, then pgcast's per-socket backlog."""

    def __init__(self, request: bytes, accept: str) -> None:
        super().__init__(-1, request, accept, expect_connected=True)
        self.cursor: str | None = None
        self.stalled_at: float | None = None
        self.lost = asyncio.Event()
        self._stalled_transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._stalled_transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lost.set()

    def _text(self, payload: bytes, now: float) -> None:
        connecting = not self.opened.done()
        if connecting:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.cursor = json.loads(payload)["data"]["cursor"]
        super()._text(payload, now)
        if connecting and self.opened.done() and self._stalled_transport is not None:
            self._stalled_transport.pause_reading()
            self.stalled_at = time.time()

    def resume(self) -> None:
        """Read again: whatever is still buffered for it, and a close frame if one comes."""
        transport = self._stalled_transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def abort(self) -> None:
        if self._stalled_transport is not None:
            self._stalled_transport.abort()


async def open_stalled(
    port: int, origin: str, cookie: str, rcvbuf: int, mss: int
) -> tuple[StalledReceiver, int, int]:
    """A socket with a small receive buffer that has its `connected` frame and reads no more;
    returns it, the receive buffer the kernel granted and its local port."""
    loop = asyncio.get_running_loop()
    request, accept = handshake(port, "/ws", origin, cookie)
    receiver = StalledReceiver(request, accept)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Before connecting, so the window scale the handshake agrees on is small too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if mss:
            # The MSS this client announces. Linux sizes the server's send buffer from it:
            # with loopback's 64 KiB MSS the buffer grows to tcp_wmem's maximum (4 MiB by
            # default) even though the peer reads nothing; with an Ethernet MSS, ~100 KiB.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
        sock.setblocking(False)
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await loop.sock_connect(sock, (HOST, port))
            granted: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            client_port: int = sock.getsockname()[1]
            await loop.create_connection(lambda: receiver, sock=sock)
            await receiver.opened
    except BaseException:
        receiver.abort()
        sock.close()
        raise
    if receiver.cursor is None:
        receiver.abort()
        raise BenchError("the stalled socket's connected frame had no cursor")
    return receiver, granted, client_port


# --------------------------------------------------------------------------------------------
# Watching pgcast_slow_sockets_closed_total


def tcp_queues(server_port: int, client_port: int) -> tuple[int, int] | None:
    """Kernel queues of one loopback connection, from /proc/net/tcp (Linux): bytes the server
    socket has not had acknowledged (its send queue) and bytes waiting unread in the client's
    receive queue. None when the connection is not there (or not on Linux). Searched as bytes,
    not parsed line by line: the table can have thousands of lines."""
    try:
        table = Path("/proc/net/tcp").read_bytes()
    except OSError:
        return None

    def queues(local: int, remote: int) -> tuple[int, int] | None:
        pair = f"0100007F:{local:04X} 0100007F:{remote:04X} ".encode()
        at = table.find(pair)
        if at < 0:
            return None
        # The fields after the addresses: state, then tx_queue:rx_queue, in hex.
        fields = table[at + len(pair) : at + len(pair) + 32].split()
        tx, _, rx = fields[1].partition(b":") if len(fields) > 1 else (b"", b"", b"")
        try:
            return int(tx, 16), int(rx, 16)
        except ValueError:
            return None

    server_end, client_end = queues(server_port, client_port), queues(client_port, server_port)
    if server_end is None or client_end is None:
        return None
    return server_end[0], client_end[1]


@dataclass
class CloseWatch:
    """Polls /metrics; the close happened in (last_clear_at, detected_at]. With
    `stalled_ports`, also samples that connection's kernel queues until the close."""

    baseline: float
    stalled_ports: tuple[int, int] | None = None
    polls: int = 0
    errors: int = 0
    last_clear_at: float | None = None
    detected_at: float | None = None
    closes: float = 0.0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    # Largest kernel send queue (server side) + receive queue (client side) seen, in bytes.
    kernel_queued: int | None = None
    # When the connection left /proc/net/tcp before the close was seen in /metrics.
    vanished_at: float | None = None
    # pgcast_sockets_connected (hub subscriptions) at the first poll, and when it fell below
    # that before a slow close was counted: pgcast let go of a socket some other way.
    connected_at_start: float | None = None
    dropped_at: float | None = None
    # The stalled connection's kernel queues when that happened, and the last ones sampled.
    kernel_last: int | None = None


async def watch_closes(
    http: aiohttp.ClientSession, url: str, watch: CloseWatch, stop: asyncio.Event
) -> None:
    sampled_at = -math.inf
    while not stop.is_set():
        due = time.monotonic() - sampled_at >= KERNEL_SAMPLE_INTERVAL
        if watch.stalled_ports is not None and watch.detected_at is None and due:
            sampled_at = time.monotonic()
            queues = await asyncio.to_thread(tcp_queues, *watch.stalled_ports)
            if queues is not None:
                watch.kernel_queued = max(watch.kernel_queued or 0, sum(queues))
                watch.kernel_last = sum(queues)
            elif watch.kernel_queued is not None and watch.vanished_at is None:
                watch.vanished_at = time.time()
        asked_at = time.time()
        try:
            metrics = await fetch_metrics(http, url)
        except (aiohttp.ClientError, OSError):
            watch.errors += 1
        else:
            watch.polls += 1
            watch.closes = metrics.get(SLOW_CLOSES, 0.0) - watch.baseline
            connected = metrics.get(SOCKETS_CONNECTED, math.nan)
            if watch.connected_at_start is None:
                watch.connected_at_start = connected
            dropped = connected < watch.connected_at_start and watch.closes <= 0
            if dropped and watch.dropped_at is None and watch.detected_at is None:
                watch.dropped_at = time.time()
            if watch.detected_at is None:
                if watch.closes > 0:
                    watch.detected_at = time.time()
                    watch.closed.set()
                else:
                    watch.last_clear_at = asked_at
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL_INTERVAL)


# --------------------------------------------------------------------------------------------
# Phases


@dataclass
class Phase:
    name: str
    writes: SteadyWrites
    latency: dict[str, float]
    delivery: Delivery
    usage: Usage
    completed: bool
    watch: CloseWatch
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def achieved_rate(self) -> float:
        seconds = self.writes.seconds
        return len(self.writes.ids) / seconds if seconds > 0 else math.nan


@dataclass
class Server:
    port: int
    url: str
    cookie: str
    user_id: int
    http: aiohttp.ClientSession
    process: ServerProcess


def latencies(
    receivers: Sequence[Receiver],
    writes: SteadyWrites,
    since: float = -math.inf,
    until: float = math.inf,
) -> list[float]:
    """receive - commit over every (socket, message) pair whose commit time is in the window."""
    pairs = []
    for receiver in receivers:
        for received, found in zip(receiver.times, receiver.ids, strict=True):
            committed = writes.committed.get(found)
            if committed is not None and since <= committed <= until:
                pairs.append(received - committed)
    return pairs


# How many messages to write next, given how many were written and the seconds elapsed; 0 ends.
NextChunk = Callable[[int, float], int]


async def write_until(
    conn: psycopg.Connection[Any], user_id: int, args: argparse.Namespace, next_chunk: NextChunk
) -> SteadyWrites:
    """bench/quick.py's steady writer, run one chunk (at most a second of messages) at a time
    so that a phase can last until something happens."""
    total = SteadyWrites([], {}, [], 0.0)
    began = time.monotonic()
    for _ in range(MAX_CHUNKS):
        count = next_chunk(len(total.ids), time.monotonic() - began)
        if count <= 0:
            break
        part = await asyncio.to_thread(
            write_steadily, conn, user_id, count, args.rate, args.content_chars
        )
        total.ids.extend(part.ids)
        total.committed.update(part.committed)
        total.commit_rtts.extend(part.commit_rtts)
    total.seconds = time.monotonic() - began
    return total


def for_seconds(args: argparse.Namespace, seconds: float) -> NextChunk:
    target = max(1, round(seconds * args.rate))
    per_chunk = max(1, round(args.rate))
    return lambda written, _elapsed: min(per_chunk, target - written)


async def wait_for_all(receivers: Sequence[Receiver], expected: int, limit: float) -> bool:
    """Until every socket has `expected` messages (or closed), or `limit` seconds."""
    for receiver in receivers:
        receiver.expected = expected
        if len(receiver.ids) >= expected or receiver.closed:
            receiver.done.set()
        else:
            receiver.done.clear()
    return await wait_delivered(list(receivers), limit)


async def steady_phase(
    name: str,
    server: Server,
    conn: psycopg.Connection[Any],
    receivers: list[Receiver],
    args: argparse.Namespace,
    meter: Meter,
    next_chunk: NextChunk,
    watch: CloseWatch,
) -> Phase:
    """Steady writes at args.rate for as long as `next_chunk` says, while /metrics is polled;
    then waits until every reading socket has every message (or SETTLE_TIMEOUT)."""
    for receiver in receivers:
        receiver.start_phase(UNKNOWN_YET, keep_text=receiver.index == 0)
    stop = asyncio.Event()
    before = await fetch_metrics(server.http, server.url)
    meter.start()
    poller = asyncio.create_task(watch_closes(server.http, server.url, watch, stop))
    try:
        writes = await write_until(conn, server.user_id, args, next_chunk)
        completed = await wait_for_all(receivers, len(writes.ids), SETTLE_TIMEOUT)
    finally:
        stop.set()
        await poller
    usage = await meter.stop()
    after = await fetch_metrics(server.http, server.url)
    return Phase(
        name=name,
        writes=writes,
        latency=summarize_ms(latencies(receivers, writes)),
        delivery=check_delivery(receivers, writes.ids),
        usage=usage,
        completed=completed,
        watch=watch,
        metrics=metrics_delta(before, after),
    )


@dataclass
class Resumed:
    receiver: Receiver | None
    began_at: float
    opened_at: float
    forced: bool
    error: str | None = None


async def resume_after_close(
    server: Server, stalled: StalledReceiver, watch: CloseWatch, forced: asyncio.Event
) -> Resumed:
    """What a client does on 1013: reconnect at once with its last cursor (here the cursor of
    its connected frame, the last frame it read)."""
    await watch.closed.wait()
    stalled.resume()
    assert stalled.cursor is not None
    path = "/ws?after=" + quote(stalled.cursor, safe="")
    began = time.time()
    try:
        [receiver] = await open_sockets(server.port, path, server.url, server.cookie, 1, True)
    except BenchError as error:
        return Resumed(None, began, time.time(), forced.is_set(), str(error))
    return Resumed(receiver, began, time.time(), forced.is_set())


@dataclass
class StalledResult:
    phase: Phase
    rcvbuf_granted: int
    stalled: StalledReceiver
    resumed: Resumed
    resumed_delivery: Delivery | None
    resumed_complete: bool
    frame_bytes: dict[int, int]
    closed_at: float | None
    """When the close was seen in /metrics; None when it never came within the phase."""
    while_stalled: dict[str, float]
    """Active sockets' latency for messages committed from the stall to the close."""
    after_close: dict[str, float]
    """... and for those committed after it (while the resumed socket replays and goes live)."""
    during_replay: dict[str, float]
    """... and for those committed from the reconnect to the last replayed frame's arrival."""


async def stalled_phase(
    server: Server,
    conn: psycopg.Connection[Any],
    receivers: list[Receiver],
    args: argparse.Namespace,
    meter: Meter,
) -> StalledResult:
    stalled, granted, client_port = await open_stalled(
        server.port, server.url, server.cookie, args.rcvbuf, args.mss
    )
    baseline = (await fetch_metrics(server.http, server.url)).get(SLOW_CLOSES, 0.0)
    watch = CloseWatch(baseline=baseline, stalled_ports=(server.port, client_port))
    forced = asyncio.Event()
    follower = asyncio.create_task(resume_after_close(server, stalled, watch, forced))
    resumed: Resumed | None = None
    try:
        phase = await steady_phase(
            "B", server, conn, receivers, args, meter, until_closed(args, watch), watch
        )
        if not watch.closed.is_set():
            # Never closed as slow within the phase. If pgcast let go of it some other way,
            # read what it still sends; else drop it. Either way the resume is still checked.
            forced.set()
            if watch.dropped_at is None:
                stalled.abort()
            watch.closed.set()
        resumed = await follower
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stalled.lost.wait(), STALLED_CLOSE_WAIT)
        delivery, complete = None, False
        if resumed.receiver is not None:
            expected = len(phase.writes.ids)
            limit = SETTLE_TIMEOUT + expected / 1000
            complete = await wait_for_all([resumed.receiver], expected, limit)
            delivery = check_delivery([resumed.receiver], phase.writes.ids)
    finally:
        if not follower.done():
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        stalled.abort()
        if resumed is not None and resumed.receiver is not None:
            await close_sockets([resumed.receiver])
    sizes = {}
    if receivers:
        for found, text in zip(receivers[0].ids, receivers[0].texts, strict=True):
            sizes[found] = len(text.encode()) + FRAME_HEADER_BYTES
    closed_at = None if resumed.forced else watch.detected_at
    began = stalled.stalled_at if stalled.stalled_at is not None else -math.inf
    end = closed_at if closed_at is not None else math.inf
    replay_end = replay_done_at(resumed, phase.writes)
    return StalledResult(
        phase=phase,
        rcvbuf_granted=granted,
        stalled=stalled,
        resumed=resumed,
        resumed_delivery=delivery,
        resumed_complete=complete,
        frame_bytes=sizes,
        closed_at=closed_at,
        while_stalled=summarize_ms(latencies(receivers, phase.writes, began, end)),
        after_close=summarize_ms(latencies(receivers, phase.writes, end)),
        during_replay=summarize_ms(
            latencies(receivers, phase.writes, resumed.began_at, replay_end)
            if replay_end is not None
            else []
        ),
    )


def replay_done_at(resumed: Resumed, writes: SteadyWrites) -> float | None:
    """When the resumed socket received the last message committed before it reconnected."""
    if resumed.receiver is None:
        return None
    replayed = [i for i in writes.ids if writes.committed[i] < resumed.began_at]
    got = dict(zip(resumed.receiver.ids, resumed.receiver.times, strict=True))
    return got.get(replayed[-1]) if replayed else None


def until_closed(args: argparse.Namespace, watch: CloseWatch) -> NextChunk:
    """At least args.seconds; then on until the close was seen and POST_CLOSE_SECONDS more
    have passed (the replay and its seam with live delivery), or until the connection went
    away without it, or args.max_stall_seconds."""
    base = for_seconds(args, args.seconds)
    rate: float = args.rate
    per_chunk = max(1, round(rate))

    def next_chunk(written: int, elapsed: float) -> int:
        minimum = base(written, elapsed)
        if minimum > 0:
            return minimum
        if watch.detected_at is not None:
            left = POST_CLOSE_SECONDS - (time.time() - watch.detected_at)
            return min(per_chunk, math.ceil(left * rate)) if left > 0 else 0
        gone = watch.vanished_at is not None or watch.dropped_at is not None
        if gone or elapsed >= args.max_stall_seconds:
            return 0
        return per_chunk

    return next_chunk


# --------------------------------------------------------------------------------------------
# The run


async def _bench(
    args: argparse.Namespace, conninfo: str, workdir: Path, postmaster: psutil.Process | None
) -> dict[str, Any]:
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = pgcast_env(conninfo, workdir / "server-data", port)
    env["PGCAST_SOCKET_BACKLOG_BYTES"] = str(args.backlog_bytes)
    process = await ServerProcess.start(
        "pgcast serve", [sys.executable, "-m", "server", "serve", "--no-migrate"], env
    )
    conn: psycopg.Connection[Any] | None = None
    receivers: list[Receiver] = []
    try:
        await process.wait_ready(url + "/readyz")
        meter = Meter.for_server(process.pid, postmaster)
        conn = await asyncio.to_thread(connect_writer, conninfo)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            user_id, cookie = await sign_in(http, url)
            server = Server(port, url, cookie, user_id, http, process)
            receivers = await open_sockets(port, "/ws", url, cookie, args.sockets, True)
            warmup = await steady_phase(
                "warm-up",
                server,
                conn,
                receivers,
                args,
                meter,
                for_seconds(args, WARMUP_SECONDS),
                CloseWatch(0.0, stalled_ports=(port, 0)),
            )
            phase_a = await steady_phase(
                "A",
                server,
                conn,
                receivers,
                args,
                meter,
                for_seconds(args, args.seconds),
                CloseWatch(0.0, stalled_ports=(port, 0)),
            )
            stalled = await stalled_phase(server, conn, receivers, args, meter)
            await close_sockets(receivers)
            receivers = []
    finally:
        await close_sockets(receivers)
        if conn is not None:
            await asyncio.to_thread(conn.close)
        await process.stop()
    return summarize(args, warmup, phase_a, stalled, process)


def summarize(
    args: argparse.Namespace,
    warmup: Phase,
    phase_a: Phase,
    result: StalledResult,
    process: ServerProcess,
) -> dict[str, Any]:
    phase_b, stalled, resumed = result.phase, result.stalled, result.resumed
    watch, writes, closed_at = phase_b.watch, phase_b.writes, result.closed_at
    problems: list[str] = []
    notes = usage_notes([("phase A", phase_a.usage), ("phase B", phase_b.usage)])
    for phase in (warmup, phase_a, phase_b):
        if not phase.delivery.ok:
            problems.append(
                f"{phase.name}: the reading sockets' delivery FAILED: {phase.delivery.describe()}"
            )
            problems.extend(f"{phase.name}: {sample}" for sample in phase.delivery.samples)

    # The close: when, after how many messages and bytes of frames.
    frame_mean = (
        sum(result.frame_bytes.values()) / len(result.frame_bytes)
        if result.frame_bytes
        else math.nan
    )

    def frame_bytes(ids: Sequence[int]) -> float:
        return float(sum(result.frame_bytes.get(i, frame_mean) for i in ids))

    before_close: list[int] = []
    surely_before: list[int] = []
    if closed_at is not None:
        before_close = [i for i in writes.ids if writes.committed[i] <= closed_at]
        clear = watch.last_clear_at if watch.last_clear_at is not None else -math.inf
        surely_before = [i for i in before_close if writes.committed[i] <= clear]
    elif watch.dropped_at is not None:
        still_open = (
            "its TCP connection was still open, with "
            f"{_kib(watch.kernel_last)} in the kernel's queues"
            if watch.vanished_at is None and watch.kernel_last is not None
            else "its TCP connection was gone"
        )
        problems.append(
            "pgcast dropped the stalled socket without a 1013 "
            f"{watch.dropped_at - (stalled.stalled_at or math.nan):.1f} s into the stall "
            f"(pgcast_sockets_connected fell, no slow close counted); at the end of phase B "
            f"{still_open}"
        )
    elif watch.vanished_at is not None:
        problems.append(
            "the stalled connection was closed, but not as a slow socket (no 1013 counted), "
            f"{watch.vanished_at - (stalled.stalled_at or math.nan):.1f} s into the stall"
        )
    else:
        problems.append(
            f"the stalled socket was not closed within phase B ({len(writes.ids)} messages, "
            f"{frame_bytes(writes.ids) / 2**20:.2f} MiB of frames, "
            f"{phase_b.writes.seconds:.0f} s; PGCAST_SOCKET_BACKLOG_BYTES={args.backlog_bytes})"
        )
    if watch.closes > 1:
        problems.append(f"{watch.closes:.0f} sockets were closed as slow in phase B, expected 1")
    if phase_a.watch.closes or warmup.watch.closes:
        problems.append("a reading socket was closed as slow before the stalled one connected")

    # What the stalled client could still read once it read again after the close.
    readable = list(stalled.ids)
    if readable != writes.ids[: len(readable)]:
        problems.append(
            "what was buffered for the stalled socket is not the first messages of phase B in "
            f"order: {readable[:5]}..."
        )
    if closed_at is not None and stalled.close_code not in (1013, None):
        problems.append(f"the stalled socket was closed with {stalled.close_code}, expected 1013")
    if stalled.other_frames:
        problems.append(f"the stalled socket got unexpected frames: {stalled.other_samples}")

    # The resume.
    replayed = [i for i in writes.ids if writes.committed[i] < resumed.began_at]
    replay_end = replay_done_at(resumed, writes)
    replay_ms = 1000 * (replay_end - resumed.began_at) if replay_end is not None else math.nan
    receiver = resumed.receiver
    if receiver is None:
        problems.append(f"reconnecting with the stalled socket's cursor failed: {resumed.error}")
    else:
        delivery = result.resumed_delivery
        if delivery is not None and not delivery.ok:
            problems.append(f"the resumed socket's delivery FAILED: {delivery.describe()}")
            problems.extend(f"resumed: {sample}" for sample in delivery.samples)
        if not result.resumed_complete:
            problems.append(
                f"the resumed socket got {len(receiver.ids)} of {len(writes.ids)} messages"
            )
    if process.exit_code != 0:
        problems.append(f"pgcast serve exited with {process.exit_code}")

    # Did the stalled socket slow the others?
    a_p99, b_p99 = phase_a.latency["p99"], phase_b.latency["p99"]
    ratio = b_p99 / a_p99 if a_p99 > 0 else math.nan
    if ratio > SLOWED_RATIO and b_p99 - a_p99 > SLOWED_EXTRA_MS:
        notes.append(
            f"p99 with the stalled socket is {ratio:.2f}x the p99 without ({b_p99:.1f} vs "
            f"{a_p99:.1f} ms): it may have slowed the others; rerun to tell it from noise"
        )
    if process.warning_count:
        notes.extend(f"server log: {line}" for line in process.warnings[:3])
    stall_began = stalled.stalled_at if stalled.stalled_at is not None else math.nan
    return {
        "_args": args,
        "_phase_a": phase_a,
        "_result": result,
        "latency_without_ms": phase_a.latency,
        "latency_with_ms": phase_b.latency,
        "latency_while_stalled_ms": result.while_stalled,
        "latency_after_close_ms": result.after_close,
        "latency_during_replay_ms": result.during_replay,
        "slow_wakeups": {"A": slow_wakeups(phase_a.metrics), "B": slow_wakeups(phase_b.metrics)},
        "p99_ratio": ratio,
        "commit_rtt_ms": {
            "A": summarize_ms(phase_a.writes.commit_rtts),
            "B": summarize_ms(writes.commit_rtts),
        },
        "achieved_rate": {"A": phase_a.achieved_rate, "B": phase_b.achieved_rate},
        "usage": {"A": _usage_dict(phase_a.usage), "B": _usage_dict(phase_b.usage)},
        "delivery": {
            "warm-up": _delivery_dict(warmup.delivery),
            "A": _delivery_dict(phase_a.delivery),
            "B": _delivery_dict(phase_b.delivery),
        },
        "frame_bytes_mean": frame_mean,
        "stalled_rcvbuf_granted": result.rcvbuf_granted,
        "stalled_closed": closed_at is not None,
        "stalled_closed_after_s": (closed_at - stall_began if closed_at is not None else math.nan),
        "close_poll_window_s": (
            closed_at - watch.last_clear_at
            if closed_at is not None and watch.last_clear_at is not None
            else math.nan
        ),
        "messages_before_close": len(before_close) if closed_at is not None else None,
        "messages_surely_before_close": len(surely_before) if closed_at is not None else None,
        "bytes_before_close": frame_bytes(before_close) if closed_at is not None else None,
        "stalled_kernel_queued_bytes": watch.kernel_queued,
        "stalled_readable_messages": len(readable),
        "stalled_readable_bytes": frame_bytes(readable),
        "stalled_close_code": stalled.close_code,
        "stalled_close_reason": stalled.close_reason,
        "resume_forced": resumed.forced,
        "replayed_messages": len(replayed) if receiver is not None else None,
        "replay_ms": replay_ms,
        "resumed_messages": len(receiver.ids) if receiver is not None else 0,
        "resumed_expected": len(writes.ids),
        "resumed_delivery": (
            _delivery_dict(result.resumed_delivery) if result.resumed_delivery else None
        ),
        "metrics": {"A": phase_a.metrics, "B": phase_b.metrics},
        "metric_polls": {"A": phase_a.watch.polls, "B": watch.polls},
        "slow_closes": watch.closes,
        "server_warnings": process.warning_count,
        "server_warning_samples": process.warnings,
        "pgcast_exit_code": process.exit_code,
        "problems": problems,
        "notes": notes,
    }


# --------------------------------------------------------------------------------------------
# Report


def slow_wakeups(metrics: dict[str, float]) -> list[int]:
    """From pgcast_notify_to_send_seconds: socket wake-ups slower than each of
    SLOW_WAKEUP_BUCKETS (server-side, so the load generator's own delays are not in it)."""
    total = metrics.get(f'{NOTIFY_TO_SEND}_bucket{{le="+Inf"}}', 0.0)
    return [
        round(total - metrics.get(f'{NOTIFY_TO_SEND}_bucket{{le="{bound}"}}', total))
        for bound in SLOW_WAKEUP_BUCKETS
    ]


def _ms(summary: dict[str, float], *keys: str) -> str:
    text = " / ".join(f"{summary[k]:.1f}" for k in keys)
    return f"{text} ({int(summary['count'])} pairs)" if "count" in summary else text


def _kib(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value / 1024:,.0f} KiB"


def render_report(result: dict[str, Any]) -> str:
    args: argparse.Namespace = result["_args"]
    phase_a: Phase = result["_phase_a"]
    detail: StalledResult = result["_result"]
    phase_b, stalled = detail.phase, detail.stalled
    a, b = result["latency_without_ms"], result["latency_with_ms"]
    if result["stalled_closed"]:
        closed = (
            f"**after {result['stalled_closed_after_s']:.2f} s stalled, "
            f"{result['messages_surely_before_close']} to {result['messages_before_close']} "
            "messages committed** (the close lies between two polls "
            f"{1000 * result['close_poll_window_s']:.0f} ms apart): "
            f"{_kib(result['bytes_before_close'])} of frames, against a bound of "
            f"{_kib(args.backlog_bytes)}"
        )
    elif detail.phase.watch.dropped_at is not None:
        closed = (
            "**NOT CLOSED as slow**: pgcast let go of it without a 1013 (see the problems); "
            "it then read what was still sent to it"
        )
    else:
        closed = "**NOT CLOSED** within the phase (the bench dropped it to check the resume)"
    code = stalled.close_code
    seen_close = (
        f"close frame {code} `{stalled.close_reason}`"
        if code is not None
        else f"no close frame ({stalled.close_reason or 'connection closed'})"
    )
    if result["stalled_closed"]:
        count = result["messages_before_close"] - result["stalled_readable_messages"]
        queued = result["bytes_before_close"] - result["stalled_readable_bytes"]
        dropped = f"at most {count} messages, {_kib(queued)}"
    else:
        dropped = "n/a"
    resumed_delivery = result["resumed_delivery"]
    resume_check = (
        "ok"
        if resumed_delivery is not None and resumed_delivery["ok"] and detail.resumed_complete
        else "FAIL"
    )
    if resumed_delivery is not None:
        resume_check += (
            f" ({result['resumed_messages']} of {result['resumed_expected']} received; losses "
            f"{resumed_delivery['losses']}, duplicates {resumed_delivery['duplicates']}, "
            f"out of order {resumed_delivery['out_of_order']}, "
            f"unexpected {resumed_delivery['unexpected']})"
        )
    replay = (
        f"{result['replayed_messages']} messages replayed (committed before the reconnect), "
        f"the last of them {result['replay_ms']:.0f} ms after reconnecting; the rest live"
        if result["replayed_messages"] is not None
        else "reconnect failed"
    )
    metrics_b = phase_b.metrics
    rows = [
        (
            "setup",
            f"{args.sockets} reading sockets + 1 stalled, 1 user, {args.content_chars}-char "
            f"messages ({result['frame_bytes_mean']:,.0f}-byte frames), "
            f"PGCAST_SOCKET_BACKLOG_BYTES={args.backlog_bytes}, stalled client: SO_RCVBUF "
            f"{args.rcvbuf} (granted {result['stalled_rcvbuf_granted']}), MSS "
            f"{args.mss or 'loopback'}; {result['cpus']} CPUs, "
            f"database: {result['database']}, load average at start "
            f"{result['load_average']:.1f}",
        ),
        (
            "messages A / B (B lasts until the close + 2 s), target / achieved rate A / B",
            f"{len(phase_a.writes.ids)} in {phase_a.writes.seconds:.1f} s / "
            f"{len(phase_b.writes.ids)} in {phase_b.writes.seconds:.1f} s, "
            f"{args.rate:.0f} / {phase_a.achieved_rate:.0f} / {phase_b.achieved_rate:.0f} msg/s",
        ),
        (
            "**A: commit→socket p50 / p99 / p99.9 / max (ms), no stalled socket**",
            _ms(a, "p50", "p99", "p99.9", "max"),
        ),
        (
            "**B: commit→socket p50 / p99 / p99.9 / max (ms), one stalled socket**",
            _ms(b, "p50", "p99", "p99.9", "max"),
        ),
        (
            "B, messages committed while it was stalled, p50 / p99 / max (ms)",
            _ms(result["latency_while_stalled_ms"], "p50", "p99", "max"),
        ),
        (
            "B, messages committed after its close (replay + live), p50 / p99 / max (ms)",
            _ms(result["latency_after_close_ms"], "p50", "p99", "max"),
        ),
        (
            "B, of those, committed during the resumed socket's replay, p50 / p99 / max (ms)",
            _ms(result["latency_during_replay_ms"], "p50", "p99", "max"),
        ),
        ("**p99 with / without the stalled socket**", f"**{result['p99_ratio']:.2f}**"),
        (
            "COMMIT round trip p99 A / B (ms)",
            " / ".join(f"{result['commit_rtt_ms'][k]['p99']:.1f}" for k in ("A", "B")),
        ),
        ("phase A CPU (% of one core)", _cpu(phase_a.usage, "server", "postgres", "loadgen")),
        ("phase B CPU (% of one core)", _cpu(phase_b.usage, "server", "postgres", "loadgen")),
        (
            "server peak RSS A / B (MB)",
            " / ".join(f"{p.usage.peak_rss_mb['server']:.0f}" for p in (phase_a, phase_b)),
        ),
        (
            "notify→send mean A / B (ms, server metric)",
            f"{_notify_to_send_ms(phase_a.metrics)} / {_notify_to_send_ms(metrics_b)}",
        ),
        (
            "socket wake-ups with notify→send over "
            + " / ".join(f"{1000 * b:.0f}" for b in SLOW_WAKEUP_BUCKETS)
            + " ms, A / B (server metric)",
            " ; ".join(" / ".join(str(n) for n in result["slow_wakeups"][k]) for k in ("A", "B")),
        ),
        ("**stalled socket closed (pgcast_slow_sockets_closed_total = 1)**", closed),
        (
            "largest kernel queues of the stalled connection before the close "
            "(server send + client receive)",
            _kib(result["stalled_kernel_queued_bytes"]),
        ),
        (
            "what the stalled client could still read after the close (kernel + aiohttp buffers)",
            f"{result['stalled_readable_messages']} messages "
            f"({_kib(result['stalled_readable_bytes'])}), then {seen_close}",
        ),
        (
            "left in pgcast's own queue at the close (dropped, replayed on resume)",
            dropped,
        ),
        ("**reconnect with `?after=<connected cursor>`**", replay),
        ("**resumed socket: every message of phase B, exactly once, in order**", resume_check),
        (
            "delivery check to the reading sockets warm-up / A / B",
            " / ".join(
                "ok" if d["ok"] else "FAIL"
                for d in (result["delivery"][k] for k in ("warm-up", "A", "B"))
            ),
        ),
        (
            "slow-socket closes in B; /metrics polls A / B",
            f"{result['slow_closes']:.0f}; {result['metric_polls']['A']} / "
            f"{result['metric_polls']['B']}",
        ),
        (
            "server log warnings/errors; exit code",
            f"{result['server_warnings']}; {result['pgcast_exit_code']}",
        ),
    ]
    lines = [
        f"## pgcast slow-consumer bench, {result['timestamp']}",
        "",
        f"`{result['command']}`",
        "",
        "| figure | value |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    return finish_report(lines, result)


# --------------------------------------------------------------------------------------------
# Entry points


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/slow_consumer.py",
        description="Does a client that stops reading slow the others, and does it lose anything?",
    )
    parser.add_argument(
        "--sockets", type=int, help=f"reading sockets (default {DEFAULTS['sockets']})"
    )
    parser.add_argument(
        "--rate", type=float, help=f"messages/s in each phase (default {DEFAULTS['rate']:.0f})"
    )
    parser.add_argument(
        "--seconds", type=float, help=f"length of each phase (default {DEFAULTS['seconds']:.0f})"
    )
    parser.add_argument(
        "--content-chars",
        type=int,
        help=f"message length (default {DEFAULTS['content_chars']})",
    )
    parser.add_argument(
        "--backlog-bytes",
        type=int,
        help=f"PGCAST_SOCKET_BACKLOG_BYTES for the server (default {DEFAULTS['backlog_bytes']})",
    )
    parser.add_argument(
        "--rcvbuf",
        type=int,
        default=STALLED_RCVBUF,
        help=f"SO_RCVBUF the stalled client asks for (default {STALLED_RCVBUF})",
    )
    parser.add_argument(
        "--mss",
        type=int,
        default=STALLED_MSS,
        help=f"TCP MSS the stalled client announces (default {STALLED_MSS}, as on Ethernet; "
        "0: loopback's own, with which Linux buffers up to 4 MiB for it in the kernel)",
    )
    parser.add_argument(
        "--max-stall-seconds",
        type=float,
        default=MAX_STALL_SECONDS,
        help="phase B goes on past --seconds until the close, at most this long "
        f"(default {MAX_STALL_SECONDS:.0f}; pgcast's heartbeat drops a silent socket at 45)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few seconds: 5 sockets, 2 s phases, a 64 KiB bound (explicit options still win)",
    )
    add_report_options(parser)
    args = parser.parse_args(argv)
    settle_options(
        parser, args, SMOKE if args.smoke else DEFAULTS, ("sockets", "content_chars", "rcvbuf")
    )
    if args.mss and not 88 <= args.mss <= 65535:
        parser.error("--mss must be 0 or between 88 and 65535")
    if args.max_stall_seconds < args.seconds:
        args.max_stall_seconds = args.seconds
    if not BACKLOG_LOW <= args.backlog_bytes <= BACKLOG_HIGH:
        parser.error(f"--backlog-bytes must be between {BACKLOG_LOW} and {BACKLOG_HIGH}")
    if not args.rate > 0 or not args.seconds > 0:
        parser.error("--rate and --seconds must be more than 0")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark once; every figure in a dict. `problems` is empty when every check
    passed. Raises bench.quick.BenchError when it cannot run."""
    return run_bench(args, "slow", _bench, render_report)


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
