"""Quick pgcast benchmark: commit->socket latency, fan-out frames/s, and a bare aiohttp baseline.

    .venv/bin/python bench/quick.py [--sockets N] [--messages M] [--rate R] [--smoke]

One run, 20-35 s with the defaults; bench/README.md explains every figure.

1. PostgreSQL: the embedded one in a temp dir, or a fresh database on DATABASE_URL's server.
2. `pgcast serve --no-migrate` as a separate process on a free loopback port, dev login on.
3. Latency: one signed-in user opens N sockets; a writer thread inserts M messages at R per
   second, one transaction each, taking `time.time()` right after COMMIT returns. Receivers
   take `time.time()` per read in this same process: latency = receive - commit, per
   (socket, message).
4. Fan-out: a burst of B messages, `--batch` rows per INSERT (one transaction each), as fast
   as possible; frames/s = frames received on all sockets / (last frame - first frame).
   Every socket must get every message exactly once and in commit order.
5. Baseline: bench/baseline_server.py sends the very frames pgcast sent in the burst to N
   sockets, one send_str per frame, as fast as it can; pgcast's frames/s is given as a ratio.

`run(parse_args([...]))` returns every figure as a dict; `problems` lists delivery failures
(empty = ok).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import os
import resource
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp
import psutil
import psycopg
from psycopg import sql
from yarl import URL

from server.db import with_database
from server.embedded import embedded_database
from server.migrate import migrate

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 60.0
CONNECT_TIMEOUT = 10.0
CONNECT_CONCURRENCY = 25
SETTLE_TIMEOUT = 15.0
STOP_TIMEOUT = 20.0
SAMPLE_INTERVAL = 0.1
GIL_SWITCH_INTERVAL = 0.0005
NOISY_OTHERS_PERCENT = 25.0
PREFILL_BATCH = 1000
SATURATED_PERCENT = 90.0

# A new-message frame starts with one of these, anything else takes the slow path: the native
# codec (server/transports/native/codec.py) writes `data` as PostgreSQL prints the event
# log's jsonb, with a space after each colon and comma; servers before channels, the peers
# and socket_limit.py's frames write it compact.
NEW_MESSAGE_PREFIX = '{"event":"new-message","channel":"messages","data":{"message":{"id":'
JSONB_NEW_MESSAGE_PREFIX = '{"event":"new-message","channel":"messages","data":{"message": {"id": '

INSERT_ONE = (
    "INSERT INTO messages (user_id, content) VALUES (%(user_id)s, %(content)s) RETURNING id"
)
INSERT_MANY = """
INSERT INTO messages (user_id, content)
SELECT %(user_id)s, c FROM unnest(%(contents)s::text[]) WITH ORDINALITY AS t(c, n) ORDER BY n
RETURNING id
"""

DEFAULTS: dict[str, Any] = {
    "sockets": 100,
    "messages": 1000,
    "rate": 100.0,
    "burst": 2000,
    "batch": 100,
    "content_chars": 100,
}
SMOKE: dict[str, Any] = {
    "sockets": 5,
    "messages": 50,
    "rate": 50.0,
    "burst": 200,
    "batch": 20,
    "content_chars": 100,
}


T = TypeVar("T")


def run_load_generator(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` for the load generator, on uvloop when it is installed (`make bench`
    installs it): its C event loop costs the receivers much less per read than asyncio's,
    so the load generator is less often the bottleneck. Servers keep their own loops."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def load_generator_loop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    return f"uvloop {uvloop.__version__}"


class BenchError(RuntimeError):
    """The benchmark could not run (a server did not start, a socket did not connect...)."""


# --------------------------------------------------------------------------------------------
# Measurements


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (p in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize_ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "count": float(len(ordered)),
        "p50": percentile(ordered, 50) * 1000,
        "p99": percentile(ordered, 99) * 1000,
        "p99.9": percentile(ordered, 99.9) * 1000,
        "max": (ordered[-1] * 1000) if ordered else math.nan,
    }


NEW_MESSAGE_PREFIX_BYTES = NEW_MESSAGE_PREFIX.encode()
JSONB_NEW_MESSAGE_PREFIX_BYTES = JSONB_NEW_MESSAGE_PREFIX.encode()
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_HANDSHAKE_BYTES = 64 * 1024


def message_id(payload: bytes) -> int | None:
    """The message id of a new-message frame, None for any other frame."""
    for prefix in (JSONB_NEW_MESSAGE_PREFIX_BYTES, NEW_MESSAGE_PREFIX_BYTES):
        if payload.startswith(prefix):
            end = payload.find(b",", len(prefix))
            with contextlib.suppress(ValueError):
                return int(payload[len(prefix) : end])
    try:
        frame = json.loads(payload)
        if frame.get("event") == "new-message":
            found = frame["data"]["message"]["id"]
            return found if isinstance(found, int) else None
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def handshake(port: int, path: str, origin: str, cookie: str | None) -> tuple[bytes, str]:
    """An RFC 6455 upgrade request and the Sec-WebSocket-Accept the server must answer."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {HOST}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        f"Origin: {origin}",
    ]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    digest = hashlib.sha1((key + WS_GUID).encode(), usedforsecurity=False).digest()
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), base64.b64encode(digest).decode()


class Receiver(asyncio.Protocol):
    """One client WebSocket, reduced to what a receiver needs: handshake, unmasked server
    frames, ping/pong and close. Much cheaper per frame than aiohttp's client (frames that
    arrive in one read are parsed in one call), so the load generator is less of a bottleneck.

    Records (receive time, message id) for the current phase. The receive time is taken once
    per read from the kernel, before parsing.
    """

    def __init__(self, index: int, request: bytes, accept: str, expect_connected: bool) -> None:
        loop = asyncio.get_running_loop()
        self.index = index
        self.opened: asyncio.Future[None] = loop.create_future()
        self.times: list[float] = []
        self.ids: list[int] = []
        self.texts: list[str] = []
        self.keep_text = False
        self.other_frames = 0
        self.other_samples: list[str] = []
        self.expected = 0
        self.done = asyncio.Event()
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self._request = request
        self._accept = accept
        self._expect_connected = expect_connected
        self._transport: asyncio.Transport | None = None
        self._rest = b""
        # The start of the frames the fast path reads an id from (a subclass speaks another
        # protocol: bench/pusher.py).
        self.prefix = NEW_MESSAGE_PREFIX_BYTES
        self._upgraded = False
        self._fragments: list[bytes] | None = None
        # Set once the socket is open (and, for pgcast, past its connected frame).
        self._live = False
        self._close_sent = False
        self._lost: asyncio.Future[None] = loop.create_future()

    def start_phase(self, expected: int, keep_text: bool = False) -> None:
        self.times, self.ids, self.texts = [], [], []
        self.keep_text = keep_text
        self.other_frames = 0
        self.other_samples = []
        self.expected = expected
        self.done.clear()
        if self.closed or expected == 0:
            self.done.set()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None and not self.close_reason:
            self.close_reason = repr(exc)
        if not self.opened.done():
            self.opened.set_exception(BenchError(f"socket {self.index} lost: {self.close_reason}"))
        if not self._lost.done():
            self._lost.set_result(None)
        self.done.set()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buffer = self._rest + data if self._rest else data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self._rest = buffer
                if len(buffer) > MAX_HANDSHAKE_BYTES:
                    self._fail("handshake response too long")
                return
            self._check_upgrade(buffer[:end].decode("latin-1"))
            buffer = buffer[end + 4 :]
            if self._transport is None or self._transport.is_closing():
                return
        self._rest = self._parse(buffer, now)

    # Frames

    def _check_upgrade(self, head: str) -> None:
        status, *header_lines = head.split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if " 101 " not in f"{status} ":
            self._fail(f"upgrade refused: {status}")
        elif headers.get("sec-websocket-accept") != self._accept:
            self._fail("bad Sec-WebSocket-Accept")
        else:
            self._upgraded = True
            if not self._expect_connected:
                self._live = True
                self.opened.set_result(None)

    def _parse(self, buffer: bytes, now: float) -> bytes:
        position, size = 0, len(buffer)
        ids, times = self.ids, self.times
        jsonb, jsonb_length = JSONB_NEW_MESSAGE_PREFIX_BYTES, len(JSONB_NEW_MESSAGE_PREFIX_BYTES)
        prefix, prefix_length = self.prefix, len(self.prefix)
        while size - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length, header = second & 0x7F, 2
            # The common case inline (a whole new-message text frame with a 16-bit length):
            # at a few hundred thousand frames/s, function calls per frame would make the
            # load generator the bottleneck.
            if first == 0x81 and length == 126 and self._live and not self.keep_text:
                end = position + 4 + int.from_bytes(buffer[position + 2 : position + 4])
                if end > size:
                    break
                start = position + 4
                if buffer.startswith(jsonb, start):
                    start += jsonb_length
                elif buffer.startswith(prefix, start):
                    start += prefix_length
                else:
                    start = 0
                if start:
                    comma = buffer.find(b",", start, end)
                    try:
                        found = int(buffer[start:comma])
                    except ValueError:
                        found = -1
                    if found >= 0:
                        ids.append(found)
                        times.append(now)
                        position = end
                        if len(ids) >= self.expected:
                            self.done.set()
                        continue
            if length == 126:
                if size - position < 4:
                    break
                length, header = int.from_bytes(buffer[position + 2 : position + 4]), 4
            elif length == 127:
                if size - position < 10:
                    break
                length, header = int.from_bytes(buffer[position + 2 : position + 10]), 10
            if second & 0x80:
                self._fail("the server masked a frame")
                return b""
            end = position + header + length
            if end > size:
                break
            self._frame(first, buffer[position + header : end], now)
            position = end
        return buffer[position:]

    def _frame(self, first: int, payload: bytes, now: float) -> None:
        opcode, final = first & 0x0F, first & 0x80
        if opcode == OP_TEXT and final:
            self._text(payload, now)
        elif opcode == OP_TEXT:
            self._fragments = [payload]
        elif opcode == OP_CONTINUATION and self._fragments is not None:
            self._fragments.append(payload)
            if final:
                whole, self._fragments = b"".join(self._fragments), None
                self._text(whole, now)
        elif opcode == OP_PING:
            self._send(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2]) if len(payload) >= 2 else None
            self.close_reason = payload[2:].decode(errors="replace")
            self.closed = True
            if not self._close_sent:
                self._send(OP_CLOSE, payload[:2])
            if self._transport is not None:
                self._transport.close()
            self.done.set()
        elif opcode != OP_PONG:
            self._other(f"opcode {opcode} frame of {len(payload)} bytes")

    def _text(self, payload: bytes, now: float) -> None:
        if not self.opened.done():
            if b'"event":"connected"' in payload:
                self._live = True
                self.opened.set_result(None)
            else:
                self._fail(f"expected a connected frame, got {payload[:200]!r}")
            return
        found = message_id(payload)
        if found is None:
            self.other_text(payload, now)
            return
        self.times.append(now)
        self.ids.append(found)
        if self.keep_text:
            self.texts.append(payload.decode())
        if len(self.ids) >= self.expected:
            self.done.set()

    def other_text(self, payload: bytes, now: float) -> None:
        """A text frame other than a new message, once the socket is live: counted and
        sampled as unexpected. A subclass that expects other events reads them here."""
        self._other(payload[:300].decode(errors="replace"))

    def _other(self, sample: str) -> None:
        self.other_frames += 1
        if len(self.other_samples) < 3:
            self.other_samples.append(sample)

    def _send(self, opcode: int, payload: bytes) -> None:
        """A masked client frame (control frames only: payload under 126 bytes)."""
        if self._transport is None or self._transport.is_closing():
            return
        if opcode == OP_CLOSE:
            self._close_sent = True
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self._transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def _fail(self, reason: str) -> None:
        self.close_reason = reason
        if not self.opened.done():
            self.opened.set_exception(BenchError(f"socket {self.index}: {reason}"))
        if self._transport is not None:
            self._transport.abort()

    async def close(self) -> None:
        """Close handshake (1000), then wait for the server to hang up."""
        if self._transport is None:
            return
        self._send(OP_CLOSE, (1000).to_bytes(2))
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), 5)
        except TimeoutError:
            self._transport.abort()


@dataclass
class Delivery:
    expected_per_socket: int
    sockets: int
    frames: int = 0
    losses: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    unexpected: int = 0
    other_frames: int = 0
    closed_sockets: int = 0
    samples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.losses
            or self.duplicates
            or self.out_of_order
            or self.unexpected
            or self.other_frames
            or self.closed_sockets
        )

    def describe(self) -> str:
        return (
            f"losses={self.losses} duplicates={self.duplicates} "
            f"out_of_order={self.out_of_order} unexpected={self.unexpected} "
            f"other_frames={self.other_frames} closed_sockets={self.closed_sockets}"
        )


def check_delivery(receivers: Sequence[Receiver], expected_ids: Sequence[int]) -> Delivery:
    """Every socket must get every expected id exactly once, in commit (= id) order.

    Only one writer runs and it commits one transaction at a time, so commit order is id order.
    """
    expected = set(expected_ids)
    result = Delivery(expected_per_socket=len(expected), sockets=len(receivers))
    for receiver in receivers:
        seen: set[int] = set()
        highest = -1
        for found in receiver.ids:
            result.frames += 1
            if found not in expected:
                result.unexpected += 1
                continue
            if found in seen:
                result.duplicates += 1
                continue
            seen.add(found)
            if found < highest:
                result.out_of_order += 1
            highest = max(highest, found)
        result.losses += len(expected - seen)
        result.other_frames += receiver.other_frames
        if receiver.closed:
            result.closed_sockets += 1
            if len(result.samples) < 5:
                result.samples.append(
                    f"socket {receiver.index} closed: code={receiver.close_code} "
                    f"{receiver.close_reason}".strip()
                )
        for sample in receiver.other_samples:
            if len(result.samples) < 5:
                result.samples.append(f"socket {receiver.index} other frame: {sample}")
    return result


def _tree(root: psutil.Process, children: bool) -> list[psutil.Process]:
    processes = [root]
    if children:
        with contextlib.suppress(psutil.Error):
            processes.extend(root.children(recursive=True))
    return processes


def _cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    seconds: dict[int, float] = {}
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
    return seconds


@dataclass
class Watched:
    root: psutil.Process
    children: bool
    start_cpu: dict[int, float] = field(default_factory=dict)
    peak_rss: int = 0


@dataclass
class Usage:
    seconds: float
    cpu_percent: dict[str, float]
    peak_rss_mb: dict[str, float]
    host_cpu_percent: float
    cpus: int

    @property
    def others_percent(self) -> float:
        """CPU the watched processes did not use (other processes, kernel), % of one core."""
        # Clamped: the two clocks (per process, host-wide) tick separately.
        return max(0.0, self.host_cpu_percent * self.cpus - sum(self.cpu_percent.values()))


class Meter:
    """CPU% (of one core) and peak RSS of some processes over one phase; host CPU% of all."""

    def __init__(self, watched: dict[str, tuple[psutil.Process, bool]]) -> None:
        self._watched = {name: Watched(root, kids) for name, (root, kids) in watched.items()}
        self._started = 0.0
        self._host: Any = None
        self._sampler: asyncio.Task[None] | None = None

    @classmethod
    def for_server(cls, server_pid: int, postmaster: psutil.Process | None) -> Meter:
        """The usual set: a server under test, this process (the load generator), and
        PostgreSQL with its backends when the postmaster is known."""
        watched = {
            "server": (psutil.Process(server_pid), False),
            "loadgen": (psutil.Process(), False),
        }
        if postmaster is not None:
            watched["postgres"] = (postmaster, True)
        return cls(watched)

    def start(self) -> None:
        for watched in self._watched.values():
            watched.start_cpu = _cpu_seconds(_tree(watched.root, watched.children))
            watched.peak_rss = 0
        self._sample_rss()
        self._host = psutil.cpu_times()
        self._started = time.monotonic()
        self._sampler = asyncio.create_task(self._sample_forever())

    async def stop(self) -> Usage:
        elapsed = time.monotonic() - self._started
        host = psutil.cpu_times()
        cpu: dict[str, float] = {}
        for name, watched in self._watched.items():
            now = _cpu_seconds(_tree(watched.root, watched.children))
            used = sum(value - watched.start_cpu.get(pid, 0.0) for pid, value in now.items())
            cpu[name] = 100 * used / elapsed if elapsed > 0 else math.nan
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        self._sample_rss()
        busy_before = sum(self._host) - self._host.idle - getattr(self._host, "iowait", 0.0)
        busy_after = sum(host) - host.idle - getattr(host, "iowait", 0.0)
        total = sum(host) - sum(self._host)
        host_percent = 100 * (busy_after - busy_before) / total if total > 0 else math.nan
        return Usage(
            seconds=elapsed,
            cpu_percent=cpu,
            peak_rss_mb={n: w.peak_rss / 2**20 for n, w in self._watched.items()},
            host_cpu_percent=host_percent,
            cpus=psutil.cpu_count() or 1,
        )

    def _sample_rss(self) -> None:
        for watched in self._watched.values():
            rss = 0
            for process in _tree(watched.root, watched.children):
                with contextlib.suppress(psutil.Error):
                    rss += process.memory_info().rss
            watched.peak_rss = max(watched.peak_rss, rss)

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            self._sample_rss()


def parse_metrics(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            values[name] = float(value)
    return values


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: value - before.get(name, 0.0) for name, value in after.items()}


# --------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class ServerProcess:
    """A server started as a child process; its stderr is drained and summarized."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.tail: deque[str] = deque(maxlen=40)
        self.warnings: list[str] = []
        self.warning_count = 0
        self.exit_code: int | None = None
        self._drain = asyncio.create_task(self._drain_stderr())

    @classmethod
    async def start(cls, name: str, command: list[str], env: dict[str, str]) -> ServerProcess:
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=REPO_DIR,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(name, process)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        while line_bytes := await self.process.stderr.readline():
            line = line_bytes.decode(errors="replace").rstrip()
            self.tail.append(line)
            if " WARNING " in line or " ERROR " in line or "Traceback" in line:
                self.warning_count += 1
                if len(self.warnings) < 10:
                    self.warnings.append(line[:300])

    async def wait_ready(self, url: str) -> None:
        """Poll `url` until it answers 200; fail with the log tail if the process exits."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    break
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(url) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        tail = "\n".join(self.tail)
        raise BenchError(f"{self.name} did not become ready at {url}; its log ends:\n{tail}")

    async def stop(self) -> int:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain, 5)
        self.exit_code = self.process.returncode
        assert self.exit_code is not None
        return self.exit_code


def pgcast_env(database_url: str, data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGCAST_", "WORKOS_"))}
    env.update(
        DATABASE_URL=database_url,
        PGCAST_DATA_DIR=str(data_dir),
        PGCAST_HOST=HOST,
        PGCAST_PORT=str(port),
        PGCAST_DEV_LOGIN="1",
        # One user opens every socket from one address: the per-user and per-address socket
        # limits (20 and 500 by default) would refuse most of them with 429.
        PGCAST_RATE_SOCKETS_PER_USER="0",
        PGCAST_RATE_SOCKETS_PER_IP="0",
    )
    return env


@contextlib.contextmanager
def bench_database(workdir: Path) -> Iterator[tuple[str, psutil.Process | None]]:
    """A migrated, empty database: a fresh one on DATABASE_URL's server, or the embedded one.

    Also yields the local postmaster (for CPU figures) when it is known.
    """
    configured = os.environ.get("DATABASE_URL")
    if not configured:
        with embedded_database(workdir / "embedded") as conninfo:
            migrate(conninfo)
            pid_file = workdir / "embedded" / "pgdata" / "postmaster.pid"
            postmaster: psutil.Process | None = None
            with contextlib.suppress(OSError, ValueError, psutil.Error):
                postmaster = psutil.Process(int(pid_file.read_text().splitlines()[0]))
            yield conninfo, postmaster
        return
    name = f"pgcast_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(configured, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        conninfo = with_database(configured, name)
        migrate(conninfo)
        yield conninfo, None
    finally:
        with psycopg.connect(configured, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def prefill(conninfo: str, events: int) -> None:
    """History: `events` messages (and so events) by another user, 1000 per transaction."""
    if not events:
        return
    with psycopg.connect(conninfo, autocommit=True, application_name="pgcast-bench") as conn:
        row = conn.execute(
            "INSERT INTO users (email, name) VALUES ('history@example.com', 'History') RETURNING id"
        ).fetchone()
        assert row is not None
        for start in range(0, events, PREFILL_BATCH):
            conn.execute(
                "INSERT INTO messages (user_id, content) "
                "SELECT %s, 'history ' || n FROM generate_series(1, %s) AS n",
                [row[0], min(PREFILL_BATCH, events - start)],
            )


# --------------------------------------------------------------------------------------------
# Clients and writers


async def sign_in(
    http: aiohttp.ClientSession, url: str, email: str = "bench@example.com", name: str = "Bench"
) -> tuple[int, str]:
    """Dev login as one user; returns the user id and the session's Cookie header."""
    async with http.post(
        url + "/auth/dev-login", json={"email": email, "name": name}, headers={"Origin": url}
    ) as response:
        if response.status != 200:
            raise BenchError(f"dev login failed: {response.status} {await response.text()}")
        body = await response.json()
    user_id = body["user"]["id"]
    assert isinstance(user_id, int)
    cookies = http.cookie_jar.filter_cookies(URL(url))
    return user_id, "; ".join(f"{name}={morsel.value}" for name, morsel in cookies.items())


async def sign_in_many(
    url: str, people: Sequence[tuple[str, str]], concurrency: int = CONNECT_CONCURRENCY
) -> list[tuple[int, str]]:
    """Dev login as each (email, name), `concurrency` at a time, each in a cookie jar of its
    own over one connection pool; the user ids and Cookie headers, in the order of `people`."""
    limit = asyncio.Semaphore(concurrency)
    async with aiohttp.TCPConnector(limit=concurrency) as connector:

        async def one(email: str, name: str) -> tuple[int, str]:
            jar = aiohttp.CookieJar(unsafe=True)
            async with (
                limit,
                aiohttp.ClientSession(
                    connector=connector, connector_owner=False, cookie_jar=jar
                ) as http,
            ):
                return await sign_in(http, url, email, name)

        results = await asyncio.gather(*(one(*p) for p in people), return_exceptions=True)
    signed_in = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise BenchError(f"{len(errors)} of {len(people)} sign-ins failed: {errors[0]!r}")
    return signed_in


ReceiverFactory = Callable[[int, bytes, str, bool], Receiver]
"""Builds a socket's Receiver from (index, upgrade request, expected accept, expect connected)."""


async def open_sockets(
    port: int,
    path: str,
    origin: str,
    cookie: str | None,
    count: int,
    expect_connected: bool,
    factory: ReceiverFactory = Receiver,
) -> list[Receiver]:
    """Open `count` sockets, a few at a time; with `expect_connected`, each has had its
    `connected` frame (pgcast's promise that nothing committed after it is missed)."""
    receivers, errors = await try_open_sockets(
        port, path, origin, cookie, count, expect_connected, factory=factory
    )
    if errors:
        await close_sockets(receivers)
        raise BenchError(f"{len(errors)} of {count} sockets failed to open: {errors[0]!r}")
    return receivers


async def try_open_sockets(
    port: int,
    path: str,
    origin: str,
    cookie: str | None,
    count: int,
    expect_connected: bool,
    concurrency: int = CONNECT_CONCURRENCY,
    first_index: int = 0,
    factory: ReceiverFactory = Receiver,
) -> tuple[list[Receiver], list[BaseException]]:
    """Like open_sockets, `concurrency` handshakes at a time, but never raises: returns the
    sockets that opened (by index) and the errors of those that did not (already closed)."""
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(concurrency)
    receivers: list[Receiver] = []
    failed: list[Receiver] = []

    async def connect(index: int) -> None:
        request, accept = handshake(port, path, origin, cookie)
        receiver = factory(index, request, accept, expect_connected)
        async with limit, asyncio.timeout(CONNECT_TIMEOUT):
            await loop.create_connection(lambda: receiver, HOST, port)
            try:
                await receiver.opened
            except BaseException:
                failed.append(receiver)
                raise
            receivers.append(receiver)

    indexes = range(first_index, first_index + count)
    results = await asyncio.gather(*(connect(i) for i in indexes), return_exceptions=True)
    await close_sockets(failed)
    receivers.sort(key=lambda r: r.index)
    return receivers, [r for r in results if isinstance(r, BaseException)]


async def close_sockets(receivers: list[Receiver]) -> None:
    await asyncio.gather(*(r.close() for r in receivers), return_exceptions=True)


async def wait_delivered(receivers: list[Receiver], limit_seconds: float) -> bool:
    """Until every socket has its expected frames (or closed); False on timeout."""
    try:
        async with asyncio.timeout(limit_seconds):
            for receiver in receivers:
                await receiver.done.wait()
    except TimeoutError:
        return False
    return True


def content_for(label: str, seq: int, chars: int) -> str:
    text = f"bench {label} {seq} sent_at={time.time():.6f} "
    return text + "x" * max(0, chars - len(text))


async def fetch_metrics(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with http.get(url + "/metrics") as response:
        return parse_metrics(await response.text())


def connect_writer(conninfo: str) -> psycopg.Connection[Any]:
    return psycopg.connect(conninfo, application_name="pgcast-bench")


@dataclass
class SteadyWrites:
    ids: list[int]
    committed: dict[int, float]
    commit_rtts: list[float]
    seconds: float


def write_steadily(
    conn: psycopg.Connection[Any], user_id: int, count: int, rate: float, chars: int
) -> SteadyWrites:
    """One INSERT ... RETURNING per transaction at `rate`/s; the commit time of a message is
    `time.time()` right after COMMIT returns. Runs in a thread of the load generator, so the
    clock is the receivers' and the pace does not depend on how busy their event loop is."""
    result = SteadyWrites([], {}, [], 0.0)
    began = time.monotonic()
    for seq in range(count):
        delay = began + seq / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        row = conn.execute(
            INSERT_ONE, {"user_id": user_id, "content": content_for("latency", seq, chars)}
        ).fetchone()
        assert row is not None
        before = time.time()
        conn.commit()
        after = time.time()
        result.ids.append(row[0])
        result.committed[row[0]] = after
        result.commit_rtts.append(after - before)
    result.seconds = time.monotonic() - began
    return result


def write_burst(
    conn: psycopg.Connection[Any], user_id: int, batches: list[list[str]]
) -> tuple[list[int], float]:
    """One multi-row INSERT per transaction, back to back; returns the ids and the seconds."""
    ids: list[int] = []
    began = time.monotonic()
    for contents in batches:
        rows = conn.execute(INSERT_MANY, {"user_id": user_id, "contents": contents}).fetchall()
        conn.commit()
        ids.extend(row[0] for row in rows)
    return sorted(ids), time.monotonic() - began


# --------------------------------------------------------------------------------------------
# Phases


@dataclass
class LatencyResult:
    messages: int
    seconds: float
    achieved_rate: float
    all_pairs: dict[str, float]
    first_socket: dict[str, float]
    last_socket: dict[str, float]
    commit_rtt: dict[str, float]
    delivery: Delivery
    usage: Usage
    metrics: dict[str, float] = field(default_factory=dict)


async def latency_phase(
    conn: psycopg.Connection[Any],
    user_id: int,
    receivers: list[Receiver],
    args: argparse.Namespace,
    meter: Meter,
) -> LatencyResult:
    for receiver in receivers:
        receiver.start_phase(args.messages)
    meter.start()
    writes = await asyncio.to_thread(
        write_steadily, conn, user_id, args.messages, args.rate, args.content_chars
    )
    await wait_delivered(receivers, SETTLE_TIMEOUT)
    usage = await meter.stop()

    pairs: list[float] = []
    per_message: dict[int, list[float]] = {}
    for receiver in receivers:
        for received, found in zip(receiver.times, receiver.ids, strict=True):
            sent = writes.committed.get(found)
            if sent is not None:
                pairs.append(received - sent)
                per_message.setdefault(found, []).append(received - sent)
    return LatencyResult(
        messages=args.messages,
        seconds=writes.seconds,
        achieved_rate=args.messages / writes.seconds if writes.seconds > 0 else math.nan,
        all_pairs=summarize_ms(pairs),
        first_socket=summarize_ms([min(v) for v in per_message.values()]),
        last_socket=summarize_ms([max(v) for v in per_message.values()]),
        commit_rtt=summarize_ms(writes.commit_rtts),
        delivery=check_delivery(receivers, writes.ids),
        usage=usage,
    )


@dataclass
class FanoutResult:
    name: str
    frames: int
    seconds: float
    frames_per_second: float
    insert_seconds: float
    delivery: Delivery
    usage: Usage
    completed: bool
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def server_us_per_frame(self) -> float:
        """Server CPU time per frame received: what a saturated server core would allow."""
        return _us_per_frame(self.usage, self.frames)


def _throughput(receivers: list[Receiver]) -> tuple[int, float]:
    frames = sum(len(r.times) for r in receivers)
    firsts = [r.times[0] for r in receivers if r.times]
    lasts = [r.times[-1] for r in receivers if r.times]
    if not firsts:
        return 0, math.nan
    return frames, max(lasts) - min(firsts)


def _settle_seconds(frames: int) -> float:
    return SETTLE_TIMEOUT + frames / 5000


async def fanout_phase(
    conn: psycopg.Connection[Any],
    user_id: int,
    receivers: list[Receiver],
    args: argparse.Namespace,
    meter: Meter,
) -> tuple[FanoutResult, list[int], list[str]]:
    for receiver in receivers:
        receiver.start_phase(args.burst, keep_text=receiver.index == 0)
    batches = [
        [content_for("burst", seq, args.content_chars) for seq in range(s, s + args.batch)]
        for s in range(0, args.burst, args.batch)
    ]
    batches[-1] = batches[-1][: args.burst - args.batch * (len(batches) - 1)]
    meter.start()
    ids, inserted = await asyncio.to_thread(write_burst, conn, user_id, batches)
    completed = await wait_delivered(receivers, _settle_seconds(args.burst * len(receivers)))
    usage = await meter.stop()
    frames, seconds = _throughput(receivers)
    result = FanoutResult(
        name="pgcast",
        frames=frames,
        seconds=seconds,
        frames_per_second=frames / seconds if seconds > 0 else math.nan,
        insert_seconds=inserted,
        delivery=check_delivery(receivers, ids),
        usage=usage,
        completed=completed,
    )
    return result, ids, receivers[0].texts if receivers else []


async def run_pgcast(
    args: argparse.Namespace, conninfo: str, workdir: Path, postmaster: psutil.Process | None
) -> tuple[LatencyResult, FanoutResult, list[int], list[str], ServerProcess]:
    port = free_port()
    url = f"http://{HOST}:{port}"
    server = await ServerProcess.start(
        "pgcast serve",
        [sys.executable, "-m", "server", "serve", "--no-migrate"],
        pgcast_env(conninfo, workdir / "server-data", port),
    )
    conn: psycopg.Connection[Any] | None = None
    try:
        await server.wait_ready(url + "/readyz")
        meter = Meter.for_server(server.pid, postmaster)
        writer = await asyncio.to_thread(connect_writer, conninfo)
        conn = writer
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            user_id, cookie = await sign_in(http, url)
            receivers = await open_sockets(port, "/ws", url, cookie, args.sockets, True)
            try:
                before = await fetch_metrics(http, url)
                latency = await latency_phase(writer, user_id, receivers, args, meter)
                middle = await fetch_metrics(http, url)
                fanout, ids, texts = await fanout_phase(writer, user_id, receivers, args, meter)
                after = await fetch_metrics(http, url)
            finally:
                await close_sockets(receivers)
            latency.metrics = metrics_delta(before, middle)
            fanout.metrics = metrics_delta(middle, after)
    finally:
        if conn is not None:
            await asyncio.to_thread(conn.close)
        await server.stop()
    return latency, fanout, ids, texts, server


async def run_baseline(
    args: argparse.Namespace, frames: list[str], expected_ids: list[int], workdir: Path
) -> tuple[FanoutResult, ServerProcess]:
    frames_file = workdir / "baseline-frames.json"
    await asyncio.to_thread(frames_file.write_text, json.dumps(frames))
    port = free_port()
    url = f"http://{HOST}:{port}"
    command = [sys.executable, str(BENCH_DIR / "baseline_server.py"), "--port", str(port)]
    server = await ServerProcess.start(
        "baseline server", [*command, "--frames", str(frames_file)], dict(os.environ)
    )
    try:
        await server.wait_ready(url + "/ready")
        meter = Meter(
            {"server": (psutil.Process(server.pid), False), "loadgen": (psutil.Process(), False)}
        )
        async with aiohttp.ClientSession() as http:
            receivers = await open_sockets(port, "/ws", url, None, args.sockets, False)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    while True:
                        async with http.get(url + "/ready") as response:
                            if (await response.json())["sockets"] >= len(receivers):
                                break
                        await asyncio.sleep(0.02)
                for receiver in receivers:
                    receiver.start_phase(len(frames))
                meter.start()
                async with http.post(url + "/go") as response:
                    await response.read()
                completed = await wait_delivered(
                    receivers, _settle_seconds(len(frames) * len(receivers))
                )
                usage = await meter.stop()
                count, seconds = _throughput(receivers)
                result = FanoutResult(
                    name="baseline",
                    frames=count,
                    seconds=seconds,
                    frames_per_second=count / seconds if seconds > 0 else math.nan,
                    insert_seconds=0.0,
                    delivery=check_delivery(receivers, expected_ids),
                    usage=usage,
                    completed=completed,
                )
            finally:
                await close_sockets(receivers)
    finally:
        await server.stop()
    return result, server


# --------------------------------------------------------------------------------------------
# Report


def usage_notes(phases: list[tuple[str, Usage]]) -> list[str]:
    """What makes figures hard to read: other load on the host, a saturated load generator."""
    notes = []
    for phase, usage in phases:
        if usage.others_percent > NOISY_OTHERS_PERCENT:
            notes.append(
                f"{phase}: other processes on the host used {usage.others_percent:.0f}% of a "
                "core: the figures are noisy; rerun on a quiet machine"
            )
        if usage.cpu_percent.get("loadgen", 0.0) > SATURATED_PERCENT:
            notes.append(
                f"{phase}: the load generator used {usage.cpu_percent['loadgen']:.0f}% of a core: "
                "it may be the bottleneck, so frames/s is a lower bound"
            )
    return notes


def _us_per_frame(usage: Usage, frames: int) -> float:
    cpu_seconds = usage.cpu_percent.get("server", math.nan) / 100 * usage.seconds
    return 1e6 * cpu_seconds / frames if frames else math.nan


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def _ms(summary: dict[str, float], *keys: str) -> str:
    return " / ".join(f"{summary[k]:.1f}" for k in keys)


def _cpu(usage: Usage, *names: str) -> str:
    parts = [
        f"{name} {usage.cpu_percent[name]:.0f}%" for name in names if name in usage.cpu_percent
    ]
    parts.append(f"everything else {usage.others_percent:.0f}%")
    return ", ".join(parts)


def _notify_to_send_ms(metrics: dict[str, float]) -> str:
    count = metrics.get("pgcast_notify_to_send_seconds_count", 0.0)
    total = metrics.get("pgcast_notify_to_send_seconds_sum", 0.0)
    return f"{1000 * total / count:.1f}" if count else "n/a"


def render_report(result: dict[str, Any]) -> str:
    latency: LatencyResult = result["_latency"]
    fanout: FanoutResult = result["_fanout"]
    baseline: FanoutResult = result["_baseline"]
    args: argparse.Namespace = result["_args"]
    lu, fu, bu = latency.usage, fanout.usage, baseline.usage
    rows = [
        (
            "setup",
            f"{args.sockets} sockets, 1 user, {args.content_chars}-char messages, "
            f"{result['cpus']} CPUs, database: {result['database']}, "
            f"{args.prefill_events} older events, "
            f"load average at start {result['load_average']:.1f}",
        ),
        (
            "latency: messages, target / achieved rate",
            f"{latency.messages}, {args.rate:.0f} / {latency.achieved_rate:.0f} msg/s",
        ),
        (
            "**commit→socket p50 / p99 / p99.9 / max (ms)**",
            "**"
            + _ms(latency.all_pairs, "p50", "p99", "p99.9", "max")
            + "**"
            + f" ({int(latency.all_pairs['count'])} pairs)",
        ),
        (
            "first socket per message p50 / p99 / max (ms)",
            _ms(latency.first_socket, "p50", "p99", "max"),
        ),
        (
            "last socket per message p50 / p99 / max (ms)",
            _ms(latency.last_socket, "p50", "p99", "max"),
        ),
        (
            "COMMIT round trip p50 / p99 (ms), uncertainty of the commit instant",
            _ms(latency.commit_rtt, "p50", "p99"),
        ),
        ("latency phase CPU (% of one core)", _cpu(lu, "server", "postgres", "loadgen")),
        (
            "latency phase: server CPU per frame (µs); notify→send mean (ms, server metric)",
            f"{_us_per_frame(lu, latency.delivery.frames):.1f}; "
            f"{_notify_to_send_ms(latency.metrics)}",
        ),
        (
            "fan-out burst",
            f"{args.burst} messages in {math.ceil(args.burst / args.batch)} INSERTs of "
            f"{args.batch} rows (inserted in {1000 * fanout.insert_seconds:.0f} ms)",
        ),
        (
            "**pgcast fan-out frames/s**",
            f"**{fanout.frames_per_second:,.0f}** ({fanout.frames} frames in "
            f"{fanout.seconds:.2f} s)",
        ),
        (
            "**baseline frames/s** (bare aiohttp, same frames)",
            f"**{baseline.frames_per_second:,.0f}** ({baseline.frames} frames in "
            f"{baseline.seconds:.2f} s)",
        ),
        ("**pgcast / baseline**", f"**{result['ratio']:.2f}**"),
        (
            "server CPU per frame (µs): pgcast / baseline",
            f"{fanout.server_us_per_frame:.1f} / {baseline.server_us_per_frame:.1f} "
            f"(baseline / pgcast = {result['cpu_ratio']:.2f})",
        ),
        ("fan-out CPU (% of one core)", _cpu(fu, "server", "postgres", "loadgen")),
        ("fan-out peak RSS: server (MB)", f"{fu.peak_rss_mb['server']:.0f}"),
        (
            "fan-out: pgcast notify→send mean (ms, server metric)",
            _notify_to_send_ms(fanout.metrics),
        ),
        ("baseline CPU (% of one core)", _cpu(bu, "server", "loadgen")),
        ("baseline peak RSS: server (MB)", f"{bu.peak_rss_mb['server']:.0f}"),
        (
            "delivery check latency / fan-out / baseline",
            " / ".join(
                "ok" if d.ok else "FAIL"
                for d in (latency.delivery, fanout.delivery, baseline.delivery)
            ),
        ),
        (
            "fan-out losses / duplicates / out-of-order",
            f"{fanout.delivery.losses} / {fanout.delivery.duplicates} / "
            f"{fanout.delivery.out_of_order}",
        ),
        (
            "server frames_delivered metric vs frames received",
            f"{result['frames_delivered_metric']:.0f} vs {result['frames_received']}",
        ),
        (
            "server log warnings/errors; slow-socket closes; listener reconnects",
            f"{result['server_warnings']}; {result['slow_closes']:.0f}; "
            f"{result['listener_reconnects']:.0f}",
        ),
        (
            "server exit codes: pgcast / baseline",
            f"{result['pgcast_exit_code']} / {result['baseline_exit_code']}",
        ),
    ]
    lines = [
        f"## pgcast quick bench, {result['timestamp']}",
        "",
        f"`{result['command']}`",
        "",
        "| figure | value |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    return finish_report(lines, result)


def _usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "seconds": usage.seconds,
        "cpu_percent": usage.cpu_percent,
        "peak_rss_mb": usage.peak_rss_mb,
        "host_cpu_percent": usage.host_cpu_percent,
        "others_percent": usage.others_percent,
    }


def _delivery_dict(delivery: Delivery) -> dict[str, Any]:
    return {
        "ok": delivery.ok,
        "frames": delivery.frames,
        "losses": delivery.losses,
        "duplicates": delivery.duplicates,
        "out_of_order": delivery.out_of_order,
        "unexpected": delivery.unexpected,
        "other_frames": delivery.other_frames,
        "closed_sockets": delivery.closed_sockets,
        "samples": delivery.samples,
    }


# --------------------------------------------------------------------------------------------
# Entry points


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/quick.py", description="Quick pgcast latency and fan-out benchmark."
    )
    parser.add_argument("--sockets", type=int, help=f"sockets (default {DEFAULTS['sockets']})")
    parser.add_argument(
        "--messages", type=int, help=f"latency-phase messages (default {DEFAULTS['messages']})"
    )
    parser.add_argument(
        "--rate", type=float, help=f"latency-phase messages/s (default {DEFAULTS['rate']:.0f})"
    )
    parser.add_argument("--burst", type=int, help=f"fan-out messages (default {DEFAULTS['burst']})")
    parser.add_argument(
        "--batch", type=int, help=f"rows per INSERT in the burst ({DEFAULTS['batch']})"
    )
    parser.add_argument(
        "--content-chars", type=int, help=f"message length (default {DEFAULTS['content_chars']})"
    )
    parser.add_argument(
        "--prefill-events",
        type=int,
        default=0,
        metavar="N",
        help="write N older messages (1000 per transaction) before the server starts (default 0)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few seconds: 5 sockets, 50 messages, burst of 200 (explicit options still win)",
    )
    add_report_options(parser)
    args = parser.parse_args(argv)
    settle_options(
        parser,
        args,
        SMOKE if args.smoke else DEFAULTS,
        ("sockets", "messages", "burst", "batch", "content_chars"),
    )
    if args.prefill_events < 0:
        parser.error("--prefill-events must be 0 or more")
    if not args.rate > 0:
        parser.error("--rate must be more than 0")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def _raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _bench(
    args: argparse.Namespace, conninfo: str, workdir: Path, postmaster: psutil.Process | None
) -> dict[str, Any]:
    latency, fanout, ids, texts, pgcast = await run_pgcast(args, conninfo, workdir, postmaster)
    baseline, base_server = await run_baseline(args, texts, ids, workdir)
    problems: list[str] = []
    for label, delivery in (
        ("latency phase", latency.delivery),
        ("fan-out phase", fanout.delivery),
        ("baseline", baseline.delivery),
    ):
        if not delivery.ok:
            problems.append(f"{label} delivery FAILED: {delivery.describe()}")
            problems.extend(f"{label}: {sample}" for sample in delivery.samples)
    if len(texts) != args.burst:
        problems.append(f"socket 0 got {len(texts)} of {args.burst} burst frames for the baseline")
    if pgcast.exit_code != 0:
        problems.append(f"pgcast serve exited with {pgcast.exit_code}")
    frames_metric = latency.metrics.get("pgcast_frames_delivered_total", 0.0) + fanout.metrics.get(
        "pgcast_frames_delivered_total", 0.0
    )
    frames_received = latency.delivery.frames + fanout.delivery.frames
    slow = latency.metrics.get("pgcast_slow_sockets_closed_total", 0.0) + fanout.metrics.get(
        "pgcast_slow_sockets_closed_total", 0.0
    )
    reconnects = latency.metrics.get("pgcast_listener_reconnects_total", 0.0) + fanout.metrics.get(
        "pgcast_listener_reconnects_total", 0.0
    )
    ratio = _ratio(fanout.frames_per_second, baseline.frames_per_second)
    notes = usage_notes(
        [("latency", latency.usage), ("fan-out", fanout.usage), ("baseline", baseline.usage)]
    )
    return {
        "_args": args,
        "_latency": latency,
        "_fanout": fanout,
        "_baseline": baseline,
        "latency_ms": latency.all_pairs,
        "latency_first_socket_ms": latency.first_socket,
        "latency_last_socket_ms": latency.last_socket,
        "commit_rtt_ms": latency.commit_rtt,
        "latency_achieved_rate": latency.achieved_rate,
        "latency_usage": _usage_dict(latency.usage),
        "latency_server_us_per_frame": _us_per_frame(latency.usage, latency.delivery.frames),
        "latency_delivery": _delivery_dict(latency.delivery),
        "pgcast_frames_per_second": fanout.frames_per_second,
        "baseline_frames_per_second": baseline.frames_per_second,
        "ratio": ratio,
        "pgcast_server_us_per_frame": fanout.server_us_per_frame,
        "baseline_server_us_per_frame": baseline.server_us_per_frame,
        "cpu_ratio": _ratio(baseline.server_us_per_frame, fanout.server_us_per_frame),
        "fanout_usage": _usage_dict(fanout.usage),
        "fanout_delivery": _delivery_dict(fanout.delivery),
        "fanout_insert_seconds": fanout.insert_seconds,
        "baseline_usage": _usage_dict(baseline.usage),
        "baseline_delivery": _delivery_dict(baseline.delivery),
        "frames_delivered_metric": frames_metric,
        "frames_received": frames_received,
        "slow_closes": slow,
        "listener_reconnects": reconnects,
        "notify_to_send_mean_ms": {
            "latency": _notify_to_send_ms(latency.metrics),
            "fanout": _notify_to_send_ms(fanout.metrics),
        },
        "server_warnings": pgcast.warning_count,
        "server_warning_samples": pgcast.warnings,
        "pgcast_exit_code": pgcast.exit_code,
        "baseline_exit_code": base_server.exit_code,
        "problems": problems,
        "notes": notes,
    }


BenchCoroutine = Callable[
    [argparse.Namespace, str, Path, psutil.Process | None], Coroutine[Any, Any, dict[str, Any]]
]


def run_bench(
    args: argparse.Namespace,
    name: str,
    bench: BenchCoroutine,
    render: Callable[[dict[str, Any]], str],
    prepare: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """What every bench script's `run` does around its own `bench` coroutine: a database in a
    temporary directory (`prepare` sees it first), the load generator's loop, the figures
    every report carries, the Markdown from `render`, and the saved report `<name>-*`.
    Keys starting with `_` are for `render` only and are dropped."""
    _raise_open_file_limit()
    started = datetime.now(UTC)
    load_average = os.getloadavg()[0]
    switch_interval = sys.getswitchinterval()
    # A writer thread takes the commit time once it has the GIL back: keep that wait short.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    try:
        with tempfile.TemporaryDirectory(prefix=f"pgcast-{name}-") as tmp:
            workdir = Path(tmp)
            with bench_database(workdir) as (conninfo, postmaster):
                if prepare is not None:
                    prepare(conninfo)
                result = run_load_generator(bench(args, conninfo, workdir, postmaster))
    finally:
        sys.setswitchinterval(switch_interval)
    result["load_average"] = load_average
    result["timestamp"] = started.strftime("%Y-%m-%d %H:%M:%S UTC")
    result["cpus"] = os.cpu_count()
    result["database"] = "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded"
    script = Path(sys.modules[bench.__module__].__file__ or name).name
    result["command"] = " ".join([f".venv/bin/python bench/{script}", *args.argv])
    result["report"] = render(result)
    save_report(result, args, name, started)
    for private in [key for key in result if key.startswith("_")]:
        result.pop(private)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole benchmark once; every figure in a dict. `problems` is empty when delivery
    was complete, exactly-once and in order everywhere. Raises BenchError if it cannot run."""
    return run_bench(
        args,
        "quick",
        _bench,
        render_report,
        prepare=lambda conninfo: prefill(conninfo, args.prefill_events),
    )


def report_head(title: str, result: dict[str, Any]) -> list[str]:
    """A report's first lines: its title and time, the command, and the machine it ran on."""
    return [
        f"## pgcast {title}, {result['timestamp']}",
        "",
        f"`{result['command']}`",
        "",
        f"{result['cpus']} CPUs shared by PostgreSQL, the server and the load generator; "
        f"database: {result['database']}; load average at start {result['load_average']:.1f}.",
    ]


def finish_report(lines: list[str], result: dict[str, Any]) -> str:
    """A report's Markdown: its lines, then the notes and any problems."""
    if result["notes"]:
        lines += ["", "Notes:", "", *(f"- {note}" for note in result["notes"])]
    if result["problems"]:
        lines += ["", "**PROBLEMS**", "", *(f"- {p}" for p in result["problems"])]
    return "\n".join(lines) + "\n"


def add_report_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=BENCH_DIR / "out", help="report directory (bench/out)"
    )
    parser.add_argument("--no-write", action="store_true", help="print the report only")


def settle_options(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    defaults: dict[str, Any],
    positive: Sequence[str],
) -> None:
    """Fill options left unset from `defaults` (the --smoke set or the normal one), then
    refuse any of `positive` below 1."""
    for name, default in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be 1 or more")


def save_report(result: dict[str, Any], args: argparse.Namespace, name: str, started: Any) -> None:
    """Write `result["report"]` to `<out>/<name>-<UTC time>.md`, and every figure to the
    `.json` beside it (bench/report.py reads those), unless --no-write."""
    result["report_path"] = None
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"{name}-{started.strftime('%Y%m%d-%H%M%S')}.md"
        path.write_text(result["report"])
        result["report_path"] = str(path)
        figures = {k: v for k, v in result.items() if k != "report" and not k.startswith("_")}
        path.with_suffix(".json").write_text(json.dumps(figures, indent=1, default=str) + "\n")


def bench_main(
    parse: Callable[[Sequence[str] | None], argparse.Namespace],
    run_bench: Callable[[argparse.Namespace], dict[str, Any]],
    argv: Sequence[str] | None = None,
    errors: tuple[type[BaseException], ...] = (BenchError,),
) -> int:
    """A bench script's command line: print the report; exit 1 if it could not run or a
    check failed."""
    args = parse(argv)
    try:
        result = run_bench(args)
    except errors as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    print(result["report"], end="")
    if result["report_path"]:
        print(f"\nwritten to {result['report_path']}")
    if result["problems"]:
        print("\nbench: CHECK FAILED", file=sys.stderr)
        for problem in result["problems"]:
            print(f"  {problem}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
