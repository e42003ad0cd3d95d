"""CPU of the processes under test (psutil, schedstat), and notes on the figures."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

from bench.lib.results import Usage

NOISY_OTHERS_PERCENT, SATURATED_PERCENT = 25.0, 90.0
# The server is quiet once its CPU stays under 5% of a core for 3 samples 0.2 s apart.
QUIET_PERCENT, QUIET_SAMPLES, QUIET_INTERVAL, QUIET_TIMEOUT = 5.0, 3, 0.2, 30.0


def _cpu_by_pid(root: psutil.Process, children: bool) -> dict[int, float]:
    """CPU seconds of a process, and of its descendants when `children`, by pid."""
    # schedstat's ns, not psutil's 10 ms ticks: a PostgreSQL backend's share of one presence
    # join is a few ms, spread over several backends.
    processes, seconds = [root], {}
    with contextlib.suppress(psutil.Error):
        processes += root.children(recursive=True) if children else []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            seconds[process.pid] = cpu_seconds(process.pid)
    return seconds


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of a process, in ns resolution from schedstat when the kernel
    keeps it (psutil's figure moves in 10 ms ticks, coarse for one broadcast)."""
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
    if total > 0:
        return total / 1e9
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


class Meter:
    """CPU% (of one core) of some processes over one phase; host CPU% of all."""

    def __init__(self, watched: dict[str, tuple[psutil.Process, bool]]) -> None:
        self._watched = watched
        self._start: dict[str, dict[int, float]] = {}
        self._started = 0.0
        self._host: Any = None

    @classmethod
    def for_server(cls, pid: int, postmaster: psutil.Process | None, **more: Any) -> Meter:
        """A server under test, this process (the load generator), PostgreSQL with its
        backends when the postmaster is known, and any `more` (name: (process, children))."""
        watched = {"server": (psutil.Process(pid), False), "loadgen": (psutil.Process(), False)}
        if postmaster is not None:
            watched["postgres"] = (postmaster, True)
        return cls({**watched, **more})

    def start(self) -> None:
        self._start = {n: _cpu_by_pid(*w) for n, w in self._watched.items()}
        self._host = psutil.cpu_times()
        self._started = time.monotonic()

    async def stop(self) -> Usage:
        elapsed = time.monotonic() - self._started
        host = psutil.cpu_times()
        cpu: dict[str, float] = {}
        for name, watched in self._watched.items():
            start = self._start[name]
            used = sum(v - start.get(pid, 0.0) for pid, v in _cpu_by_pid(*watched).items())
            cpu[name] = 100 * used / elapsed if elapsed > 0 else math.nan
        busy = [sum(t) - t.idle - getattr(t, "iowait", 0.0) for t in (self._host, host)]
        total = sum(host) - sum(self._host)
        host_percent = 100 * (busy[1] - busy[0]) / total if total > 0 else math.nan
        return Usage(elapsed, cpu, host_percent, psutil.cpu_count() or 1)


async def wait_quiet(pid: int) -> float | None:
    """Seconds until a process went quiet, None if it did not within QUIET_TIMEOUT."""
    began = time.monotonic()
    quiet = 0
    before = cpu_seconds(pid)
    while time.monotonic() - began < QUIET_TIMEOUT:
        await asyncio.sleep(QUIET_INTERVAL)
        now = cpu_seconds(pid)
        quiet = quiet + 1 if 100 * (now - before) / QUIET_INTERVAL < QUIET_PERCENT else 0
        before = now
        if quiet >= QUIET_SAMPLES:
            return time.monotonic() - began
    return None


async def idle_cpu_share(pid: int, seconds: float) -> float:
    """The CPU a server uses idle, as a share of one core: measured over `seconds` once it
    has gone quiet. With thousands of sockets it is not nothing: it pings each every 30 s."""
    await wait_quiet(pid)
    began, cpu_began = time.monotonic(), cpu_seconds(pid)
    await asyncio.sleep(seconds)  # a measuring window, not a wait for an event
    return (cpu_seconds(pid) - cpu_began) / (time.monotonic() - began)


def usage_notes(phases: Iterable[tuple[str, Usage]]) -> list[str]:
    """What makes figures hard to read: other load on the host, a saturated load generator."""
    notes = []
    for phase, usage in phases:
        if usage.others_percent > NOISY_OTHERS_PERCENT:
            notes.append(
                f"{phase}: other processes on the host used {usage.others_percent:.0f}% of a "
                "core: the figures are noisy; rerun on a quiet machine"
            )
        loadgen = usage.cpu_percent.get("loadgen", 0.0)
        if loadgen > SATURATED_PERCENT:
            notes.append(
                f"{phase}: the load generator used {loadgen:.0f}% of a core: it may be the "
                "bottleneck, so frames/s is a lower bound"
            )
    return notes
