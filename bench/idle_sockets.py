"""Idle sockets: what an idle WebSocket costs pgcast, and one broadcast reaching all of them.
bench/README.md says how it is measured."""

import asyncio
import math
from dataclasses import dataclass, field

import psutil

from bench.lib import receivers as rx
from bench.lib import render, runner
from bench.lib.results import BenchError, Delivery, Result
from bench.lib.servers import cpu_seconds
from bench.lib.writers import Session, pgcast_session, write_steadily

BROADCAST_TIMEOUT = 30.0
# After every socket has its frame, wait this long for a duplicate before judging.
DUPLICATE_GRACE_SECONDS = 0.5


@dataclass
class Options(runner.Options):
    sockets: tuple[int, ...] = runner.option((1000, 5000), (50,), "socket counts, a server each")
    batch: int = runner.option(200, None, "concurrent handshakes")


async def settled_rss(process: psutil.Process) -> int:
    """RSS once it stops moving (two samples 200 ms apart within 64 KiB), at most 5 s."""
    current = int(process.memory_info().rss)
    for _ in range(25):
        await asyncio.sleep(0.2)
        previous, current = current, int(process.memory_info().rss)
        if abs(current - previous) < 64 * 1024:
            break
    return current


@dataclass
class Broadcast:
    delivery: Delivery  # a socket still waiting when BROADCAST_TIMEOUT passed counts as a loss
    first_ms: float
    last_ms: float
    server_cpu_ms: float


@dataclass
class Count:
    target: int  # sockets, every one opened
    rss_before: int
    rss_after: int
    broadcasts: list[Broadcast] = field(default_factory=list)  # one (earlier runs' had two)

    @property
    def kib_per_socket(self) -> float:
        return (self.rss_after - self.rss_before) / self.target / 1024


def _broadcast(c: Count) -> str:
    if not c.broadcasts:
        return "n/a"
    b = c.broadcasts[0]
    per_socket = 1000 * b.server_cpu_ms / c.target
    return (
        f"{b.first_ms:.1f} / **{b.last_ms:.1f}**; {b.server_cpu_ms:.1f} "
        f"({per_socket:.1f} µs per socket); {render.ok(b.delivery.ok)}"
    )


ROWS = {
    "server RSS before / with the idle sockets (MiB)": lambda c: (
        f"{c.rss_before / 2**20:.1f} / {c.rss_after / 2**20:.1f}"
    ),
    "**memory per idle socket (KiB)**": lambda c: f"**{c.kib_per_socket:.1f}**",
    "**broadcast: commit → first / last socket (ms); server CPU (ms); delivery**": _broadcast,
}


@dataclass
class IdleResult(Result):
    counts: list[Count]

    def render(self) -> list[str]:
        header = "figure | " + " | ".join(f"{c.target:,} sockets" for c in self.counts)
        rows = [[name, *(row(c) for c in self.counts)] for name, row in ROWS.items()]
        return [
            f"{self.options['batch']} handshakes at a time.",
            "",
            *render.table(header, rows, "l" * (len(self.counts) + 1)),
        ]


async def broadcast_once(s: Session, receivers: list[rx.Receiver]) -> Broadcast:
    """One INSERT by SQL (one transaction); every socket must get it exactly once."""
    for receiver in receivers:
        receiver.start_phase(1)
    server_cpu = cpu_seconds(s.server.pid)
    committed, _ = await asyncio.to_thread(write_steadily, s.writer, s.user_id, 1, 1.0, 100)
    await rx.wait_delivered(receivers, BROADCAST_TIMEOUT)
    server_used = cpu_seconds(s.server.pid) - server_cpu
    await asyncio.sleep(DUPLICATE_GRACE_SECONDS)  # a duplicate would come right after
    [(found, at)] = committed.items()
    arrivals = [r.times[0] - at for r in receivers if r.times] or [math.nan]
    delivery = rx.check_delivery(receivers, [found])
    return Broadcast(delivery, 1000 * min(arrivals), 1000 * max(arrivals), 1000 * server_used)


async def measure_count(run: runner.Run[Options], target: int) -> tuple[Count, list[str]]:
    """A fresh `pgcast serve`: RSS before and with `target` idle sockets, then a broadcast."""
    async with pgcast_session(run) as s:
        process = psutil.Process(s.server.pid)
        warm = await s.open("/ws", 1)
        warm_up = await broadcast_once(s, warm)
        await rx.close_sockets(warm)
        if not warm_up.delivery.ok:
            raise BenchError(f"warm-up message not delivered: {warm_up.delivery.describe()}")
        rss_before = await settled_rss(process)
        receivers = await s.open("/ws", target, concurrency=run.options.batch)
        c = Count(target, rss_before, await settled_rss(process))
        c.broadcasts.append(await broadcast_once(s, receivers))
    problems = c.broadcasts[0].delivery.problems(f"{target:,} sockets: broadcast")
    return c, problems + s.server.exit_problems()


async def measure(run: runner.Run[Options]) -> IdleResult:
    measured = [await measure_count(run, target) for target in run.options.sockets]
    problems = [problem for _, found in measured for problem in found]
    return IdleResult([count for count, _ in measured], problems=problems)


SCENARIO = runner.Scenario("idle_sockets", "idle sockets", Options, measure)
