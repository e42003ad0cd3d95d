"""Fan-out: S sockets x R messages/s, for small and large messages, up to saturation.

    .venv/bin/python bench/fanout.py [--sockets 100,1000,5000] [--sizes 200,10000]
                                     [--rates 20,50,200,1000] [--seconds 3] [--smoke]

One pgcast server, one signed-in user. The sockets are opened in steps (100, then 900 more,
then 4,000 more); a few unreported messages follow each opening. At each count, for each
message size:

1. a rate ladder: a writer thread inserts at R messages/s (one transaction each, commit time
   taken right after COMMIT returns) for `--seconds`; every socket must get every message
   once, in order. Each step reports commit->socket latency over every (socket, message)
   pair, delivered frames/s and CPU. The ladder stops at the first saturated step: the writer
   fell behind, p99 passed a second, or a socket was closed as too slow;
2. a burst: as many messages as `--burst-bytes` allows, 100 rows per INSERT, back to back:
   the most frames/s pgcast delivers at this socket count and size.

bench/report.py gives these figures as ratios to bench/socket_limit.py's bare socket limit.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import psycopg

if __package__ in (None, ""):  # run as a script: bench/fanout.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.quick import (
    HOST,
    BenchError,
    Meter,
    Receiver,
    ServerProcess,
    _delivery_dict,
    _us_per_frame,
    _usage_dict,
    add_report_options,
    bench_main,
    close_sockets,
    connect_writer,
    fanout_phase,
    fetch_metrics,
    finish_report,
    free_port,
    latency_phase,
    metrics_delta,
    open_sockets,
    pgcast_env,
    run_bench,
    settle_options,
    sign_in,
    wait_delivered,
)

# A step is saturated when its p99 passes this, or the writer reaches under this share of R.
SATURATED_P99_MS = 1000.0
SATURATED_RATE_SHARE = 0.9
# Frames still in flight after a saturated step are waited for this long before the sockets
# are replaced, so they cannot leak into the next step.
DRAIN_SECONDS = 90.0
# JSON around the content of a new-message frame (ids, timestamps, author, cursor).
FRAME_OVERHEAD_BYTES = 330
WARM_UP_RATE = 20.0
WARM_UP_SECONDS = 0.5
BURST_BATCH = 100
MIN_BURST_MESSAGES = 10
MAX_BURST_MESSAGES = 2000

DEFAULTS: dict[str, Any] = {
    "sockets": "100,1000,5000",
    "sizes": "200,10000",
    "rates": "20,50,200,1000",
    "seconds": 3.0,
    "burst_bytes": 400_000_000,
}
SMOKE: dict[str, Any] = {
    "sockets": "5,20",
    "sizes": "200",
    "rates": "20,100",
    "seconds": 0.5,
    "burst_bytes": 2_000_000,
}


@dataclass
class Step:
    sockets: int
    content_bytes: int
    target_rate: float
    achieved_rate: float
    messages: int
    latency_ms: dict[str, float]
    last_socket_ms: dict[str, float]
    frames: int
    frames_per_second: float
    server_us_per_frame: float
    usage: dict[str, Any]
    delivery: dict[str, Any]
    saturated: str | None
    """Why this step is saturated (None when it kept up)."""


@dataclass
class Burst:
    sockets: int
    content_bytes: int
    messages: int
    frames: int
    seconds: float
    frames_per_second: float
    server_us_per_frame: float
    usage: dict[str, Any]
    delivery: dict[str, Any]
    completed: bool


def _numbers(text: str, kind: type[int] | type[float]) -> list[Any]:
    return [kind(part) for part in text.split(",") if part.strip()]


def burst_messages(sockets: int, content_bytes: int, budget: int) -> int:
    """Messages in a burst: enough for a steady figure, few enough for loopback and memory."""
    wanted = budget // (sockets * (content_bytes + FRAME_OVERHEAD_BYTES))
    return max(MIN_BURST_MESSAGES, min(MAX_BURST_MESSAGES, wanted))


def saturation(step_rate: float, achieved: float, p99_ms: float, delivery_ok: bool) -> str | None:
    if not delivery_ok:
        return "delivery incomplete (sockets closed as too slow, or frames still in flight)"
    if achieved < SATURATED_RATE_SHARE * step_rate:
        return f"the writer reached {achieved:.0f} of {step_rate:.0f} msg/s"
    if p99_ms > SATURATED_P99_MS:
        return f"p99 {p99_ms:.0f} ms"
    return None


class Fleet:
    """The open sockets of one user, topped up to a count; dead ones are replaced."""

    def __init__(self, port: int, url: str, cookie: str) -> None:
        self.receivers: list[Receiver] = []
        self._port = port
        self._url = url
        self._cookie = cookie

    async def ensure(self, count: int) -> None:
        alive = [r for r in self.receivers if not r.closed]
        await close_sockets([r for r in self.receivers if r.closed])
        if len(alive) < count:
            alive += await open_sockets(
                self._port, "/ws", self._url, self._cookie, count - len(alive), True
            )
        await close_sockets(alive[count:])
        self.receivers = alive[:count]

    async def settle(self) -> None:
        """After a step: wait for stragglers; replace sockets that are closed or behind."""
        await wait_delivered(self.receivers, DRAIN_SECONDS)
        behind = [r for r in self.receivers if r.closed or not r.done.is_set()]
        if behind:
            await close_sockets(behind)
            count = len(self.receivers)
            self.receivers = [r for r in self.receivers if r not in behind]
            await self.ensure(count)


async def rate_step(
    writer: psycopg.Connection[Any],
    user_id: int,
    fleet: Fleet,
    meter: Meter,
    rate: float,
    content_bytes: int,
    seconds: float,
) -> Step:
    messages = max(1, round(rate * seconds))
    plan = argparse.Namespace(messages=messages, rate=rate, content_chars=content_bytes)
    result = await latency_phase(writer, user_id, fleet.receivers, plan, meter)
    firsts = [r.times[0] for r in fleet.receivers if r.times]
    lasts = [r.times[-1] for r in fleet.receivers if r.times]
    span = max(lasts) - min(firsts) if firsts else math.nan
    frames = result.delivery.frames
    await fleet.settle()
    return Step(
        sockets=len(fleet.receivers),
        content_bytes=content_bytes,
        target_rate=rate,
        achieved_rate=result.achieved_rate,
        messages=messages,
        latency_ms=result.all_pairs,
        last_socket_ms=result.last_socket,
        frames=frames,
        frames_per_second=frames / span if span > 0 else math.nan,
        server_us_per_frame=_us_per_frame(result.usage, frames),
        usage=_usage_dict(result.usage),
        delivery=_delivery_dict(result.delivery),
        saturated=saturation(
            rate, result.achieved_rate, result.all_pairs["p99"], result.delivery.ok
        ),
    )


async def burst_step(
    writer: psycopg.Connection[Any],
    user_id: int,
    fleet: Fleet,
    meter: Meter,
    content_bytes: int,
    budget: int,
) -> Burst:
    messages = burst_messages(len(fleet.receivers), content_bytes, budget)
    plan = argparse.Namespace(
        burst=messages, batch=min(BURST_BATCH, messages), content_chars=content_bytes
    )
    result, _, _ = await fanout_phase(writer, user_id, fleet.receivers, plan, meter)
    await fleet.settle()
    return Burst(
        sockets=len(fleet.receivers),
        content_bytes=content_bytes,
        messages=messages,
        frames=result.frames,
        seconds=result.seconds,
        frames_per_second=result.frames_per_second,
        server_us_per_frame=result.server_us_per_frame,
        usage=_usage_dict(result.usage),
        delivery=_delivery_dict(result.delivery),
        completed=result.completed,
    )


async def _bench(
    args: argparse.Namespace, conninfo: str, workdir: Path, postmaster: psutil.Process | None
) -> dict[str, Any]:
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = pgcast_env(conninfo, workdir / "server-data", port)
    if args.batch_window_ms is not None:
        env["PGCAST_BATCH_WINDOW_MS"] = str(args.batch_window_ms)
    server = await ServerProcess.start(
        "pgcast serve", [sys.executable, "-m", "server", "serve", "--no-migrate"], env
    )
    steps: list[Step] = []
    bursts: list[Burst] = []
    writer: psycopg.Connection[Any] | None = None
    try:
        await server.wait_ready(url + "/readyz")
        meter = Meter.for_server(server.pid, postmaster)
        writer = await asyncio.to_thread(connect_writer, conninfo)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            user_id, cookie = await sign_in(http, url)
            fleet = Fleet(port, url, cookie)
            before = await fetch_metrics(http, url)
            try:
                for count in sorted(_numbers(args.sockets, int)):
                    await fleet.ensure(count)
                    # Not reported: the first broadcasts after sockets connect cost more
                    # (catch-up cursors, first-use allocations); idle_sockets.py reports them.
                    await rate_step(
                        writer, user_id, fleet, meter, WARM_UP_RATE, 200, WARM_UP_SECONDS
                    )
                    for size in _numbers(args.sizes, int):
                        for rate in sorted(_numbers(args.rates, float)):
                            step = await rate_step(
                                writer, user_id, fleet, meter, rate, size, args.seconds
                            )
                            steps.append(step)
                            print(_step_line(step), file=sys.stderr)
                            if step.saturated:
                                break
                        burst = await burst_step(
                            writer, user_id, fleet, meter, size, args.burst_bytes
                        )
                        bursts.append(burst)
                        print(_burst_line(burst), file=sys.stderr)
            finally:
                await close_sockets(fleet.receivers)
            metrics = metrics_delta(before, await fetch_metrics(http, url))
    finally:
        if writer is not None:
            await asyncio.to_thread(writer.close)
        await server.stop()
    problems = []
    if server.exit_code != 0:
        problems.append(f"pgcast serve exited with {server.exit_code}")
    problems.extend(
        f"burst at {b.sockets} sockets, {b.content_bytes} B: delivery failed "
        f"({b.delivery['samples'][:2]})"
        for b in bursts
        if not b.delivery["ok"]
    )
    return {
        "steps": [asdict(step) for step in steps],
        "bursts": [asdict(burst) for burst in bursts],
        "slow_closes": metrics.get("pgcast_slow_sockets_closed_total", 0.0),
        "server_warnings": server.warning_count,
        "server_warning_samples": server.warnings,
        "problems": problems,
        "notes": [],
    }


def _step_line(step: Step) -> str:
    return (
        f"fanout: {step.sockets} sockets, {step.content_bytes} B, {step.target_rate:g} msg/s: "
        f"p99 {step.latency_ms['p99']:.1f} ms, {step.frames_per_second:,.0f} frames/s"
        + (f" (saturated: {step.saturated})" if step.saturated else "")
    )


def _burst_line(burst: Burst) -> str:
    return (
        f"fanout: {burst.sockets} sockets, {burst.content_bytes} B burst of {burst.messages}: "
        f"{burst.frames_per_second:,.0f} frames/s"
    )


def _cpu(usage: dict[str, Any], name: str) -> str:
    value = usage["cpu_percent"].get(name)
    return "-" if value is None else f"{value:.0f}"


def render_report(result: dict[str, Any]) -> str:
    lines = [
        f"## pgcast fan-out, {result['timestamp']}",
        "",
        f"`{result['command']}`",
        "",
        f"{result['cpus']} CPUs shared by PostgreSQL, the server and the load generator "
        f"(this process: receivers and the writer thread). Load average at start "
        f"{result['load_average']:.1f}.",
        "",
        "### Rate ladder (commit→socket latency over every socket and message)",
        "",
        "| sockets | message B | msg/s target / achieved | frames/s delivered "
        "| p50 / p99 / p99.9 ms | server µs/frame | CPU % server / postgres / loadgen "
        "| server RSS MB | saturated |",
        "| ---: | ---: | --- | ---: | --- | ---: | --- | ---: | --- |",
    ]
    for step in result["steps"]:
        latency = step["latency_ms"]
        usage = step["usage"]
        lines.append(
            f"| {step['sockets']} | {step['content_bytes']} "
            f"| {step['target_rate']:g} / {step['achieved_rate']:.0f} "
            f"| {step['frames_per_second']:,.0f} "
            f"| {latency['p50']:.1f} / {latency['p99']:.1f} / {latency['p99.9']:.1f} "
            f"| {step['server_us_per_frame']:.2f} "
            f"| {_cpu(usage, 'server')} / {_cpu(usage, 'postgres')} / {_cpu(usage, 'loadgen')} "
            f"| {usage['peak_rss_mb'].get('server', math.nan):.0f} "
            f"| {step['saturated'] or 'no'} |"
        )
    lines += [
        "",
        "### Bursts (100 rows per INSERT, back to back)",
        "",
        "| sockets | message B | messages | frames/s delivered | server µs/frame "
        "| CPU % server / postgres / loadgen | delivery |",
        "| ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for burst in result["bursts"]:
        usage = burst["usage"]
        lines.append(
            f"| {burst['sockets']} | {burst['content_bytes']} | {burst['messages']} "
            f"| {burst['frames_per_second']:,.0f} | {burst['server_us_per_frame']:.2f} "
            f"| {_cpu(usage, 'server')} / {_cpu(usage, 'postgres')} / {_cpu(usage, 'loadgen')} "
            f"| {'ok' if burst['delivery']['ok'] else 'FAILED'} |"
        )
    lines += [
        "",
        f"Sockets closed as too slow: {result['slow_closes']:.0f}; "
        f"server log warnings: {result['server_warnings']}.",
    ]
    return finish_report(lines, result)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", help="socket counts, comma-separated (100,1000,5000)")
    parser.add_argument("--sizes", help="message content bytes, comma-separated (200,10000)")
    parser.add_argument("--rates", help="ladder of msg/s, comma-separated (20,50,200,1000)")
    parser.add_argument("--seconds", type=float, help="seconds per ladder step (3)")
    parser.add_argument("--burst-bytes", type=int, help="bytes on the wire per burst (400 MB)")
    parser.add_argument(
        "--batch-window-ms", type=int, help="the server's PGCAST_BATCH_WINDOW_MS (its default)"
    )
    parser.add_argument("--smoke", action="store_true", help="a few sockets, a few seconds")
    add_report_options(parser)
    args = parser.parse_args(argv)
    settle_options(parser, args, SMOKE if args.smoke else DEFAULTS, ("burst_bytes",))
    for name, kind in (("sockets", int), ("sizes", int), ("rates", float)):
        try:
            values = _numbers(getattr(args, name), kind)
        except ValueError:
            parser.error(f"--{name} must be comma-separated numbers")
        if not values or min(values) <= 0:
            parser.error(f"--{name} must list numbers above 0")
    if not args.seconds > 0:
        parser.error("--seconds must be more than 0")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    return run_bench(args, "fanout", _bench, render_report)


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, run, argv, (BenchError, OSError))


if __name__ == "__main__":
    sys.exit(main())
