"""The socket limit: WebSocket frames/s this machine pushes through loopback with no framework.

    .venv/bin/python bench/socket_limit.py [--sockets 100,1000] [--frames-per-write 1,10]
                                           [--frame-bytes 200,10000] [--smoke]

For every combination of socket count S, frame size and frames per write K, a fresh
bench/bare_socket_server.py (plain asyncio, stdlib only) runs as a child process; this process
opens S sockets with bench/quick.py's `Receiver`, then the server sends every socket the same
frames, pre-encoded once, K frames per `transport.write`, honouring flow control. Figures:
frames received on all sockets / (last frame - first frame), the server's and this process's
CPU, and a delivery check (every socket got every frame once, in order).

pgcast's delivered frames/s is read against this figure: K=1 is what one write per frame
allows, K=10 what batching writes allows.

`run(parse_args([...]))` returns the figures as a dict; `measure_socket_limit(...)` is one
measurement, for other bench scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil

# Run as a script, only bench/ is on sys.path: make the repository's `bench` package importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.quick import (
    BENCH_DIR,
    CONNECT_TIMEOUT,
    HOST,
    NEW_MESSAGE_PREFIX,
    NOISY_OTHERS_PERCENT,
    SATURATED_PERCENT,
    BenchError,
    Meter,
    ServerProcess,
    _raise_open_file_limit,
    _settle_seconds,
    _throughput,
    add_report_options,
    bench_main,
    check_delivery,
    close_sockets,
    finish_report,
    free_port,
    open_sockets,
    run_load_generator,
    save_report,
    wait_delivered,
)

DEFAULT_SOCKETS = (100, 1000)
DEFAULT_FRAMES_PER_WRITE = (1, 10)
DEFAULT_FRAME_BYTES = (200, 10000)
# About 300k frames per measurement (3,000 per socket at 100 sockets, 300 at 1,000): enough to
# dwarf the start and the tail, and a few seconds at one write per frame. Large frames are
# capped by bytes instead (200k frames of 10 kB) to stay within about 5 s.
TARGET_FRAMES = 300_000
TARGET_PAYLOAD_BYTES = 2_000_000_000
# Process CPU times tick every 10 ms: shorter phases give meaningless percentages.
SHORTEST_CPU_SECONDS = 0.5
SMOKE_SOCKETS = (20,)
SMOKE_FRAMES_PER_SOCKET = 50
SMOKE_FRAME_BYTES = (200, 10000)

CONTENT_OPEN = ',"content":"'
CONTENT_CLOSE = '"}}}'


def frame_text(message: int, frame_bytes: int) -> str:
    """A pgcast-shaped new-message frame of exactly `frame_bytes` UTF-8 bytes (ASCII here)."""
    head = f"{NEW_MESSAGE_PREFIX}{message}{CONTENT_OPEN}"
    padding = frame_bytes - len(head) - len(CONTENT_CLOSE)
    if padding < 0:
        raise ValueError(f"a frame for message {message} needs at least {-padding} more bytes")
    return head + "x" * padding + CONTENT_CLOSE


def smallest_frame(frames_per_socket: int) -> int:
    """Bytes of the longest frame's JSON without any padding."""
    return len(f"{NEW_MESSAGE_PREFIX}{frames_per_socket}{CONTENT_OPEN}{CONTENT_CLOSE}")


def make_frames(frames_per_socket: int, frame_bytes: int) -> list[str]:
    """Ids 1..N: check_delivery wants them increasing in the order they are sent."""
    return [frame_text(message, frame_bytes) for message in range(1, frames_per_socket + 1)]


def default_frames_per_socket(sockets: int, frame_bytes: int) -> int:
    return math.ceil(min(TARGET_FRAMES, TARGET_PAYLOAD_BYTES // frame_bytes) / sockets)


@dataclass
class SocketLimit:
    sockets: int
    frames_per_write: int
    frame_bytes: int
    frames: int
    seconds: float
    frames_per_second: float
    server_cpu_percent: float
    loadgen_cpu_percent: float
    delivery_ok: bool
    others_cpu_percent: float = 0.0
    server_us_per_frame: float = math.nan
    server_frames_per_second: float = math.nan
    problems: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return (
            f"{self.sockets:,} sockets, {self.frame_bytes:,}-byte frames, "
            f"{self.frames_per_write} per write"
        )

    @property
    def megabytes_per_second(self) -> float:
        """Payload (the JSON text) in 10^6 bytes; frame headers (2 to 10 bytes) not counted."""
        return self.frames_per_second * self.frame_bytes / 1e6


async def _ready(
    http: aiohttp.ClientSession, url: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll the bare server's /ready until `done` holds for its answer."""
    state: dict[str, Any] = {}
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            while True:
                async with http.get(url + "/ready") as response:
                    state = await response.json()
                if done(state):
                    return state
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise BenchError(f"the bare server's /ready never said what was awaited: {state}") from None


async def measure_socket_limit(
    sockets: int, frames_per_socket: int, frames_per_write: int, frame_bytes: int, workdir: Path
) -> SocketLimit:
    """One measurement on a fresh bare server: `sockets` sockets each get `frames_per_socket`
    frames of `frame_bytes` bytes, `frames_per_write` frames per write. Raises BenchError when
    the server does not start or a socket does not open."""
    _raise_open_file_limit()
    texts = make_frames(frames_per_socket, frame_bytes)
    frames_file = workdir / f"bare-frames-{frame_bytes}x{frames_per_socket}.json"
    await asyncio.to_thread(frames_file.write_text, json.dumps(texts))
    port = free_port()
    url = f"http://{HOST}:{port}"
    command = [sys.executable, str(BENCH_DIR / "bare_socket_server.py"), "--port", str(port)]
    server = await ServerProcess.start(
        "bare socket server", [*command, "--frames", str(frames_file)], dict(os.environ)
    )
    problems: list[str] = []
    try:
        await server.wait_ready(url + "/ready")
        meter = Meter(
            {"server": (psutil.Process(server.pid), False), "loadgen": (psutil.Process(), False)}
        )
        async with aiohttp.ClientSession() as http:
            receivers = await open_sockets(port, "/ws", url, None, sockets, False)
            try:
                # The client sees 101 right after the server counts the socket: polled to be sure.
                await _ready(http, url, lambda state: state["sockets"] >= len(receivers))
                for receiver in receivers:
                    receiver.start_phase(frames_per_socket)
                meter.start()
                async with http.post(url + f"/go?per_write={frames_per_write}") as response:
                    if response.status != 200:
                        problems.append(f"go answered {response.status}: {await response.text()}")
                    sending = (await response.json())["sockets"] if response.ok else 0
                completed = await wait_delivered(
                    receivers, _settle_seconds(frames_per_socket * len(receivers))
                )
                usage = await meter.stop()
                frames, seconds = _throughput(receivers)
                delivery = check_delivery(receivers, range(1, frames_per_socket + 1))
                send_seconds = math.nan
                if sending:
                    sent = await _ready(http, url, lambda state: state["send_seconds"] is not None)
                    send_seconds = sent["send_seconds"]
            finally:
                await close_sockets(receivers)
    finally:
        exit_code = await server.stop()
    if not completed:
        problems.append("timed out before every socket had every frame")
    if not delivery.ok:
        problems.append(f"delivery FAILED: {delivery.describe()}")
        problems.extend(delivery.samples)
    if exit_code != 0:
        problems.append(f"the bare server exited with {exit_code}")
    problems.extend(f"bare server log: {line}" for line in server.warnings)
    server_cpu_seconds = usage.cpu_percent["server"] / 100 * usage.seconds
    return SocketLimit(
        sockets=sockets,
        frames_per_write=frames_per_write,
        frame_bytes=frame_bytes,
        frames=frames,
        seconds=seconds,
        frames_per_second=frames / seconds if seconds > 0 else math.nan,
        server_cpu_percent=usage.cpu_percent["server"],
        loadgen_cpu_percent=usage.cpu_percent["loadgen"],
        delivery_ok=completed and delivery.ok,
        others_cpu_percent=usage.others_percent,
        server_us_per_frame=1e6 * server_cpu_seconds / frames if frames else math.nan,
        server_frames_per_second=(
            sending * frames_per_socket / send_seconds if send_seconds > 0 else math.nan
        ),
        problems=problems,
    )


# --------------------------------------------------------------------------------------------
# Report


def measurement_notes(measurements: Sequence[SocketLimit]) -> list[str]:
    notes = []
    short = [m for m in measurements if m.seconds < SHORTEST_CPU_SECONDS]
    if short:
        notes.append(
            f"{len(short)} of {len(measurements)} measurements took under "
            f"{SHORTEST_CPU_SECONDS} s: their CPU figures are coarse (the clock ticks every "
            "10 ms) and are not judged here"
        )
    for m in measurements:
        if m.seconds < SHORTEST_CPU_SECONDS:
            continue
        if m.others_cpu_percent > NOISY_OTHERS_PERCENT:
            notes.append(
                f"{m.label}: other processes on the host used {m.others_cpu_percent:.0f}% of a "
                "core: the figures are noisy; rerun on a quiet machine"
            )
        if m.loadgen_cpu_percent > SATURATED_PERCENT:
            notes.append(
                f"{m.label}: the load generator used {m.loadgen_cpu_percent:.0f}% of a core: "
                "it may be the bottleneck, so frames/s is a lower bound"
            )
    return notes


def _measurement_dict(m: SocketLimit) -> dict[str, Any]:
    figures = asdict(m)
    figures["megabytes_per_second"] = m.megabytes_per_second
    return figures


def render_report(result: dict[str, Any]) -> str:
    measurements: list[SocketLimit] = result["_measurements"]
    setup = (
        f"{result['cpus']} CPUs, load average at start {result['load_average']:.1f}. A fresh "
        "stdlib asyncio server (bench/bare_socket_server.py) per row, frames pre-encoded once, "
        "write buffer high-water mark 64 KiB. frames/s: received on all sockets ÷ (last - first "
        "frame); MB/s of payload; server send frames/s: frames ÷ (go → the server's last "
        "write), the rate the kernel took them; CPU in % of one core."
    )
    rows = [
        f"| {m.sockets:,} | {m.frame_bytes:,} | {m.frames_per_write} | {m.frames:,} | "
        f"{m.seconds:.3f} | **{m.frames_per_second:,.0f}** | {m.megabytes_per_second:,.0f} | "
        f"{m.server_frames_per_second:,.0f} | {m.server_us_per_frame:.2f} | "
        f"{m.server_cpu_percent:.0f}% | {m.loadgen_cpu_percent:.0f}% | "
        f"{m.others_cpu_percent:.0f}% | {'ok' if m.delivery_ok else 'FAIL'} |"
        for m in measurements
    ]
    lines = [
        f"## bare socket limit, {result['timestamp']}",
        "",
        f"`{result['command']}`",
        "",
        setup,
        "",
        "| sockets | frame bytes | frames per write | frames | seconds | **frames/s** | MB/s "
        "| server send frames/s | server CPU per frame (µs) | server CPU | load generator CPU "
        "| everything else | delivery |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| --- |",
        *rows,
    ]
    return finish_report(lines, result)


# --------------------------------------------------------------------------------------------
# Entry points


def _positive_list(text: str) -> list[int]:
    try:
        values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of whole numbers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("every value must be 1 or more")
    return values


def _joined(values: Sequence[int]) -> str:
    return ",".join(map(str, values))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/socket_limit.py",
        description="WebSocket frames/s through loopback sockets with no framework at all.",
    )
    parser.add_argument(
        "--sockets",
        type=_positive_list,
        metavar="S[,S...]",
        help=f"socket counts (default {_joined(DEFAULT_SOCKETS)})",
    )
    parser.add_argument(
        "--frames-per-socket",
        type=int,
        metavar="N",
        help=f"frames each socket gets (default {TARGET_FRAMES:,} / sockets, rounded up; "
        f"{TARGET_PAYLOAD_BYTES // 10**9} GB / frame bytes / sockets when that is fewer)",
    )
    parser.add_argument(
        "--frames-per-write",
        type=_positive_list,
        metavar="K[,K...]",
        help=f"frames per transport.write (default {_joined(DEFAULT_FRAMES_PER_WRITE)})",
    )
    parser.add_argument(
        "--frame-bytes",
        type=_positive_list,
        metavar="B[,B...]",
        help=f"payload bytes per frame (default {_joined(DEFAULT_FRAME_BYTES)})",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"a few seconds: {SMOKE_SOCKETS[0]} sockets, {SMOKE_FRAMES_PER_SOCKET} frames each "
        "(explicit options still win)",
    )
    add_report_options(parser)
    args = parser.parse_args(argv)
    if args.sockets is None:
        args.sockets = list(SMOKE_SOCKETS if args.smoke else DEFAULT_SOCKETS)
    if args.frames_per_socket is None and args.smoke:
        args.frames_per_socket = SMOKE_FRAMES_PER_SOCKET
    if args.frames_per_write is None:
        args.frames_per_write = list(DEFAULT_FRAMES_PER_WRITE)
    if args.frame_bytes is None:
        args.frame_bytes = list(SMOKE_FRAME_BYTES if args.smoke else DEFAULT_FRAME_BYTES)
    if args.frames_per_socket is not None and args.frames_per_socket < 1:
        parser.error("--frames-per-socket must be 1 or more")
    for size in args.frame_bytes:
        most = max(frames_per_socket(args, count, size) for count in args.sockets)
        if size < smallest_frame(most):
            parser.error(f"--frame-bytes must be at least {smallest_frame(most)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def frames_per_socket(args: argparse.Namespace, sockets: int, frame_bytes: int) -> int:
    chosen: int | None = args.frames_per_socket
    return chosen if chosen is not None else default_frames_per_socket(sockets, frame_bytes)


async def _bench(args: argparse.Namespace, workdir: Path) -> list[SocketLimit]:
    measurements = []
    for sockets in args.sockets:
        for frame_bytes in args.frame_bytes:
            for per_write in args.frames_per_write:
                measurements.append(
                    await measure_socket_limit(
                        sockets,
                        frames_per_socket(args, sockets, frame_bytes),
                        per_write,
                        frame_bytes,
                        workdir,
                    )
                )
    return measurements


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every combination once; every figure in a dict (`measurements`: one entry each).
    `problems` is empty when every socket got every frame once, in order. Raises BenchError
    when the benchmark cannot run."""
    _raise_open_file_limit()
    started = datetime.now(UTC)
    load_average = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="pgcast-socketlimit-") as tmp:
        measurements = run_load_generator(_bench(args, Path(tmp)))
    result: dict[str, Any] = {
        "_measurements": measurements,
        "measurements": [_measurement_dict(m) for m in measurements],
        "notes": measurement_notes(measurements),
        "problems": [f"{m.label}: {problem}" for m in measurements for problem in m.problems],
        "load_average": load_average,
        "timestamp": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpus": os.cpu_count(),
        "command": " ".join([".venv/bin/python bench/socket_limit.py", *args.argv]),
    }
    result["report"] = render_report(result)
    result.pop("_measurements")
    save_report(result, args, "socketlimit", started)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
