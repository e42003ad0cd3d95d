"""Channels: a broadcast costs the server work in proportion to its channel's subscribers.
bench/README.md says how it is measured."""

import itertools
from dataclasses import dataclass

from bench.lib import render, runner
from bench.lib.receivers import Receiver, close_sockets
from bench.lib.results import CostPhase, Result, ratio
from bench.lib.servers import usage_notes
from bench.lib.writers import cost_phase, pgcast_session

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
class ChannelsResult(Result):
    phases: list[CostPhase]

    def ratio(self, phase: str, measured: bool = False) -> float:
        """A phase's cost over alone's, the mean of (a) and (a')."""
        cost = {p.name: p.server_us if measured else p.net_server_us for p in self.phases}
        return ratio(cost[phase], (cost["a"] + cost["a'"]) / 2)

    def render(self) -> list[str]:
        a, b, *_ = self.phases
        others = b.sockets - a.sockets
        rows = [
            f"({p.name}) | `{p.channel}` | {p.listening:,} / {p.sockets:,} | {p.cells()} "
            f"| {render.ms(p.latencies[0])} | {render.ok(p.ok)}"
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
    phases: list[CostPhase] = []
    subscribers: list[Receiver] = []
    others: list[Receiver] = []
    ids = itertools.count(1)

    async def phase(name: str, channel: str, count: int, rate: float) -> None:
        listening = subscribers + others if channel == SHARED else subscribers

        def write(_: int) -> int:
            s.writer.execute(BROADCAST, {"channel": channel, "id": (seq := next(ids))})
            return seq

        deaf = [] if channel == SHARED else others
        latency = [(subscribers, lambda *_: True)]  # every subscriber's, only theirs
        phases.append(
            await cost_phase(s, name, channel, listening, deaf, count, rate, write, latency)
        )

    async with pgcast_session(run, autocommit=True, idle_seconds=o.idle_seconds) as s:
        subscribers += await s.open(f"/ws?channels={SMALL},{SHARED}", o.subscribers)
        await phase("a", SMALL, o.broadcasts, o.rate)
        others += await s.open("/ws", o.others, first_index=o.subscribers)
        await phase("b", SMALL, o.broadcasts, o.rate)
        await phase("c", SHARED, o.contrast_broadcasts, o.contrast_rate)
        await close_sockets(others)
        others.clear()
        await phase("a'", SMALL, o.broadcasts, o.rate)
    problems = s.server.exit_problems() + [f for p in phases for f in p.problems()]
    notes = usage_notes((f"phase {p.name}", p.usage) for p in phases)
    return ChannelsResult(phases, problems=problems, notes=notes)


SCENARIO = runner.Scenario("channels", "channels", Options, measure)
