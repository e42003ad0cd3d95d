"""Fan-out: S sockets x R messages/s, small and large messages, up to saturation.
bench/README.md says how it is measured."""

from dataclasses import dataclass

from bench.lib import render, runner
from bench.lib.receivers import Fleet, close_sockets
from bench.lib.results import Burst, Result, Steady
from bench.lib.writers import burst_phase, pgcast_session, steady_phase

SATURATED_P99_MS = 1000.0
SATURATED_RATE_SHARE = 0.9
# JSON around the content of a new-message frame (ids, timestamps, author, cursor).
FRAME_OVERHEAD_BYTES = 330
BURST_BATCH = 100
MIN_BURST, MAX_BURST = 10, 2000


@dataclass
class Options(runner.Options):
    sockets: tuple[int, ...] = runner.option((100, 1000, 5000), (5, 20), "socket counts")
    sizes: tuple[int, ...] = runner.option((200, 10000), (200,), "message content bytes")
    rates: tuple[float, ...] = runner.option((20.0, 50.0, 200.0, 1000.0), (20.0, 100.0), "msg/s")
    seconds: float = runner.option(3.0, 0.5, "seconds per ladder step", minimum=0.01)
    burst_bytes: int = runner.option(400_000_000, 2_000_000, "bytes on the wire per burst")


@dataclass
class Step:
    sockets: int
    content_bytes: int
    steady: Steady
    saturated: str | None  # why, when it did not keep up


@dataclass
class SizedBurst:
    sockets: int
    content_bytes: int
    burst: Burst


@dataclass
class FanoutResult(Result):
    steps: list[Step]
    bursts: list[SizedBurst]

    def render(self) -> list[str]:
        steps = [
            f"{s.sockets:,} | {s.content_bytes:,} | {t.target_rate:g} / {t.achieved_rate:.0f} | "
            f"{render.num(t.delivery.frames_per_second)} | {render.ms(t.latency)} | "
            f"{render.us(t.server_us_per_frame)} | {s.saturated or 'no'}"
            for s, t in ((s, s.steady) for s in self.steps)
        ]
        bursts = [
            f"{b.sockets:,} | {b.content_bytes:,} | {b.burst.delivery.expected_per_socket} | "
            f"{render.num(b.burst.frames_per_second)} | {render.us(b.burst.server_us_per_frame)} "
            f"| {render.ok(b.burst.ok)}"
            for b in self.bursts
        ]
        return [
            "### Rate ladder (commit→socket latency over every socket and message)",
            "",
            *render.table(
                "sockets | message B | msg/s target / achieved | frames/s delivered "
                "| p50 / p99 ms | server µs/frame | saturated",
                steps,
                "rrlrlrl",
            ),
            "",
            "### Bursts (100 rows per INSERT, back to back)",
            "",
            *render.table(
                "sockets | message B | messages | frames/s delivered | server µs/frame | delivery",
                bursts,
                "rrrrrl",
            ),
        ]


def saturation(steady: Steady) -> str | None:
    if not steady.delivery.ok:
        return "delivery incomplete (sockets closed as too slow, or frames still in flight)"
    if steady.achieved_rate < SATURATED_RATE_SHARE * steady.target_rate:
        return f"the writer reached {steady.achieved_rate:.0f} of {steady.target_rate:.0f} msg/s"
    if steady.latency.p99 > SATURATED_P99_MS:
        return f"p99 {steady.latency.p99:.0f} ms"
    return None


async def measure(run: runner.Run[Options]) -> FanoutResult:
    o = run.options
    steps: list[Step] = []
    bursts: list[SizedBurst] = []
    async with pgcast_session(run) as s:
        fleet = Fleet(s.server.port, s.cookie)

        async def step(rate: float, size: int, seconds: float) -> Step:
            messages = max(1, round(rate * seconds))
            steady = await steady_phase(s, fleet.receivers, messages, rate, size)
            await fleet.settle()
            return Step(len(fleet.receivers), size, steady, saturation(steady))

        try:
            for count in sorted(o.sockets):
                await fleet.ensure(count)
                # Not reported: the first broadcasts after sockets connect cost more
                # (catch-up cursors, first-use allocations); idle_sockets reports them.
                await step(20.0, 200, 0.5)
                for size in o.sizes:
                    for rate in sorted(o.rates):
                        steps.append(await step(rate, size, o.seconds))
                        if steps[-1].saturated:
                            break
                    wanted = o.burst_bytes // (count * (size + FRAME_OVERHEAD_BYTES))
                    messages = max(MIN_BURST, min(MAX_BURST, wanted))
                    burst, _, _ = await burst_phase(s, fleet.receivers, messages, BURST_BATCH, size)
                    await fleet.settle()
                    bursts.append(SizedBurst(count, size, burst))
        finally:
            await close_sockets(fleet.receivers)
    problems = s.server.exit_problems()
    for b in bursts:
        problems += b.burst.delivery.problems(f"burst at {b.sockets} sockets, {b.content_bytes} B")
    return FanoutResult(steps, bursts, problems=problems)


SCENARIO = runner.Scenario("fanout", "fan-out", Options, measure)
