"""Quick: commit->socket latency at a steady rate and a burst, against a bare asyncio socket
server. bench/README.md says how it is measured."""

from dataclasses import dataclass

from bench.lib import render, runner
from bench.lib.results import Burst, Result, Steady
from bench.lib.servers import frames_burst, usage_notes
from bench.lib.writers import burst_phase, pgcast_session, steady_phase


@dataclass
class Options(runner.Options):
    sockets: int = runner.option(100, 5, "sockets")
    messages: int = runner.option(1000, 50, "latency-phase messages")
    rate: float = runner.option(100.0, 50.0, "latency-phase messages/s")
    burst: int = runner.option(2000, 200, "fan-out messages")
    batch: int = runner.option(100, 20, "rows per INSERT in the burst")
    content_chars: int = runner.option(100, None, "message length")


@dataclass
class QuickResult(Result):
    latency: Steady
    fanout: Burst
    baseline: Burst

    def render(self) -> list[str]:
        t, f, b, o = self.latency, self.fanout, self.baseline, self.options
        return render.figures(
            [
                f"setup | {o['sockets']} sockets, 1 user, {o['content_chars']}-char messages",
                "latency: messages, target / achieved rate | "
                f"{t.messages}, {t.target_rate:.0f} / {t.achieved_rate:.0f} msg/s",
                f"**commit→socket p50 / p99 (ms)** | **{render.ms(t.latency)}**",
                f"fan-out burst | {f.delivery.expected_per_socket} messages in INSERTs of "
                f"{o['batch']} rows",
                f"**pgcast fan-out frames/s** | **{render.num(f.frames_per_second)}**",
                "**baseline frames/s** (a bare asyncio socket server, same frames) | "
                f"**{render.num(b.frames_per_second)}**",
                f"**pgcast / baseline** | **{render.x(f.frames_per_second, b.frames_per_second)}**",
                "server CPU per frame (µs): pgcast / baseline | "
                f"{render.us(f.server_us_per_frame)} / {render.us(b.server_us_per_frame)}",
            ]
        )


async def measure(run: runner.Run[Options]) -> QuickResult:
    o = run.options
    async with pgcast_session(run) as s:
        receivers = await s.open("/ws", o.sockets)
        latency = await steady_phase(s, receivers, o.messages, o.rate, o.content_chars)
        fanout, ids, texts = await burst_phase(s, receivers, o.burst, o.batch, o.content_chars)
    baseline = await frames_burst(texts, ids, o.sockets, run.workdir)
    problems = latency.delivery.problems("latency phase") + fanout.delivery.problems("fan-out")
    problems += baseline.delivery.problems("baseline") + s.server.exit_problems()
    phases = [("latency", latency.usage), ("fan-out", fanout.usage), ("baseline", baseline.usage)]
    notes = usage_notes(phases)
    return QuickResult(latency, fanout, baseline, problems=problems, notes=notes)


SCENARIO = runner.Scenario("quick", "quick bench", Options, measure)
