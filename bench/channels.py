"""Channels: a broadcast costs the server work in proportion to its channel's subscribers.

    .venv/bin/python bench/channels.py [--subscribers 10] [--others 5000] [--broadcasts 1000]
        [--rate 100] [--contrast-broadcasts 100] [--contrast-rate 10] [--smoke]

One pgcast server, one signed-in user. Broadcasts are written by SQL, one
`INSERT INTO broadcasts` per transaction at a steady rate; a broadcast's commit time is taken
when its INSERT returns (autocommit). Four phases, in this order, in one run:

(a) on channel `bench.small`, with only its `--subscribers` connected
    (`/ws?channels=bench.small,messages`);
(b) the same broadcasts once `--others` more sockets are connected to `messages` alone: the
    hub finds a channel's subscribers in an index, so (b) should cost what (a) costs;
(c) the contrast: broadcasts on `messages`, which every socket listens to;
(a') (a) again, once the other sockets have closed: (b) is set against the mean of (a) and
    (a'), and (a') / (a) shows how much the same work drifted on a shared machine.

Before each phase a few unreported broadcasts warm the path up, the server is left to go quiet
and its idle CPU is measured for `--idle-seconds` (every socket costs a ping each 30 s).
Server CPU per broadcast is given as measured and less that idle rate; the report gives
(b)/(a) and (c)/(a) of both. Commit→socket latency is over every (subscriber, broadcast) pair.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import psycopg

if __package__ in (None, ""):  # run as a script: bench/channels.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.idle_sockets import cpu_seconds
from bench.lib.meters import wait_quiet
from bench.quick import (
    HOST,
    SETTLE_TIMEOUT,
    BenchError,
    Meter,
    Receiver,
    ServerProcess,
    Usage,
    _delivery_dict,
    _ms,
    _ratio,
    _usage_dict,
    add_report_options,
    bench_main,
    check_delivery,
    close_sockets,
    finish_report,
    free_port,
    open_sockets,
    pgcast_env,
    report_head,
    run_bench,
    settle_options,
    sign_in,
    summarize_ms,
    usage_notes,
    wait_delivered,
)

SMALL_CHANNEL = "bench.small"
SHARED_CHANNEL = "messages"
WARM_UP_BROADCASTS = 5
WARM_UP_RATE = 20.0
CONTENT = "x" * 100

# Spelled as a new message (`data.message.id`), so the load generator's Receiver counts it.
BROADCAST = """
INSERT INTO broadcasts (channel, event, data)
VALUES (%(channel)s, 'new-message', jsonb_build_object('message',
        jsonb_build_object('id', %(id)s::bigint, 'content', %(content)s::text)))
"""

DEFAULTS: dict[str, Any] = {
    "subscribers": 10,
    "others": 5000,
    "broadcasts": 1000,
    "rate": 100.0,
    "contrast_broadcasts": 100,
    "contrast_rate": 10.0,
    "idle_seconds": 3.0,
}
SMOKE: dict[str, Any] = {
    "subscribers": 3,
    "others": 50,
    "broadcasts": 30,
    "rate": 50.0,
    "contrast_broadcasts": 10,
    "contrast_rate": 10.0,
    "idle_seconds": 0.5,
}


@dataclass
class Phase:
    name: str
    channel: str
    sockets: int
    listening: int
    broadcasts: int
    target_rate: float
    achieved_rate: float
    server_us_per_broadcast: float
    idle_server_percent: float
    net_server_us_per_broadcast: float
    """Less the server's idle CPU over the phase's length."""
    latency_ms: dict[str, float]
    frames: int
    usage: dict[str, Any]
    delivery: dict[str, Any]
    unrouted_frames: int
    """Frames that reached sockets not listening to the channel (must be 0)."""


def broadcast_steadily(
    conn: psycopg.Connection[Any], channel: str, ids: range, rate: float
) -> tuple[dict[int, float], float]:
    """One broadcast per transaction at `rate`/s; returns each id's commit time and the
    seconds it took. Runs in a thread, on the receivers' clock."""
    committed: dict[int, float] = {}
    began = time.monotonic()
    for n, seq in enumerate(ids):
        time.sleep(max(0.0, began + n / rate - time.monotonic()))
        conn.execute(BROADCAST, {"channel": channel, "id": seq, "content": CONTENT})
        committed[seq] = time.time()
    return committed, time.monotonic() - began


async def idle_cpu_share(pid: int, seconds: float) -> float:
    """The CPU a server uses idle, as a share of one core: measured over `seconds` once it
    has gone quiet. With thousands of sockets it is not nothing: it pings each every 30 s."""
    await wait_quiet(pid)
    began, cpu_began = time.monotonic(), cpu_seconds(pid)
    await asyncio.sleep(seconds)  # a measuring window, not a wait for an event
    return (cpu_seconds(pid) - cpu_began) / (time.monotonic() - began)


class Bench:
    """The server, its sockets and the writer, across the phases of one run."""

    def __init__(self, server: ServerProcess, writer: psycopg.Connection[Any], meter: Meter):
        self.server = server
        self.writer = writer
        self.meter = meter
        self.subscribers: list[Receiver] = []
        self.others: list[Receiver] = []
        self.next_id = 1
        self.usages: list[tuple[str, Usage]] = []

    async def stream(self, name: str, channel: str, count: int, rate: float) -> Phase:
        shared = channel == SHARED_CHANNEL
        listening = self.subscribers + self.others if shared else self.subscribers
        deaf = [] if shared else self.others
        for receiver in listening:
            receiver.start_phase(count)
        for receiver in deaf:
            receiver.start_phase(0)
        ids = range(self.next_id, self.next_id + count)
        self.next_id += count
        self.meter.start()
        server_began = cpu_seconds(self.server.pid)
        committed, seconds = await asyncio.to_thread(
            broadcast_steadily, self.writer, channel, ids, rate
        )
        await wait_delivered(listening, SETTLE_TIMEOUT + count * len(listening) / 5000)
        server_cpu = cpu_seconds(self.server.pid) - server_began
        usage = await self.meter.stop()
        pairs = [
            received - committed[found]
            for receiver in self.subscribers
            for received, found in zip(receiver.times, receiver.ids, strict=True)
            if found in committed
        ]
        delivery = check_delivery(listening, list(ids))
        self.usages.append((f"phase {name}", usage))
        return Phase(
            name=name,
            channel=channel,
            sockets=len(self.subscribers) + len(self.others),
            listening=len(listening),
            broadcasts=count,
            target_rate=rate,
            achieved_rate=count / seconds if seconds > 0 else math.nan,
            server_us_per_broadcast=1e6 * server_cpu / count,
            idle_server_percent=math.nan,
            net_server_us_per_broadcast=math.nan,
            latency_ms=summarize_ms(pairs),
            frames=delivery.frames,
            usage=_usage_dict(usage),
            delivery=_delivery_dict(delivery),
            unrouted_frames=sum(len(r.ids) + r.other_frames for r in deaf),
        )

    async def measure(
        self, name: str, channel: str, count: int, rate: float, idle_seconds: float
    ) -> Phase:
        await self.stream("warm-up", channel, WARM_UP_BROADCASTS, WARM_UP_RATE)
        idle_share = await idle_cpu_share(self.server.pid, idle_seconds)
        phase = await self.stream(name, channel, count, rate)
        phase.idle_server_percent = 100 * idle_share
        idle_us = 1e6 * idle_share * phase.usage["seconds"]
        phase.net_server_us_per_broadcast = phase.server_us_per_broadcast - idle_us / count
        print(_phase_line(phase), file=sys.stderr)
        return phase


async def _bench(
    args: argparse.Namespace, conninfo: str, workdir: Path, postmaster: psutil.Process | None
) -> dict[str, Any]:
    port = free_port()
    url = f"http://{HOST}:{port}"
    server = await ServerProcess.start(
        "pgcast serve",
        [sys.executable, "-m", "server", "serve", "--no-migrate"],
        pgcast_env(conninfo, workdir / "server-data", port),
    )
    writer: psycopg.Connection[Any] | None = None
    bench: Bench | None = None
    phases: list[Phase] = []
    try:
        await server.wait_ready(url + "/readyz")
        writer = await asyncio.to_thread(
            psycopg.connect, conninfo, autocommit=True, application_name="pgcast-bench"
        )
        bench = Bench(server, writer, Meter.for_server(server.pid, postmaster))
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            _, cookie = await sign_in(http, url)
        path = f"/ws?channels={SMALL_CHANNEL},{SHARED_CHANNEL}"
        bench.subscribers = await open_sockets(port, path, url, cookie, args.subscribers, True)
        phases.append(
            await bench.measure("a", SMALL_CHANNEL, args.broadcasts, args.rate, args.idle_seconds)
        )
        bench.others = await open_sockets(port, "/ws", url, cookie, args.others, True)
        phases.append(
            await bench.measure("b", SMALL_CHANNEL, args.broadcasts, args.rate, args.idle_seconds)
        )
        phases.append(
            await bench.measure(
                "c", SHARED_CHANNEL, args.contrast_broadcasts, args.contrast_rate, args.idle_seconds
            )
        )
        # (a) again once the others are gone: on a shared machine the cost of the same work
        # drifts, and (b) is set against the mean of the (a) before it and the one after.
        others, bench.others = bench.others, []
        await close_sockets(others)
        phases.append(
            await bench.measure("a'", SMALL_CHANNEL, args.broadcasts, args.rate, args.idle_seconds)
        )
    finally:
        if bench is not None:
            await close_sockets(bench.subscribers + bench.others)
        if writer is not None:
            await asyncio.to_thread(writer.close)
        await server.stop()
    assert bench is not None
    a, b, c, again = phases
    alone = (a.net_server_us_per_broadcast + again.net_server_us_per_broadcast) / 2
    alone_measured = (a.server_us_per_broadcast + again.server_us_per_broadcast) / 2
    problems = [f"pgcast serve exited with {server.exit_code}"] if server.exit_code else []
    for phase in phases:
        if not phase.delivery["ok"]:
            problems.append(f"phase {phase.name}: delivery failed {phase.delivery['samples'][:3]}")
        if phase.unrouted_frames:
            problems.append(
                f"phase {phase.name}: {phase.unrouted_frames} frames reached sockets "
                f"not listening to {phase.channel}"
            )
    return {
        "phases": [asdict(phase) for phase in phases],
        "ratio_b_a": _ratio(b.net_server_us_per_broadcast, alone),
        "ratio_b_a_measured": _ratio(b.server_us_per_broadcast, alone_measured),
        "ratio_c_a": _ratio(c.net_server_us_per_broadcast, alone),
        "ratio_c_a_measured": _ratio(c.server_us_per_broadcast, alone_measured),
        "drift_a": _ratio(again.net_server_us_per_broadcast, a.net_server_us_per_broadcast),
        "server_warnings": server.warning_count,
        "server_warning_samples": server.warnings,
        "problems": problems,
        "notes": usage_notes([u for u in bench.usages if u[0] != "phase warm-up"]),
    }


def _phase_line(phase: Phase) -> str:
    return (
        f"channels: ({phase.name}) {phase.listening} of {phase.sockets} sockets on "
        f"{phase.channel}: {phase.net_server_us_per_broadcast:,.0f} µs server CPU per broadcast, "
        f"p50 {phase.latency_ms['p50']:.1f} ms"
    )


def phase_table(result: dict[str, Any]) -> list[str]:
    """The phases and their ratios in Markdown, from the saved figures alone (bench/report.py
    renders them into RESULTS.md)."""
    a, b, *_ = result["phases"]
    subscribers, others = a["listening"], b["sockets"] - a["sockets"]
    lines = [
        f"{subscribers:,} subscribers of `{SMALL_CHANNEL}` (and `{SHARED_CHANNEL}`); {others:,} "
        f"other sockets on `{SHARED_CHANNEL}` from (b) on.",
        "",
        "| phase | channel | sockets listening / connected | broadcasts, /s target / achieved "
        "| **server µs per broadcast, less idle** | as measured | server idle CPU % "
        "| commit→subscriber p50 / p99 ms | CPU % server / postgres / loadgen | delivery |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for phase in result["phases"]:
        usage = phase["usage"]["cpu_percent"]
        lines.append(
            f"| ({phase['name']}) | `{phase['channel']}` | {phase['listening']:,} / "
            f"{phase['sockets']:,} | {phase['broadcasts']:,}, {phase['target_rate']:g} / "
            f"{phase['achieved_rate']:.0f} | **{phase['net_server_us_per_broadcast']:,.0f}** "
            f"| {phase['server_us_per_broadcast']:,.0f} | {phase['idle_server_percent']:.1f} "
            f"| {_ms(phase['latency_ms'], 'p50', 'p99')} "
            f"| {usage.get('server', math.nan):.0f} / {usage.get('postgres', math.nan):.0f} / "
            f"{usage.get('loadgen', math.nan):.0f} "
            f"| {'ok' if phase['delivery']['ok'] and not phase['unrouted_frames'] else 'FAILED'} |"
        )
    lines += [
        "",
        f"(a) is the mean of (a) and (a'): **(b) / (a) = {result['ratio_b_a']:.2f}** less idle, "
        f"{result['ratio_b_a_measured']:.2f} as measured (near 1: the {others:,} other sockets "
        f"cost nothing per broadcast). (c) / (a) = {result['ratio_c_a']:.0f} less idle, "
        f"{result['ratio_c_a_measured']:.0f} as measured, for {subscribers + others:,} frames "
        f"per broadcast instead of {subscribers:,}. The same work drifted by (a') / (a) = "
        f"{result['drift_a']:.2f} over the run.",
    ]
    return lines


def render_report(result: dict[str, Any]) -> str:
    lines = [
        *report_head("channels", result),
        "",
        *phase_table(result),
        "",
        f"Server log warnings: {result['server_warnings']}.",
    ]
    return finish_report(lines, result)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/channels.py", description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, help="sockets on the small channel (10)")
    parser.add_argument("--others", type=int, help="sockets on messages alone, from (b) (5000)")
    parser.add_argument("--broadcasts", type=int, help="broadcasts in (a) and (b) (1000)")
    parser.add_argument("--rate", type=float, help="broadcasts/s in (a) and (b) (100)")
    parser.add_argument("--contrast-broadcasts", type=int, help="broadcasts in (c) (100)")
    parser.add_argument("--contrast-rate", type=float, help="broadcasts/s in (c) (10)")
    parser.add_argument("--idle-seconds", type=float, help="idle CPU window per phase (3)")
    parser.add_argument("--smoke", action="store_true", help="3 + 50 sockets, a few seconds")
    add_report_options(parser)
    args = parser.parse_args(argv)
    settle_options(
        parser,
        args,
        SMOKE if args.smoke else DEFAULTS,
        ("subscribers", "others", "broadcasts", "contrast_broadcasts"),
    )
    for name in ("rate", "contrast_rate", "idle_seconds"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be more than 0")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the three phases once; every figure in a dict. `problems` is empty when every
    listening socket got every broadcast once, in order, and no other socket got any."""
    return run_bench(args, "channels", _bench, render_report)


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, run, argv, (BenchError, OSError))


if __name__ == "__main__":
    sys.exit(main())
