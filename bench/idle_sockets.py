"""Idle sockets: what an idle WebSocket costs pgcast, and one broadcast reaching all of them.

For each socket count S, a fresh `pgcast serve`: one socket gets one message and closes (lazy
imports and caches paid), the server's RSS is read; S sockets of one user connect, `--batch`
handshakes at a time, each past its `connected` frame, while /healthz is probed every 100 ms;
RSS again: memory per idle socket is the difference / S. /readyz and /metrics must count S
sockets. Then one INSERT: every socket gets it exactly once (commit -> first and last socket,
server and load generator CPU), and a second, since the first after sockets connect costs
pgcast more. Against a bare aiohttp server's figures in bench/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil

from bench.lib import render, runner
from bench.lib.meters import cpu_seconds
from bench.lib.receivers import (
    CONNECT_TIMEOUT,
    Receiver,
    check_delivery,
    close_sockets,
    open_sockets,
    try_open_sockets,
    wait_delivered,
)
from bench.lib.results import BenchError, Delivery, Result
from bench.lib.servers import PgcastProcess
from bench.lib.writers import connect, write_steadily

# File descriptors a process needs besides its sockets (libraries, the database, logs).
FD_HEADROOM = 100
BROADCAST_TIMEOUT = 30.0
# After every socket has its frame, wait this long for a duplicate before judging.
DUPLICATE_GRACE_SECONDS = 0.5
LISTEN_COUNTERS = ("ListenOverflows", "ListenDrops", "TCPReqQFullDrop")
LOG_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")


@dataclass
class Options(runner.Options):
    sockets: tuple[int, ...] = runner.option((1000, 5000), (50,), "socket counts, a server each")
    batch: int = runner.option(200, None, "concurrent handshakes per batch")


def read_proc(path: str) -> str:
    with contextlib.suppress(OSError):
        return Path(path).read_text()
    return ""


def open_files_limit(pid: int | str) -> str:
    """`Max open files` soft / hard from /proc/<pid>/limits (what the process really has)."""
    for line in read_proc(f"/proc/{pid}/limits").splitlines():
        if line.startswith("Max open files"):
            return " / ".join(line.split()[3:5])
    return "?"


def listen_counters() -> dict[str, int]:
    """TcpExt counters of this network namespace: accept-queue overflows and drops."""
    lines = read_proc("/proc/net/netstat").splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return {name: int(table.get(name, 0)) for name in LISTEN_COUNTERS}
    return {}


def listen_backlog(port: int) -> int | None:
    """The accept-queue length the server listens with (`ss -ltn`: Send-Q of a listener)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError, IndexError):
        done = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, timeout=5)
        return int(done.stdout.split()[2])
    return None


async def settled_rss(process: psutil.Process) -> int:
    """RSS once it stops moving (two samples 200 ms apart within 64 KiB), at most 5 s."""
    previous = int(process.memory_info().rss)
    for _ in range(25):
        await asyncio.sleep(0.2)
        current = int(process.memory_info().rss)
        if abs(current - previous) < 64 * 1024:
            return current
        previous = current
    return previous


def describe_error(error: BaseException) -> str:
    """A socket's failure, without its index, so equal causes count together."""
    if isinstance(error, TimeoutError):
        return f"no `connected` frame from the server within {CONNECT_TIMEOUT:.0f} s"
    if isinstance(error, OSError):
        # EMFILE/ENFILE come from this process's own socket() call; the rest from the peer.
        side = "load generator: " if error.errno in (errno.EMFILE, errno.ENFILE) else ""
        return f"{side}{type(error).__name__} errno {error.errno}: {error.strerror}"
    return f"{type(error).__name__}: {str(error).split(': ', 1)[-1]}"


@dataclass
class Readiness:
    status: int
    sockets: int | None
    ms: float

    def __str__(self) -> str:
        return f"{self.status}, sockets={self.sockets}, {self.ms:.1f} ms"


async def check_ready(http: aiohttp.ClientSession, url: str) -> Readiness:
    """GET /readyz: its status, the socket count it reports, and how long it took."""
    began = time.monotonic()
    status, sockets = 0, None
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError):
        async with asyncio.timeout(10), http.get(url + "/readyz") as response:
            status = response.status
            sockets = json.loads(await response.text())["checks"]["sockets"]
    return Readiness(status, sockets, 1000 * (time.monotonic() - began))


async def probe_health(http: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> str:
    """GET /healthz every 100 ms until `stop`: how long the server made a plain request wait
    while sockets connect (handshakes, garbage collection)."""
    times: list[float] = []
    failures: Counter[str] = Counter()
    while not stop.is_set():
        began = time.monotonic()
        try:
            async with asyncio.timeout(10), http.get(url + "/healthz") as response:
                await response.read()
            times.append(1000 * (time.monotonic() - began))
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            failures[type(error).__name__] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    times.sort()
    text = f"{len(times)} probes, median {times[len(times) // 2]:.1f} ms, max {times[-1]:.1f} ms"
    if not times:
        text = "no answer"
    return text + (f", failed: {dict(failures)}" if failures else "")


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
class Count:
    target: int
    server_limit: str
    backlog: int | None
    opened: int = 0
    open_seconds: float = math.nan
    stop_reason: str = ""
    listen: dict[str, int] = field(default_factory=dict)
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
    warnings: int = 0
    exit_code: int | None = None

    @property
    def kib_per_socket(self) -> float:
        return (self.rss_after - self.rss_before) / self.opened / 1024 if self.opened else math.nan

    def problems(self, log: list[str]) -> list[str]:
        label = f"{self.target:,} sockets"
        found = []
        if self.opened < self.target:
            found.append(
                f"{label}: only {self.opened:,} opened ({self.stop_reason}); server: "
                f"{self.fds_after} open fds, `Max open files` {self.server_limit}; "
                f"load generator: `Max open files` {open_files_limit('self')}"
            )
            # Without timestamps and each once: a failing accept() repeats itself.
            found += [f"{label}: server log: {line}" for line in dict.fromkeys(log)]
        for number, b in enumerate(self.broadcasts, start=1):
            found += b.delivery.problems(f"{label}: broadcast {number}")
            if not b.completed:
                found.append(f"{label}: broadcast {number} not delivered within 30 s")
        for when, ready in (
            ("", self.ready),
            (" after the broadcasts", self.ready_after_broadcasts),
        ):
            if ready is None or (ready.status, ready.sockets) != (200, self.opened):
                found.append(f"{label}: /readyz{when} answered {ready}")
        if self.sockets_metric != self.opened:
            found.append(f"{label}: pgcast_sockets_connected = {self.sockets_metric:.0f}")
        if self.exit_code != 0:
            found.append(f"{label}: pgcast serve exited with {self.exit_code}")
        return found


def _broadcast(c: Count, number: int, what: str) -> str:
    if len(c.broadcasts) < number:
        return "n/a"
    b = c.broadcasts[number - 1]
    per_socket = f"{b.server_cpu_ms:.1f}; {1000 * b.server_cpu_ms / max(1, c.opened):.1f}"
    return {
        "delivery": f"ok: {b.delivery.frames:,} frames, each socket exactly once"
        if b.ok
        else f"FAIL: {b.delivery.describe()}, completed {b.completed}",
        "last": f"**{b.last_ms:.1f}**",
        "first": f"{b.first_ms:.1f}",
        "cpu": per_socket,
        "loadgen": f"{b.loadgen_cpu_ms:.1f}",
        "second": f"{b.first_ms:.1f} / {b.last_ms:.1f}",
        "second cpu": f"{per_socket}; {render.ok(b.ok)}",
    }[what]


def _mib(value: int) -> str:
    return f"{value / 2**20:.1f}"


ROWS = {
    "sockets open / asked": lambda c: f"{c.opened:,} / {c.target:,}",
    "time to open all (s)": lambda c: f"{c.open_seconds:.2f}",
    "accept-queue overflows / drops / SYN-queue drops while opening (netns-wide)": lambda c: (
        " / ".join(str(c.listen.get(name, "?")) for name in LISTEN_COUNTERS)
    ),
    "/healthz every 100 ms while opening": lambda c: c.health,
    "server RSS before, after warm-up (MiB)": lambda c: _mib(c.rss_before),
    "server RSS with the idle sockets (MiB)": lambda c: _mib(c.rss_after),
    "**memory per idle socket (KiB)**": lambda c: f"**{c.kib_per_socket:.1f}**",
    "server open fds before / with the sockets": lambda c: f"{c.fds_before} / {c.fds_after}",
    "server `Max open files` soft / hard (/proc/PID/limits)": lambda c: c.server_limit,
    "server listen backlog (ss Send-Q)": lambda c: str(c.backlog or "n/a"),
    "/readyz with the sockets open": lambda c: str(c.ready),
    "broadcast delivery check": lambda c: _broadcast(c, 1, "delivery"),
    "**broadcast: commit → last socket (ms)**": lambda c: _broadcast(c, 1, "last"),
    "broadcast: commit → first socket (ms)": lambda c: _broadcast(c, 1, "first"),
    "broadcast: server CPU (ms; µs per socket)": lambda c: _broadcast(c, 1, "cpu"),
    "broadcast: load generator CPU (ms)": lambda c: _broadcast(c, 1, "loadgen"),
    "second broadcast: commit → first / last socket (ms)": lambda c: _broadcast(c, 2, "second"),
    "second broadcast: server CPU (ms; µs per socket); delivery": lambda c: _broadcast(
        c, 2, "second cpu"
    ),
    "server RSS after the broadcasts (MiB)": lambda c: _mib(c.rss_after_broadcasts),
    "/readyz after the broadcasts": lambda c: str(c.ready_after_broadcasts),
    "server log warnings/errors; exit code": lambda c: f"{c.warnings}; {c.exit_code}",
}


@dataclass
class IdleResult(Result):
    batch: int
    setup: str
    counts: list[Count]

    def render(self) -> list[str]:
        header = "figure | " + " | ".join(f"{c.target:,} sockets" for c in self.counts)
        rows = [[name, *(row(c) for c in self.counts)] for name, row in ROWS.items()]
        return [self.setup, "", *render.table(header, rows, "l" * (len(self.counts) + 1))]


async def broadcast_once(
    conninfo: str, user_id: int, receivers: list[Receiver], pid: int
) -> Broadcast:
    """One INSERT by SQL (one transaction); every socket must get it exactly once."""
    for receiver in receivers:
        receiver.start_phase(1)
    with connect(conninfo) as writer:
        server_cpu, own_cpu = cpu_seconds(pid), cpu_seconds(os.getpid())
        writes = await asyncio.to_thread(write_steadily, writer, user_id, 1, 1.0, 100)
        completed = await wait_delivered(receivers, BROADCAST_TIMEOUT)
        server_used, own_used = cpu_seconds(pid) - server_cpu, cpu_seconds(os.getpid()) - own_cpu
    await asyncio.sleep(DUPLICATE_GRACE_SECONDS)  # a duplicate would come right after
    committed = writes.committed[writes.ids[0]]
    arrivals = [r.times[0] - committed for r in receivers if r.times] or [math.nan]
    return Broadcast(
        check_delivery(receivers, writes.ids),
        completed,
        1000 * min(arrivals),
        1000 * max(arrivals),
        1000 * server_used,
        1000 * own_used,
    )


async def open_in_batches(
    server: PgcastProcess, cookie: str, o: Options, c: Count
) -> list[Receiver]:
    """`c.target` sockets, `o.batch` handshakes at a time; stops after the first batch with a
    failure and records why (errors grouped by cause)."""
    receivers: list[Receiver] = []
    counters, began = listen_counters(), time.monotonic()
    for start in range(0, c.target, o.batch):
        size = min(o.batch, c.target - start)
        opened, errors = await try_open_sockets(
            server.port, "/ws", cookie, size, concurrency=size, first_index=start
        )
        receivers += opened
        if errors:
            causes = Counter(describe_error(error) for error in errors).most_common(3)
            c.stop_reason = (
                f"batch {start // o.batch + 1} lost {len(errors)} of {size}: "
                + "; ".join(f"{n}x {cause}" for cause, n in causes)
            )
            break
    c.open_seconds, c.opened = time.monotonic() - began, len(receivers)
    c.listen = {name: value - counters.get(name, 0) for name, value in listen_counters().items()}
    return receivers


async def measure_count(run: runner.Run[Options], target: int) -> tuple[Count, list[str]]:
    """A fresh `pgcast serve`: RSS before and with `target` idle sockets, then broadcasts."""
    async with await PgcastProcess.start(run.conninfo, run.workdir) as server:
        process = psutil.Process(server.pid)
        c = Count(target, open_files_limit(server.pid), listen_backlog(server.port))
        user_id, cookie = await server.sign_in()
        warm = await open_sockets(server.port, "/ws", cookie, 1)
        warm_up = await broadcast_once(run.conninfo, user_id, warm, server.pid)
        await close_sockets(warm)
        if not warm_up.ok:
            raise BenchError(f"warm-up message not delivered: {warm_up.delivery.describe()}")
        c.rss_before, c.fds_before = await settled_rss(process), process.num_fds()
        stop = asyncio.Event()
        probe = asyncio.create_task(probe_health(server.http, server.url, stop))
        receivers: list[Receiver] = []
        try:
            try:
                receivers = await open_in_batches(server, cookie, run.options, c)
            finally:
                stop.set()
                c.health = await probe
            c.rss_after, c.fds_after = await settled_rss(process), process.num_fds()
            c.ready = await check_ready(server.http, server.url)
            c.sockets_metric = (await server.metrics()).get("pgcast_sockets_connected", math.nan)
            for _ in range(2 if receivers else 0):
                c.broadcasts.append(
                    await broadcast_once(run.conninfo, user_id, receivers, server.pid)
                )
            c.rss_after_broadcasts = int(process.memory_info().rss)
            c.ready_after_broadcasts = await check_ready(server.http, server.url)
        finally:
            await close_sockets(receivers)
    c.warnings, c.exit_code = server.warning_count, server.exit_code
    return c, [LOG_TIMESTAMP.sub("", line) for line in server.warnings]


async def measure(run: runner.Run[Options]) -> IdleResult:
    counts, problems, notes = [], [], []
    for target in run.options.sockets:
        count, log = await measure_count(run, target)
        counts.append(count)
        problems += count.problems(log)
        soft = count.server_limit.split(" / ")[0]
        if soft.isdigit() and int(soft) < target + FD_HEADROOM:
            notes.append(f"{target:,} sockets: the server's soft `Max open files` is {soft}")
        if count.listen.get("ListenOverflows"):
            notes.append(
                f"{target:,} sockets: the accept queue overflowed "
                f"{count.listen['ListenOverflows']} times while opening (the kernel dropped "
                "handshakes, clients retried after 1 s): "
                f"lower --batch, or the server's listen backlog ({count.backlog}) is too short"
            )
    low, high = (read_proc("/proc/sys/net/ipv4/ip_local_port_range") or "0 -1").split()
    setup = (
        f"{run.options.batch} handshakes at a time. Load generator `Max open files` soft / hard "
        f"{open_files_limit('self')} (its soft limit raised to the hard one). net.core.somaxconn "
        f"{read_proc('/proc/sys/net/core/somaxconn').strip()}, tcp_max_syn_backlog "
        f"{read_proc('/proc/sys/net/ipv4/tcp_max_syn_backlog').strip()}, "
        f"{int(high) - int(low) + 1} ephemeral ports."
    )
    return IdleResult(run.options.batch, setup, counts, problems=problems, notes=notes)


SCENARIO = runner.Scenario("idle_sockets", "idle sockets", __doc__, Options, measure)

if __name__ == "__main__":
    sys.exit(runner.main(SCENARIO))
