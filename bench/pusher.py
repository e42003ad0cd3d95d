"""The Pusher protocol's cost against the native one: the same burst fan-out to N sockets
over `/ws` and over `/app/{key}`, one server, one run.

    .venv/bin/python bench/pusher.py [--sockets N] [--burst B] [--batch K] [--smoke]

1. One `pgcast serve` on a free port, one signed-in user.
2. Native: N sockets on /ws (channel messages); a burst of B messages, `--batch` rows per
   INSERT; server CPU time per frame delivered, and frames/s.
3. Pusher: N sockets on /app/{key}, each as pusher-js does it (protocol 7, a
   `pusher:subscribe` to messages, `pusher:pong` to pings); the same burst.
4. Steps 2 and 3 again in the other order (`--rounds 2`), keeping each protocol's cheaper
   round; then the ratio of server CPU per delivered frame, Pusher over native (aim: at
   most 1.2).

Every socket must get every message exactly once and in commit order, on both protocols.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import psycopg

# Run as a script, only bench/ is on sys.path: make the repository's `bench` package importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.quick import (
    CONNECT_CONCURRENCY,
    CONNECT_TIMEOUT,
    HOST,
    BenchError,
    Delivery,
    Meter,
    Receiver,
    ServerProcess,
    Usage,
    _ratio,
    _settle_seconds,
    _throughput,
    _us_per_frame,
    _usage_dict,
    add_report_options,
    bench_main,
    check_delivery,
    close_sockets,
    connect_writer,
    content_for,
    finish_report,
    free_port,
    handshake,
    pgcast_env,
    run_bench,
    settle_options,
    sign_in,
    usage_notes,
    wait_delivered,
    write_burst,
)

DEFAULTS: dict[str, Any] = {
    "sockets": 200,
    "burst": 2000,
    "batch": 100,
    "content_chars": 100,
    "rounds": 2,
}
SMOKE: dict[str, Any] = {"sockets": 5, "burst": 100, "batch": 20, "content_chars": 100, "rounds": 1}
AIM = 1.2

# Frames as they are now: `data` is the stored jsonb's text, which has a space after each
# colon (quick.py's NEW_MESSAGE_PREFIX predates that, and its receivers take the slow path).
NATIVE_PREFIX = b'{"event":"new-message","channel":"messages","data":{"message": {"id": '
PUSHER_PREFIX = b'{"event":"new-message","channel":"messages","data":"{\\"message\\": {\\"id\\": '
SUBSCRIBE = json.dumps({"event": "pusher:subscribe", "data": {"channel": "messages"}}).encode()
PONG = json.dumps({"event": "pusher:pong", "data": {}}).encode()


class PusherReceiver(Receiver):
    """A receiver that speaks protocol 7 as pusher-js does: it subscribes once connected and
    answers the server's pings; ids are read from the same frames' JSON-string data."""

    def __init__(self, index: int, request: bytes, accept: str) -> None:
        super().__init__(index, request, accept, expect_connected=True)
        self.prefix = PUSHER_PREFIX

    def _text(self, payload: bytes, now: float) -> None:
        if b'"pusher:ping"' in payload[:40]:
            self._send(0x1, PONG)
            return
        if not self.opened.done():
            if payload.startswith(b'{"event":"pusher:connection_established"'):
                self._send(0x1, SUBSCRIBE)
            elif b'"pusher_internal:subscription_succeeded"' in payload:
                self._live = True
                self.opened.set_result(None)
            else:
                self._fail(f"unexpected frame before subscribing: {payload[:200]!r}")
            return
        found = None
        try:
            frame = json.loads(payload)
            if frame.get("event") == "new-message":
                found = json.loads(frame["data"])["message"]["id"]
        except (ValueError, KeyError, TypeError):
            found = None
        if not isinstance(found, int):
            self._other(payload[:300].decode(errors="replace"))
            return
        self.times.append(now)
        self.ids.append(found)
        if len(self.ids) >= self.expected:
            self.done.set()


async def open_receivers(
    port: int, path: str, origin: str, cookie: str, count: int, pusher: bool
) -> list[Receiver]:
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
    receivers: list[Receiver] = []

    async def connect(index: int) -> None:
        request, accept = handshake(port, path, origin, cookie)
        if pusher:
            receiver: Receiver = PusherReceiver(index, request, accept)
        else:
            receiver = Receiver(index, request, accept, expect_connected=True)
            receiver.prefix = NATIVE_PREFIX
        receivers.append(receiver)
        async with limit, asyncio.timeout(CONNECT_TIMEOUT):
            await loop.create_connection(lambda: receiver, HOST, port)
            await receiver.opened

    results = await asyncio.gather(*(connect(i) for i in range(count)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        await close_sockets(receivers)
        raise BenchError(f"{len(errors)} of {count} sockets failed to open: {errors[0]!r}")
    return sorted(receivers, key=lambda r: r.index)


async def burst_phase(
    writer: psycopg.Connection[Any],
    user_id: int,
    receivers: list[Receiver],
    args: argparse.Namespace,
    meter: Meter,
) -> tuple[Delivery, Usage, float, bool]:
    for receiver in receivers:
        receiver.start_phase(args.burst)
    batches = [
        [content_for("burst", seq, args.content_chars) for seq in range(s, s + args.batch)]
        for s in range(0, args.burst, args.batch)
    ]
    batches[-1] = batches[-1][: args.burst - args.batch * (len(batches) - 1)]
    meter.start()
    ids, _ = await asyncio.to_thread(write_burst, writer, user_id, batches)
    completed = await wait_delivered(receivers, _settle_seconds(args.burst * len(receivers)))
    usage = await meter.stop()
    frames, seconds = _throughput(receivers)
    return (
        check_delivery(receivers, ids),
        usage,
        frames / seconds if seconds > 0 else math.nan,
        completed,
    )


async def _bench(
    args: argparse.Namespace, conninfo: str, workdir: Path, postmaster: psutil.Process | None
) -> dict[str, Any]:
    port = free_port()
    url = f"http://{HOST}:{port}"
    data_dir = workdir / "server-data"
    server = await ServerProcess.start(
        "pgcast serve",
        [sys.executable, "-m", "server", "serve", "--no-migrate"],
        pgcast_env(conninfo, data_dir, port),
    )
    phases: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    writer: psycopg.Connection[Any] | None = None
    try:
        await server.wait_ready(url + "/readyz")
        key = json.loads((data_dir / "pusher.json").read_text())["key"]
        meter = Meter.for_server(server.pid, postmaster)
        writer = await asyncio.to_thread(connect_writer, conninfo)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            user_id, cookie = await sign_in(http, url)
            protocols = {
                "native": ("/ws", False),
                "pusher": (f"/app/{key}?protocol=7&client=js&version=8.6.0&flash=false", True),
            }
            # Alternating rounds, the cheaper of each protocol's kept: a first phase pays for
            # warming up, and other load on the host comes and goes.
            order = ["native", "pusher", "pusher", "native"][: 2 * args.rounds]
            for name in order:
                path, pusher = protocols[name]
                receivers = await open_receivers(port, path, url, cookie, args.sockets, pusher)
                try:
                    delivery, usage, rate, completed = await burst_phase(
                        writer, user_id, receivers, args, meter
                    )
                finally:
                    await close_sockets(receivers)
                if not (delivery.ok and completed):
                    problems.append(f"{name} delivery FAILED: {delivery.describe()}")
                    problems.extend(f"{name}: {sample}" for sample in delivery.samples)
                phase = {
                    "frames": delivery.frames,
                    "frames_per_second": rate,
                    "server_us_per_frame": _us_per_frame(usage, delivery.frames),
                    "usage": _usage_dict(usage),
                    "_usage": usage,
                }
                kept = phases.get(name)
                if kept is None or not phase["server_us_per_frame"] >= kept["server_us_per_frame"]:
                    phases[name] = phase
    finally:
        if writer is not None:
            await asyncio.to_thread(writer.close)
        await server.stop()
    if server.exit_code != 0:
        problems.append(f"pgcast serve exited with {server.exit_code}")
    native, pusher = phases.get("native", {}), phases.get("pusher", {})
    ratio = _ratio(
        pusher.get("server_us_per_frame", math.nan), native.get("server_us_per_frame", math.nan)
    )
    notes = usage_notes([(name, phase["_usage"]) for name, phase in phases.items()])
    for phase in phases.values():
        phase.pop("_usage")
    return {
        "_args": args,
        "native": native,
        "pusher": pusher,
        "cost_ratio": ratio,
        "aim": AIM,
        "problems": problems,
        "notes": notes,
    }


def render_report(result: dict[str, Any]) -> str:
    args = result["_args"]
    native, pusher = result["native"], result["pusher"]
    lines = [
        "# Pusher protocol against the native one",
        "",
        f"{result['timestamp']}, {result['cpus']} CPUs, {result['database']} PostgreSQL; "
        f"`{result['command']}`",
        "",
        f"A burst of {args.burst} messages ({args.batch} rows per INSERT) to {args.sockets} "
        "sockets subscribed to `messages`, over each protocol in turn, on one server "
        f"({args.rounds} alternating round(s) each, the cheaper kept).",
        "",
        "| protocol | frames | frames/s | server µs per frame |",
        "| --- | --- | --- | --- |",
    ]
    for name, phase in (("/ws (native)", native), ("/app/{key} (Pusher)", pusher)):
        if phase:
            lines.append(
                f"| {name} | {phase['frames']:,} | {phase['frames_per_second']:,.0f} | "
                f"{phase['server_us_per_frame']:.2f} |"
            )
    verdict = (
        "too short a run to measure"
        if math.isnan(result["cost_ratio"])
        else ("met" if result["cost_ratio"] <= AIM else "not met")
    )
    lines += [
        "",
        f"Pusher costs {result['cost_ratio']:.2f}× the native protocol per delivered frame "
        f"(aim: at most {AIM}×, {verdict}).",
    ]
    return finish_report(lines, result)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/pusher.py", description="Pusher protocol cost against the native one."
    )
    parser.add_argument("--sockets", type=int, help=f"sockets (default {DEFAULTS['sockets']})")
    parser.add_argument("--burst", type=int, help=f"messages (default {DEFAULTS['burst']})")
    parser.add_argument("--batch", type=int, help=f"rows per INSERT ({DEFAULTS['batch']})")
    parser.add_argument(
        "--content-chars", type=int, help=f"message length (default {DEFAULTS['content_chars']})"
    )
    parser.add_argument(
        "--rounds", type=int, choices=(1, 2), help="alternating rounds per protocol (default 2)"
    )
    parser.add_argument("--smoke", action="store_true", help="a few seconds, a few sockets")
    add_report_options(parser)
    args = parser.parse_args(argv)
    settle_options(
        parser,
        args,
        SMOKE if args.smoke else DEFAULTS,
        ("sockets", "burst", "batch", "content_chars"),
    )
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    return run_bench(args, "pusher", _bench, render_report)


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
