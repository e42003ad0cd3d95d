"""Idle sockets: what an idle WebSocket costs pgcast, and one broadcast reaching all of them.

    .venv/bin/python bench/idle_sockets.py [--sockets 1000,5000] [--batch 200] [--smoke]

For each socket count S (a fresh `pgcast serve` each, on one migrated database):

1. Warm-up: one socket connects and gets one message (lazy imports and caches are done),
   then closes. The server's RSS is read: "before".
2. S sockets of one signed-in user connect, `--batch` handshakes at a time, and each gets
   its `connected` frame. The server's RSS is read again: "after". Memory per idle socket is
   (after - before) / S.
3. /readyz must answer 200 and count S sockets.
4. One INSERT by SQL: every socket must get it exactly once. Reported: commit -> first and
   last socket, and the CPU the server and the load generator used for it. A second INSERT
   follows, for comparison: the first broadcast after sockets connect costs pgcast more.

It reuses bench/quick.py (database, server process, sign-in, the `Receiver` client) and
bench/README.md explains every figure. `run(parse_args([...]))` returns them as a dict;
`problems` is empty when every count was reached and every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import psycopg

# Run as a script, only bench/ is on sys.path: make the repository's `bench` package importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.quick import (
    CONNECT_TIMEOUT,
    HOST,
    BenchError,
    Delivery,
    Receiver,
    ServerProcess,
    _delivery_dict,
    _raise_open_file_limit,
    add_report_options,
    bench_database,
    bench_main,
    check_delivery,
    close_sockets,
    connect_writer,
    fetch_metrics,
    finish_report,
    free_port,
    open_sockets,
    pgcast_env,
    run_load_generator,
    save_report,
    sign_in,
    try_open_sockets,
    wait_delivered,
    write_steadily,
)

DEFAULT_SOCKETS = (1000, 5000)
SMOKE_SOCKETS = (50,)
DEFAULT_BATCH = 200
CONTENT_CHARS = 100
# File descriptors a process needs besides its sockets (libraries, the database, logs).
FD_HEADROOM = 100
RSS_SETTLE_SECONDS = 5.0
RSS_SAMPLE_INTERVAL = 0.2
RSS_STABLE_BYTES = 64 * 1024
BROADCAST_TIMEOUT = 30.0
BROADCASTS = 2
# After every socket has its frame, wait this long for a duplicate before judging.
DUPLICATE_GRACE_SECONDS = 0.5
READYZ_TIMEOUT = 10.0
HEALTH_PROBE_INTERVAL = 0.1
LOG_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")


# --------------------------------------------------------------------------------------------
# What the kernel says about processes and sockets


@dataclass(frozen=True)
class FileLimit:
    soft: str
    hard: str

    def __str__(self) -> str:
        return f"{self.soft} / {self.hard}"

    @property
    def soft_number(self) -> float:
        return math.inf if self.soft == "unlimited" else float(self.soft)


def open_files_limit(pid: int) -> FileLimit:
    """`Max open files` from /proc/<pid>/limits (what the process really has)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return FileLimit(soft, hard)
    raise BenchError(f"no 'Max open files' line in /proc/{pid}/limits")


def own_open_files_limit() -> FileLimit:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return FileLimit(
        *("unlimited" if v == resource.RLIM_INFINITY else str(v) for v in (soft, hard))
    )


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of a process, in ns resolution from schedstat when the kernel
    keeps it (psutil's figure moves in 10 ms ticks, coarse for one broadcast)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
    except OSError:
        total = 0
    if total > 0:
        return total / 1e9
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def tcp_listen_counters() -> dict[str, int]:
    """TcpExt counters of this network namespace: accept-queue overflows and drops."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return {
                name: int(table.get(name, 0))
                for name in ("ListenOverflows", "ListenDrops", "TCPReqQFullDrop")
            }
    return {}


def listen_backlog(port: int) -> int | None:
    """The accept-queue length the server listens with (`ss -ltn`: Send-Q of a listener)."""
    ss = shutil.which("ss")
    if ss is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError, IndexError):
        output = subprocess.run(
            [ss, "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=5
        ).stdout
        return int(output.split()[2])
    return None


def read_int(path: str) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(Path(path).read_text().split()[0])
    return None


def ephemeral_ports() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return high - low + 1
    return None


async def settled_rss(process: psutil.Process) -> int:
    """RSS once it stops moving (two samples within 64 KiB), at most RSS_SETTLE_SECONDS."""
    previous = int(process.memory_info().rss)
    deadline = time.monotonic() + RSS_SETTLE_SECONDS
    while time.monotonic() < deadline:
        await asyncio.sleep(RSS_SAMPLE_INTERVAL)
        current = int(process.memory_info().rss)
        if abs(current - previous) < RSS_STABLE_BYTES:
            return current
        previous = current
    return previous


# --------------------------------------------------------------------------------------------
# One socket count


def describe_error(error: BaseException) -> str:
    """A socket's failure, without its index, so equal causes count together."""
    if isinstance(error, TimeoutError):
        return f"no `connected` frame from the server within {CONNECT_TIMEOUT:.0f} s"
    if isinstance(error, OSError):
        # EMFILE/ENFILE come from this process's own socket() call; the rest from the peer.
        side = "load generator: " if error.errno in (errno.EMFILE, errno.ENFILE) else ""
        return f"{side}{type(error).__name__} errno {error.errno}: {error.strerror}"
    text = str(error)
    if text.startswith("socket ") and ": " in text:
        text = text.split(": ", 1)[1]
    return f"{type(error).__name__}: {text}"


@dataclass
class Readiness:
    status: int
    sockets: int | None
    milliseconds: float
    body: str

    def __str__(self) -> str:
        return f"{self.status}, sockets={self.sockets}, {self.milliseconds:.1f} ms"


async def check_ready(http: aiohttp.ClientSession, url: str) -> Readiness:
    """GET /readyz: its status, the socket count it reports, and how long it took."""
    began = time.monotonic()
    try:
        async with asyncio.timeout(READYZ_TIMEOUT), http.get(url + "/readyz") as response:
            status, body = response.status, await response.text()
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        return Readiness(0, None, 1000 * (time.monotonic() - began), repr(error))
    elapsed_ms = 1000 * (time.monotonic() - began)
    sockets: int | None = None
    with contextlib.suppress(ValueError, KeyError, TypeError):
        found = json.loads(body)["checks"]["sockets"]
        sockets = found if isinstance(found, int) else None
    return Readiness(status, sockets, elapsed_ms, body[:300])


class HealthProbe:
    """GET /healthz every 100 ms while sockets connect: is the server still answering, and
    how long does it make a plain request wait (handshakes, garbage collection)?"""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self._http = http
        self._url = url + "/healthz"
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.milliseconds: list[float] = []
        self.failures: Counter[str] = Counter()

    def start(self) -> None:
        self._task = asyncio.create_task(self._probe())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _probe(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                async with (
                    asyncio.timeout(READYZ_TIMEOUT),
                    self._http.get(self._url) as response,
                ):
                    await response.read()
                    if response.status != 200:
                        self.failures[f"HTTP {response.status}"] += 1
                self.milliseconds.append(1000 * (time.monotonic() - began))
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                self.failures[type(error).__name__] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), HEALTH_PROBE_INTERVAL)

    def __str__(self) -> str:
        if not self.milliseconds:
            return f"no answer ({dict(self.failures)})"
        ordered = sorted(self.milliseconds)
        text = (
            f"{len(ordered)} probes, median {ordered[len(ordered) // 2]:.1f} ms, "
            f"max {ordered[-1]:.1f} ms"
        )
        if self.failures:
            text += f", failed: {dict(self.failures)}"
        return text


@dataclass
class Broadcast:
    delivery: Delivery
    completed: bool
    first_ms: float
    last_ms: float
    server_cpu_ms: float
    loadgen_cpu_ms: float

    @property
    def ok(self) -> bool:
        return self.completed and self.delivery.ok


@dataclass
class CountResult:
    target: int
    server_limit: FileLimit
    backlog: int | None
    opened: int = 0
    open_seconds: float = math.nan
    open_errors: Counter[str] = field(default_factory=Counter)
    stop_reason: str = ""
    listen_counters: dict[str, int] = field(default_factory=dict)
    health: str = "n/a"
    rss_before: int = 0
    rss_after: int = 0
    rss_after_broadcasts: int = 0
    fds_before: int = 0
    fds_after: int = 0
    ready: Readiness | None = None
    ready_after_broadcasts: Readiness | None = None
    sockets_metric: float = math.nan
    broadcasts: list[Broadcast] = field(default_factory=list)
    exit_code: int | None = None
    warnings: int = 0
    warning_samples: list[str] = field(default_factory=list)

    @property
    def kib_per_socket(self) -> float:
        if not self.opened:
            return math.nan
        return (self.rss_after - self.rss_before) / self.opened / 1024


async def open_in_batches(
    port: int, url: str, cookie: str, count: int, batch: int, result: CountResult
) -> list[Receiver]:
    """`count` sockets, `batch` handshakes at a time; stops after the first batch with a
    failure and records why (errors grouped by cause, accept-queue counters)."""
    receivers: list[Receiver] = []
    counters = tcp_listen_counters()
    began = time.monotonic()
    for start in range(0, count, batch):
        size = min(batch, count - start)
        opened, errors = await try_open_sockets(
            port, "/ws", url, cookie, size, True, concurrency=size, first_index=start
        )
        receivers.extend(opened)
        if errors:
            result.open_errors.update(describe_error(error) for error in errors)
            result.stop_reason = (
                f"batch {start // batch + 1} lost {len(errors)} of {size}: "
                + "; ".join(f"{n}x {cause}" for cause, n in result.open_errors.most_common(3))
            )
            break
    result.open_seconds = time.monotonic() - began
    result.opened = len(receivers)
    after = tcp_listen_counters()
    result.listen_counters = {name: after[name] - counters.get(name, 0) for name in after}
    return receivers


async def broadcast_once(
    conninfo: str, user_id: int, receivers: list[Receiver], server_pid: int
) -> Broadcast:
    """One INSERT by SQL (one transaction); every socket must get it exactly once."""
    for receiver in receivers:
        receiver.start_phase(1)
    writer = await asyncio.to_thread(connect_writer, conninfo)
    try:
        server_cpu, own_cpu = cpu_seconds(server_pid), cpu_seconds(os.getpid())
        writes = await asyncio.to_thread(write_steadily, writer, user_id, 1, 1.0, CONTENT_CHARS)
        completed = await wait_delivered(receivers, BROADCAST_TIMEOUT)
        server_used = cpu_seconds(server_pid) - server_cpu
        own_used = cpu_seconds(os.getpid()) - own_cpu
        # A duplicate would come right after the first copy.
        await asyncio.sleep(DUPLICATE_GRACE_SECONDS)
    finally:
        await asyncio.to_thread(writer.close)
    committed = writes.committed[writes.ids[0]]
    arrivals = [r.times[0] - committed for r in receivers if r.times]
    return Broadcast(
        delivery=check_delivery(receivers, writes.ids),
        completed=completed,
        first_ms=1000 * min(arrivals) if arrivals else math.nan,
        last_ms=1000 * max(arrivals) if arrivals else math.nan,
        server_cpu_ms=1000 * server_used,
        loadgen_cpu_ms=1000 * own_used,
    )


async def warm_up(
    conninfo: str, user_id: int, port: int, url: str, cookie: str, server_pid: int
) -> None:
    """One socket, one message: lazy imports and first-use caches are paid before 'before'."""
    receivers = await open_sockets(port, "/ws", url, cookie, 1, True)
    try:
        warm = await broadcast_once(conninfo, user_id, receivers, server_pid)
    finally:
        await close_sockets(receivers)
    if not warm.ok:
        raise BenchError(f"warm-up message not delivered: {warm.delivery.describe()}")


async def measure_count(
    conninfo: str, workdir: Path, count: int, batch: int, index: int
) -> CountResult:
    """A fresh `pgcast serve`: RSS before and with `count` idle sockets, then broadcasts."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    server = await ServerProcess.start(
        "pgcast serve",
        [sys.executable, "-m", "server", "serve", "--no-migrate"],
        pgcast_env(conninfo, workdir / f"server-data-{index}", port),
    )
    try:
        await server.wait_ready(url + "/readyz")
        process = psutil.Process(server.pid)
        result = CountResult(count, open_files_limit(server.pid), listen_backlog(port))
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            user_id, cookie = await sign_in(http, url)
            await warm_up(conninfo, user_id, port, url, cookie, server.pid)
            await fetch_metrics(http, url)
            result.rss_before = await settled_rss(process)
            result.fds_before = process.num_fds()
            receivers: list[Receiver] = []
            probe = HealthProbe(http, url)
            try:
                probe.start()
                try:
                    receivers = await open_in_batches(port, url, cookie, count, batch, result)
                finally:
                    await probe.stop()
                result.health = str(probe)
                result.rss_after = await settled_rss(process)
                result.fds_after = process.num_fds()
                result.ready = await check_ready(http, url)
                metrics = await fetch_metrics(http, url)
                result.sockets_metric = metrics.get("pgcast_sockets_connected", math.nan)
                for _ in range(BROADCASTS if receivers else 0):
                    result.broadcasts.append(
                        await broadcast_once(conninfo, user_id, receivers, server.pid)
                    )
                result.rss_after_broadcasts = int(process.memory_info().rss)
                result.ready_after_broadcasts = await check_ready(http, url)
            finally:
                await close_sockets(receivers)
    except psutil.Error as error:
        tail = "\n".join(server.tail)
        raise BenchError(f"pgcast serve went away ({error!r}); its log ends:\n{tail}") from None
    finally:
        await server.stop()
    result.exit_code = server.exit_code
    result.warnings = server.warning_count
    result.warning_samples = server.warnings
    return result


def distinct(log_lines: Sequence[str]) -> list[str]:
    """Log lines without their timestamps, each once (a failing accept() repeats itself)."""
    seen: dict[str, None] = {}
    for line in log_lines:
        message = LOG_TIMESTAMP.sub("", line)
        if not message.startswith("Traceback"):
            seen.setdefault(message, None)
    return list(seen)


def count_problems(result: CountResult) -> list[str]:
    label = f"{result.target:,} sockets"
    problems: list[str] = []
    if result.opened < result.target:
        problems.append(
            f"{label}: only {result.opened:,} opened ({result.stop_reason}); server: "
            f"{result.fds_after} open fds, `Max open files` {result.server_limit}; "
            f"load generator: `Max open files` {own_open_files_limit()}"
        )
        problems.extend(f"{label}: server log: {line}" for line in distinct(result.warning_samples))
    for number, broadcast in enumerate(result.broadcasts, start=1):
        if not broadcast.delivery.ok:
            problems.append(
                f"{label}: broadcast {number} delivery FAILED: {broadcast.delivery.describe()}"
            )
            problems.extend(f"{label}: {sample}" for sample in broadcast.delivery.samples)
        elif not broadcast.completed:
            problems.append(
                f"{label}: broadcast {number} not delivered within {BROADCAST_TIMEOUT:.0f} s"
            )
    for when, ready in (
        ("", result.ready),
        (" after the broadcasts", result.ready_after_broadcasts),
    ):
        if ready is None or ready.status != 200:
            problems.append(f"{label}: /readyz{when} did not answer 200: {ready and ready.body}")
        elif ready.sockets != result.opened:
            problems.append(f"{label}: /readyz{when} counts {ready.sockets} sockets")
    if result.sockets_metric != result.opened:
        problems.append(f"{label}: pgcast_sockets_connected = {result.sockets_metric:.0f}")
    if result.exit_code != 0:
        problems.append(f"{label}: pgcast serve exited with {result.exit_code}")
    return problems


# --------------------------------------------------------------------------------------------
# Report


def _mib(value: int) -> str:
    return f"{value / 2**20:.1f}"


def _broadcast(result: CountResult, number: int, render: Callable[[Broadcast], str]) -> str:
    if len(result.broadcasts) < number:
        return "n/a"
    return render(result.broadcasts[number - 1])


def _delivery(broadcast: Broadcast) -> str:
    if broadcast.ok:
        return f"ok: {broadcast.delivery.frames:,} frames, each socket exactly once"
    if not broadcast.delivery.ok:
        return f"FAIL: {broadcast.delivery.describe()}"
    return f"FAIL: not delivered within {BROADCAST_TIMEOUT:.0f} s"


def _cpu(broadcast: Broadcast, sockets: int) -> str:
    per_socket = 1000 * broadcast.server_cpu_ms / sockets if sockets else math.nan
    return f"{broadcast.server_cpu_ms:.1f}; {per_socket:.1f}"


def _listen(result: CountResult) -> str:
    names = ("ListenOverflows", "ListenDrops", "TCPReqQFullDrop")
    return " / ".join(str(result.listen_counters.get(name, "?")) for name in names)


REPORT_ROWS: list[tuple[str, Callable[[CountResult], str]]] = [
    ("sockets open / asked", lambda c: f"{c.opened:,} / {c.target:,}"),
    ("time to open all (s)", lambda c: f"{c.open_seconds:.2f}"),
    ("accept-queue overflows / drops / SYN-queue drops while opening (netns-wide)", _listen),
    ("/healthz every 100 ms while opening", lambda c: c.health),
    ("server RSS before, after warm-up (MiB)", lambda c: _mib(c.rss_before)),
    ("server RSS with the idle sockets (MiB)", lambda c: _mib(c.rss_after)),
    ("**memory per idle socket (KiB)**", lambda c: f"**{c.kib_per_socket:.1f}**"),
    ("server open fds before / with the sockets", lambda c: f"{c.fds_before} / {c.fds_after}"),
    ("server `Max open files` soft / hard (/proc/PID/limits)", lambda c: str(c.server_limit)),
    ("server listen backlog (ss Send-Q)", lambda c: str(c.backlog or "n/a")),
    ("/readyz with the sockets open", lambda c: str(c.ready)),
    ("broadcast delivery check", lambda c: _broadcast(c, 1, _delivery)),
    (
        "**broadcast: commit → last socket (ms)**",
        lambda c: _broadcast(c, 1, lambda b: f"**{b.last_ms:.1f}**"),
    ),
    (
        "broadcast: commit → first socket (ms)",
        lambda c: _broadcast(c, 1, lambda b: f"{b.first_ms:.1f}"),
    ),
    (
        "broadcast: server CPU (ms; µs per socket)",
        lambda c: _broadcast(c, 1, lambda b: _cpu(b, c.opened)),
    ),
    (
        "broadcast: load generator CPU (ms)",
        lambda c: _broadcast(c, 1, lambda b: f"{b.loadgen_cpu_ms:.1f}"),
    ),
    (
        "second broadcast: commit → first / last socket (ms)",
        lambda c: _broadcast(c, 2, lambda b: f"{b.first_ms:.1f} / {b.last_ms:.1f}"),
    ),
    (
        "second broadcast: server CPU (ms; µs per socket); delivery",
        lambda c: _broadcast(c, 2, lambda b: f"{_cpu(b, c.opened)}; {'ok' if b.ok else 'FAIL'}"),
    ),
    ("server RSS after the broadcasts (MiB)", lambda c: _mib(c.rss_after_broadcasts)),
    ("/readyz after the broadcasts", lambda c: str(c.ready_after_broadcasts)),
    ("server log warnings/errors; exit code", lambda c: f"{c.warnings}; {c.exit_code}"),
]


def render_report(result: dict[str, Any]) -> str:
    counts: list[CountResult] = result["_counts"]
    setup = (
        f"{result['cpus']} CPUs, database: {result['database']}, load average at start "
        f"{result['load_average']:.1f}, {result['batch']} handshakes at a time. "
        f"Load generator `Max open files` soft / hard: {result['loadgen_limit_before']} "
        f"before, {result['loadgen_limit']} after raising. net.core.somaxconn "
        f"{result['somaxconn']}, tcp_max_syn_backlog {result['tcp_max_syn_backlog']}, "
        f"{result['ephemeral_ports']} ephemeral ports."
    )
    lines = [
        f"## pgcast idle sockets, {result['timestamp']}",
        "",
        f"`{result['command']}`",
        "",
        setup,
        "",
        "| figure | " + " | ".join(f"{c.target:,} sockets" for c in counts) + " |",
        "| --- |" + " --- |" * len(counts),
        *(
            f"| {name} | " + " | ".join(render(c) for c in counts) + " |"
            for name, render in REPORT_ROWS
        ),
    ]
    return finish_report(lines, result)


def _broadcast_dict(broadcast: Broadcast) -> dict[str, Any]:
    return {
        "ok": broadcast.ok,
        "delivery": _delivery_dict(broadcast.delivery),
        "commit_to_first_ms": broadcast.first_ms,
        "commit_to_last_ms": broadcast.last_ms,
        "server_cpu_ms": broadcast.server_cpu_ms,
        "loadgen_cpu_ms": broadcast.loadgen_cpu_ms,
    }


def _count_dict(result: CountResult) -> dict[str, Any]:
    first = _broadcast_dict(result.broadcasts[0]) if result.broadcasts else None
    ready, after = result.ready, result.ready_after_broadcasts
    return {
        "sockets": result.target,
        "opened": result.opened,
        "open_seconds": result.open_seconds,
        "open_errors": dict(result.open_errors),
        "stop_reason": result.stop_reason,
        "listen_counters": result.listen_counters,
        "health_while_opening": result.health,
        "rss_before": result.rss_before,
        "rss_after": result.rss_after,
        "rss_after_broadcasts": result.rss_after_broadcasts,
        "kib_per_socket": result.kib_per_socket,
        "fds_before": result.fds_before,
        "fds_after": result.fds_after,
        "server_open_files_limit": {
            "soft": result.server_limit.soft,
            "hard": result.server_limit.hard,
        },
        "listen_backlog": result.backlog,
        "readyz_status": ready.status if ready else None,
        "readyz_sockets": ready.sockets if ready else None,
        "readyz_ms": ready.milliseconds if ready else None,
        "readyz_after_broadcasts_status": after.status if after else None,
        "sockets_metric": result.sockets_metric,
        "broadcast": first,
        "broadcasts": [_broadcast_dict(b) for b in result.broadcasts],
        "server_exit_code": result.exit_code,
        "server_warnings": result.warnings,
        "server_warning_samples": result.warning_samples,
    }


# --------------------------------------------------------------------------------------------
# Entry points


def _socket_counts(text: str) -> list[int]:
    try:
        counts = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of whole numbers") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("socket counts must be 1 or more")
    return counts


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/idle_sockets.py",
        description="pgcast memory per idle WebSocket, and one broadcast reaching all of them.",
    )
    parser.add_argument(
        "--sockets",
        type=_socket_counts,
        metavar="S[,S...]",
        help=f"socket counts, a fresh server each (default {','.join(map(str, DEFAULT_SOCKETS))})",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_BATCH,
        help=f"concurrent handshakes per batch (default {DEFAULT_BATCH})",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"a few seconds: {SMOKE_SOCKETS[0]} sockets (an explicit --sockets still wins)",
    )
    add_report_options(parser)
    args = parser.parse_args(argv)
    if args.sockets is None:
        args.sockets = list(SMOKE_SOCKETS if args.smoke else DEFAULT_SOCKETS)
    if args.batch < 1:
        parser.error("--batch must be 1 or more")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def capacity_notes(counts: Sequence[int]) -> list[str]:
    """Limits of the load generator's side that would stop the largest count."""
    notes: list[str] = []
    largest = max(counts)
    own = own_open_files_limit()
    if own.soft_number < largest + FD_HEADROOM:
        notes.append(
            f"the load generator may open at most {own.soft} files (hard {own.hard}): "
            f"{largest:,} sockets will not fit"
        )
    ports = ephemeral_ports()
    if ports is not None and ports < largest:
        notes.append(f"only {ports} ephemeral ports for {largest:,} connections to one port")
    return notes


def result_notes(counts: Sequence[CountResult]) -> list[str]:
    notes: list[str] = []
    for result in counts:
        label = f"{result.target:,} sockets"
        if result.server_limit.soft_number < result.target + FD_HEADROOM:
            notes.append(
                f"{label}: the server's soft `Max open files` is {result.server_limit.soft}, "
                "too close to the socket count"
            )
        overflows = result.listen_counters.get("ListenOverflows", 0)
        if overflows:
            notes.append(
                f"{label}: the accept queue overflowed {overflows} times while opening (the "
                "kernel dropped handshakes and clients retried after 1 s): lower --batch, or "
                f"the server's listen backlog ({result.backlog}) is too short"
            )
    return notes


async def _bench(args: argparse.Namespace, conninfo: str, workdir: Path) -> dict[str, Any]:
    counts: list[CountResult] = []
    for index, count in enumerate(args.sockets):
        counts.append(await measure_count(conninfo, workdir, count, args.batch, index))
    return {
        "_counts": counts,
        "counts": [_count_dict(result) for result in counts],
        "notes": result_notes(counts),
        "problems": [problem for result in counts for problem in count_problems(result)],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every socket count once; every figure in a dict (`counts`: one entry per count).
    `problems` is empty when every count was reached and every check passed. Raises BenchError
    when the benchmark cannot run."""
    limit_before = own_open_files_limit()
    _raise_open_file_limit()
    started = datetime.now(UTC)
    load_average = os.getloadavg()[0]
    notes = capacity_notes(args.sockets)
    with tempfile.TemporaryDirectory(prefix="pgcast-idle-") as tmp:
        workdir = Path(tmp)
        with bench_database(workdir) as (conninfo, _postmaster):
            result = run_load_generator(_bench(args, conninfo, workdir))
    result["notes"] = notes + result["notes"]
    result.update(
        batch=args.batch,
        load_average=load_average,
        timestamp=started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        cpus=os.cpu_count(),
        database="DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded",
        command=" ".join([".venv/bin/python bench/idle_sockets.py", *args.argv]),
        loadgen_limit_before=str(limit_before),
        loadgen_limit=str(own_open_files_limit()),
        somaxconn=read_int("/proc/sys/net/core/somaxconn"),
        tcp_max_syn_backlog=read_int("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
        ephemeral_ports=ephemeral_ports(),
    )
    result["report"] = render_report(result)
    save_report(result, args, "idle", started)
    result.pop("_counts")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, run, argv, errors=(BenchError, psycopg.Error))


if __name__ == "__main__":
    sys.exit(main())
