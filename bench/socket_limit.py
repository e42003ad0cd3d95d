"""The socket limit: WebSocket frames/s this machine pushes through loopback with no framework.
bench/README.md says how it is measured."""

import math
from dataclasses import dataclass

from bench.lib import receivers as r
from bench.lib import render, runner
from bench.lib.results import Burst, Result
from bench.lib.servers import frames_burst, usage_notes

# About 300k frames per measurement, or 2 GB of payload for large frames: enough to dwarf the
# start and the tail, a few seconds at one write per frame.
TARGET_FRAMES, TARGET_PAYLOAD_BYTES = 300_000, 2_000_000_000
CONTENT_OPEN, CONTENT_CLOSE = ',"content":"', '"}}}'


@dataclass
class Options(runner.Options):
    sockets: tuple[int, ...] = runner.option((100, 1000), (20,), "socket counts")
    frames_per_socket: int | None = runner.option(None, 50, "frames each socket gets")
    frames_per_write: tuple[int, ...] = runner.option((1, 10), None, "frames per write")
    frame_bytes: tuple[int, ...] = runner.option((200, 10000), None, "payload bytes per frame")

    def frames(self, sockets: int, frame_bytes: int) -> int:
        if self.frames_per_socket is not None:
            return self.frames_per_socket
        return math.ceil(min(TARGET_FRAMES, TARGET_PAYLOAD_BYTES // frame_bytes) / sockets)

    def check(self) -> str | None:
        for size in self.frame_bytes:
            least = len(frame_text(max(self.frames(s, size) for s in self.sockets), 0))
            if size < least:
                return f"--frame-bytes must be at least {least}"
        return None


def frame_text(message: int, frame_bytes: int) -> str:
    """A pgcast-shaped new-message frame of `frame_bytes` bytes (or the shortest one)."""
    head = f"{r.NEW_MESSAGE_PREFIX.decode()}{message}{CONTENT_OPEN}"
    return head + "x" * max(0, frame_bytes - len(head) - len(CONTENT_CLOSE)) + CONTENT_CLOSE


@dataclass
class SocketLimit:
    sockets: int
    frames_per_write: int
    frame_bytes: int
    burst: Burst

    @property
    def label(self) -> str:
        return f"{self.sockets:,} sockets, {self.frame_bytes:,} B, {self.frames_per_write}/write"


@dataclass
class SocketLimitResult(Result):
    measurements: list[SocketLimit]

    def find(self, sockets: int, frame_bytes: int, per_write: int) -> float | None:
        for m in self.measurements:
            if (m.sockets, m.frame_bytes, m.frames_per_write) == (sockets, frame_bytes, per_write):
                return m.burst.frames_per_second
        return None

    def render(self) -> list[str]:
        rows = [
            f"{m.sockets:,} | {m.frame_bytes:,} | {m.frames_per_write} "
            f"| **{render.num(b.frames_per_second)}** | {render.us(b.server_us_per_frame)} "
            f"| {b.usage.cpu_percent['server']:.0f} / {b.usage.cpu_percent['loadgen']:.0f} "
            f"| {render.ok(b.ok)}"
            for m, b in ((m, m.burst) for m in self.measurements)
        ]
        return [
            "A fresh stdlib asyncio server (bench/bare_socket_server.py) per row, frames "
            "pre-encoded once, write buffer high-water mark 64 KiB. frames/s: received on all "
            "sockets ÷ (last − first frame); CPU in % of one core: where the load generator "
            "is near 100%, the figure is its limit as much as the server's.",
            "",
            *render.table(
                "sockets | frame bytes | frames per write | **frames/s** "
                "| server CPU per frame (µs) | CPU % server / load generator | delivery",
                rows,
                "rrrrrll",
            ),
        ]


async def measure(run: runner.Run[Options]) -> SocketLimitResult:
    o = run.options
    found = []
    for sockets in o.sockets:
        for size in o.frame_bytes:
            frames = o.frames(sockets, size)
            texts = [frame_text(message, size) for message in range(1, frames + 1)]
            for k in o.frames_per_write:
                burst = await frames_burst(texts, range(1, frames + 1), sockets, run.workdir, k)
                found.append(SocketLimit(sockets, k, size, burst))
    notes = usage_notes((m.label, m.burst.usage) for m in found)
    problems = [p for m in found for p in m.burst.delivery.problems(m.label)]
    return SocketLimitResult(found, problems=problems, notes=notes)


SCENARIO = runner.Scenario("socket_limit", "bare socket limit", Options, measure, False)
