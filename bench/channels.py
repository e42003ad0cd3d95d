"""Channels: a broadcast costs the server work in proportion to its channel's subscribers.

One `INSERT INTO broadcasts` per transaction at a steady rate on `bench.small`: (a) with only
its subscribers connected; (b) beside `--others` sockets on `messages`, which should cost what
(a) costs; (c) on `messages`, which every socket hears; (a') (a) again, for drift. Server CPU
per broadcast, as measured and less the idle CPU measured before each phase.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.lib import render, runner
from bench.lib.meters import Meter, cpu_seconds, idle_cpu_share, usage_notes
from bench.lib.receivers import (
    Receiver,
    check_delivery,
    close_sockets,
    open_sockets,
    settle_seconds,
    wait_delivered,
)
from bench.lib.results import Delivery, Latency, Result, SteadyCost, ratio
from bench.lib.servers import PgcastProcess
from bench.lib.writers import connect

SMALL, SHARED = "bench.small", "messages"
# Spelled as a new message (`data.message.id`), so the load generator's Receiver counts it.
BROADCAST = """
INSERT INTO broadcasts (channel, event, data)
VALUES (%(channel)s, 'new-message', jsonb_build_object('message',
        jsonb_build_object('id', %(id)s::bigint, 'content', repeat('x', 100))))
"""


@dataclass
class Options(runner.Options):
    subscribers: int = runner.option(10, 3, "sockets on the small channel")
    others: int = runner.option(5000, 50, "sockets on messages alone, from (b)")
    broadcasts: int = runner.option(1000, 30, "broadcasts in (a) and (b)")
    rate: float = runner.option(100.0, 50.0, "broadcasts/s in (a) and (b)")
    contrast_broadcasts: int = runner.option(100, 10, "broadcasts in (c)")
    contrast_rate: float = runner.option(10.0, None, "broadcasts/s in (c)")
    idle_seconds: float = runner.option(3.0, 0.5, "idle CPU window per phase", minimum=0.01)


@dataclass
class Phase(SteadyCost):
    name: str
    channel: str
    sockets: int
    listening: int
    latency: Latency
    delivery: Delivery
    unrouted_frames: int
    """Frames that reached sockets not listening to the channel (must be 0)."""

    @property
    def ok(self) -> bool:
        return self.delivery.ok and not self.unrouted_frames


def broadcast_steadily(
    conn: psycopg.Connection[Any], channel: str, ids: range, rate: float
) -> tuple[dict[int, float], float]:
    """One broadcast per transaction at `rate`/s, in a thread on the receivers' clock; each
    id's commit time and the seconds it took."""
    committed: dict[int, float] = {}
    began = time.monotonic()
    for n, seq in enumerate(ids):
        time.sleep(max(0.0, began + n / rate - time.monotonic()))
        conn.execute(BROADCAST, {"channel": channel, "id": seq})
        committed[seq] = time.time()
    return committed, time.monotonic() - began


@dataclass
class ChannelsResult(Result):
    phases: list[Phase]

    def alone(self, measured: bool) -> float:
        a, *_, again = self.phases
        return (
            (a.server_us + again.server_us) / 2
            if measured
            else (a.net_server_us + again.net_server_us) / 2
        )

    def ratio(self, phase: str, measured: bool = False) -> float:
        p = next(p for p in self.phases if p.name == phase)
        return ratio(p.server_us if measured else p.net_server_us, self.alone(measured))

    def render(self) -> list[str]:
        a, b, *_ = self.phases
        others = b.sockets - a.sockets
        rows = [
            f"({p.name}) | `{p.channel}` | {p.listening:,} / {p.sockets:,} | {p.cells()} "
            f"| {render.ms(p.latency)} | {render.ok(p.ok)}"
            for p in self.phases
        ]
        return [
            f"{a.listening:,} subscribers of `{SMALL}` (and `{SHARED}`); {others:,} other "
            f"sockets on `{SHARED}` from (b) on.",
            "",
            *render.table(
                "phase | channel | sockets listening / connected "
                "| broadcasts, /s target / achieved | **server µs per broadcast, less idle** "
                "| as measured | server idle CPU % "
                "| commit→subscriber p50 / p99 ms | delivery",
                rows,
                "llrlrrrll",
            ),
            "",
            f"(a) is the mean of (a) and (a'): **(b) / (a) = {self.ratio('b'):.2f}** less idle, "
            f"{self.ratio('b', True):.2f} as measured (near 1: the {others:,} other sockets cost "
            f"nothing per broadcast). (c) / (a) = {self.ratio('c'):.0f} less idle, "
            f"{self.ratio('c', True):.0f} as measured, for {b.sockets:,} frames per broadcast "
            f"instead of {a.listening:,}. The same work drifted by (a') / (a) = "
            f"{ratio(self.phases[-1].net_server_us, a.net_server_us):.2f} over the run.",
        ]


async def measure(run: runner.Run[Options]) -> ChannelsResult:
    o = run.options
    writer = connect(run.conninfo, autocommit=True)
    phases: list[Phase] = []
    subscribers: list[Receiver] = []
    others: list[Receiver] = []
    next_id = 1

    async def stream(name: str, channel: str, count: int, rate: float, idle: float) -> Phase:
        nonlocal next_id
        listening = subscribers + others if channel == SHARED else subscribers
        deaf = [] if channel == SHARED else others
        for receiver in listening:
            receiver.start_phase(count)
        for receiver in deaf:
            receiver.start_phase(0)
        ids = range(next_id, next_id + count)
        next_id += count
        meter.start()
        began = cpu_seconds(server.pid)
        committed, seconds = await asyncio.to_thread(broadcast_steadily, writer, channel, ids, rate)
        await wait_delivered(listening, settle_seconds(count * len(listening)))
        server_cpu = cpu_seconds(server.pid) - began
        latency = Latency.of(
            [
                received - committed[found]
                for receiver in subscribers
                for received, found in zip(receiver.times, receiver.ids, strict=True)
                if found in committed
            ]
        )
        unrouted = sum(len(r.ids) + r.other_frames for r in deaf)
        cost = (count, rate, seconds, server_cpu, idle, await meter.stop())
        sockets = len(subscribers) + len(others)
        delivery = check_delivery(listening, ids)
        return Phase(*cost, name, channel, sockets, len(listening), latency, delivery, unrouted)

    async def phase(name: str, channel: str, count: int, rate: float) -> None:
        await stream("warm-up", channel, 5, 20.0, 0.0)
        idle = await idle_cpu_share(server.pid, o.idle_seconds)
        phases.append(await stream(name, channel, count, rate, idle))
        print(
            f"channels: ({name}) {phases[-1].net_server_us:,.0f} µs per broadcast", file=sys.stderr
        )

    async with await PgcastProcess.start(run.conninfo, run.workdir) as server:
        meter = Meter.for_server(server.pid, run.postmaster)
        _, cookie = await server.sign_in()
        try:
            path = f"/ws?channels={SMALL},{SHARED}"
            subscribers += await open_sockets(server.port, path, cookie, o.subscribers)
            await phase("a", SMALL, o.broadcasts, o.rate)
            others += await open_sockets(
                server.port, "/ws", cookie, o.others, first_index=o.subscribers
            )
            await phase("b", SMALL, o.broadcasts, o.rate)
            await phase("c", SHARED, o.contrast_broadcasts, o.contrast_rate)
            await close_sockets(others)
            others.clear()
            await phase("a'", SMALL, o.broadcasts, o.rate)
        finally:
            await close_sockets(subscribers + others)
    writer.close()
    problems = server.exit_problems()
    for p in phases:
        problems += p.delivery.problems(f"phase {p.name}")
        if p.unrouted_frames:
            problems.append(
                f"phase {p.name}: {p.unrouted_frames} frames to sockets not on {p.channel}"
            )
    notes = usage_notes((f"phase {p.name}", p.usage) for p in phases)
    return ChannelsResult(phases, problems=problems, notes=notes)


SCENARIO = runner.Scenario("channels", "channels", __doc__, Options, measure)

if __name__ == "__main__":
    sys.exit(runner.main(SCENARIO))
