"""Quick: commit->socket latency at a steady rate and a burst, against a bare aiohttp server.

One signed-in user opens N sockets; a writer thread inserts M messages at R/s, one
transaction each, its commit time taken right after COMMIT returns (receivers take theirs per
read, same process, same clock). Then a burst of B messages, `--batch` rows per INSERT:
frames/s to every socket. Every socket must get every message once, in commit order. Then
bench/baseline_server.py, a bare aiohttp server, sends the very frames of the burst to N new
sockets as fast as it can: pgcast's frames/s and CPU per frame are given against it.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

from bench.lib import render, runner
from bench.lib.database import prefill
from bench.lib.meters import Meter, usage_notes
from bench.lib.receivers import close_sockets, open_sockets
from bench.lib.results import Burst, Result, Steady, ratio
from bench.lib.servers import PgcastProcess, baseline_burst, metrics_delta
from bench.lib.writers import burst_phase, connect, steady_phase


@dataclass
class Options(runner.Options):
    sockets: int = runner.option(100, 5, "sockets")
    messages: int = runner.option(1000, 50, "latency-phase messages")
    rate: float = runner.option(100.0, 50.0, "latency-phase messages/s")
    burst: int = runner.option(2000, 200, "fan-out messages")
    batch: int = runner.option(100, 20, "rows per INSERT in the burst")
    content_chars: int = runner.option(100, None, "message length")
    prefill_events: int = runner.option(0, None, "older messages written first", minimum=0)


def notify_to_send_ms(metrics: dict[str, float]) -> str:
    """pgcast_notify_to_send_seconds' mean: listener wake to frame written, per socket wake."""
    count = metrics.get("pgcast_notify_to_send_seconds_count", 0.0)
    total = metrics.get("pgcast_notify_to_send_seconds_sum", 0.0)
    return render.num(1000 * total / count, 1) if count else "n/a"


@dataclass
class QuickResult(Result):
    sockets: int
    content_chars: int
    prefill_events: int
    batch: int
    latency: Steady
    fanout: Burst
    baseline: Burst
    latency_metrics: dict[str, float]
    fanout_metrics: dict[str, float]
    server_warnings: int
    exit_codes: tuple[int | None, int | None]

    def metric(self, name: str) -> float:
        return self.latency_metrics.get(name, 0.0) + self.fanout_metrics.get(name, 0.0)

    @property
    def ratio(self) -> float:
        return ratio(self.fanout.frames_per_second, self.baseline.frames_per_second)

    def render(self) -> list[str]:
        t, f, b = self.latency, self.fanout, self.baseline
        cpus = ("server", "postgres", "loadgen")
        d = f.delivery
        return render.figures(
            [
                f"setup | {self.sockets} sockets, 1 user, {self.content_chars}-char messages, "
                f"{self.prefill_events} older events",
                "latency: messages, target / achieved rate | "
                f"{t.messages}, {t.target_rate:.0f} / {t.achieved_rate:.0f} msg/s",
                "**commit→socket p50 / p99 / p99.9 / max (ms)** | "
                f"**{render.ms(t.latency, 'p50', 'p99', 'p999', 'max')}** "
                f"({t.latency.count} pairs)",
                "first socket per message p50 / p99 / max (ms) | "
                + render.ms(t.first_socket, "p50", "p99", "max"),
                "last socket per message p50 / p99 / max (ms) | "
                + render.ms(t.last_socket, "p50", "p99", "max"),
                "COMMIT round trip p50 / p99 (ms), uncertainty of the commit instant | "
                + render.ms(t.commit_rtt),
                f"latency phase CPU (% of one core) | {render.cpu(t.usage, *cpus)}",
                "latency phase: server CPU per frame (µs); notify→send mean (ms, server metric) | "
                f"{render.us(t.server_us_per_frame)}; {notify_to_send_ms(self.latency_metrics)}",
                f"fan-out burst | {d.expected_per_socket} messages in INSERTs of {self.batch} rows "
                f"(inserted in {1000 * f.insert_seconds:.0f} ms)",
                f"**pgcast fan-out frames/s** | **{render.rate(f.frames_per_second)}** "
                f"({f.frames} frames in {f.seconds:.2f} s)",
                f"**baseline frames/s** (bare aiohttp, same frames) | "
                f"**{render.rate(b.frames_per_second)}** ({b.frames} frames in {b.seconds:.2f} s)",
                f"**pgcast / baseline** | **{render.num(self.ratio, 2)}**",
                "server CPU per frame (µs): pgcast / baseline | "
                f"{render.us(f.server_us_per_frame)} / {render.us(b.server_us_per_frame)} "
                f"(baseline / pgcast = {render.x(b.server_us_per_frame, f.server_us_per_frame)})",
                f"fan-out CPU (% of one core) | {render.cpu(f.usage, *cpus)}",
                f"fan-out peak RSS: server (MB) | {render.num(f.usage.peak_rss_mb['server'])}",
                "fan-out: pgcast notify→send mean (ms, server metric) | "
                + notify_to_send_ms(self.fanout_metrics),
                f"baseline CPU (% of one core) | {render.cpu(b.usage, 'server', 'loadgen')}",
                f"baseline peak RSS: server (MB) | {render.num(b.usage.peak_rss_mb['server'])}",
                "delivery check latency / fan-out / baseline | "
                + " / ".join(render.ok(ok) for ok in (t.delivery.ok, f.ok, b.ok)),
                "fan-out losses / duplicates / out-of-order | "
                f"{d.losses} / {d.duplicates} / {d.out_of_order}",
                "server frames_delivered metric vs frames received | "
                f"{self.metric('pgcast_frames_delivered_total'):.0f} vs "
                f"{t.delivery.frames + f.frames}",
                "server log warnings/errors; slow-socket closes; listener reconnects | "
                f"{self.server_warnings}; {self.metric('pgcast_slow_sockets_closed_total'):.0f}; "
                f"{self.metric('pgcast_listener_reconnects_total'):.0f}",
                "server exit codes: pgcast / baseline | "
                f"{self.exit_codes[0]} / {self.exit_codes[1]}",
            ]
        )


async def measure(run: runner.Run[Options]) -> QuickResult:
    o = run.options
    await asyncio.to_thread(prefill, run.conninfo, o.prefill_events)
    writer = connect(run.conninfo)
    async with await PgcastProcess.start(run.conninfo, run.workdir) as server:
        meter = Meter.for_server(server.pid, run.postmaster)
        user_id, cookie = await server.sign_in()
        receivers = await open_sockets(server.port, "/ws", cookie, o.sockets)
        try:
            before = await server.metrics()
            steady = (o.messages, o.rate, o.content_chars)
            latency = await steady_phase(writer, user_id, receivers, meter, *steady)
            middle = await server.metrics()
            burst = (o.burst, o.batch, o.content_chars)
            fanout, ids, texts = await burst_phase(writer, user_id, receivers, meter, *burst)
            after = await server.metrics()
        finally:
            await close_sockets(receivers)
    writer.close()
    baseline, baseline_exit = await baseline_burst(texts, ids, o.sockets, run.workdir)
    problems = latency.delivery.problems("latency phase") + fanout.delivery.problems("fan-out")
    problems += baseline.delivery.problems("baseline") + server.exit_problems()
    if len(texts) != o.burst:
        problems.append(f"socket 0 got {len(texts)} of {o.burst} burst frames for the baseline")
    phases = [("latency", latency.usage), ("fan-out", fanout.usage), ("baseline", baseline.usage)]
    return QuickResult(
        o.sockets,
        o.content_chars,
        o.prefill_events,
        o.batch,
        latency,
        fanout,
        baseline,
        metrics_delta(before, middle),
        metrics_delta(middle, after),
        server.warning_count,
        (server.exit_code, baseline_exit),
        problems=problems,
        notes=usage_notes(phases),
    )


SCENARIO = runner.Scenario("quick", "quick bench", __doc__, Options, measure)

if __name__ == "__main__":
    sys.exit(runner.main(SCENARIO))
