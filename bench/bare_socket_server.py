"""The socket limit for bench/socket_limit.py: WebSocket frames pushed with no framework at all.

A plain asyncio server (stdlib only) on one port:

- `GET /ws` upgrades to a WebSocket (RFC 6455 handshake). Client frames are read and ignored,
  except ping (answered with pong) and close (answered with close, then the connection ends).
- `GET /ready` answers `{"sockets": N, "send_seconds": T}`: how many WebSockets are open, and
  the seconds from the last go to the last socket's last write (null while sending).
- `POST /go?per_write=K` makes every open WebSocket send the frames of `--frames` (a JSON list
  of strings), K frames per `transport.write`, each socket from its own task, as fast as the
  kernel takes them. It answers at once with `{"sockets": N, "frames": F, "per_write": K}`.

The frames are encoded once at startup into complete unmasked text frames, and the K-frame
chunks once per K, shared by every socket: what is left is the event loop and the kernel.
Each socket honours flow control as a real server would: above 64 KiB in its transport's
buffer it waits for `resume_writing` before writing more.

    python bench/bare_socket_server.py --port P --frames FILE
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import resource
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
MAX_HEAD_BYTES = 64 * 1024
MAX_CLIENT_FRAME_BYTES = 1024 * 1024
WRITE_BUFFER_HIGH = 64 * 1024
# Without a yield a socket whose kernel buffer has room would send everything before the next
# socket starts; every 16 writes keeps sockets interleaved for a small per-write cost.
YIELD_EVERY = 16
LISTEN_BACKLOG = 1024
SHUTDOWN_SECONDS = 2.0
GOING_AWAY = 1001


def encode_text_frame(text: str) -> bytes:
    """A complete, final, unmasked text frame (server to client)."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = bytes([0x80 | OP_TEXT, size])
    elif size < 1 << 16:
        header = bytes([0x80 | OP_TEXT, 126]) + size.to_bytes(2)
    else:
        header = bytes([0x80 | OP_TEXT, 127]) + size.to_bytes(8)
    return header + payload


def control_frame(opcode: int, payload: bytes) -> bytes:
    return bytes([0x80 | opcode, len(payload)]) + payload


def accept_key(key: str) -> str:
    digest = hashlib.sha1((key + WS_GUID).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def http_response(status: str, body: dict[str, object]) -> bytes:
    content = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(content)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + content


class BareServer:
    """What every connection shares: the encoded frames, the open WebSockets, their tasks."""

    def __init__(self, frames: Sequence[bytes]) -> None:
        self.frames = list(frames)
        self.sockets: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.send_seconds: float | None = None
        self._go_started = 0.0
        self._chunks: dict[int, list[bytes]] = {}

    def chunks(self, per_write: int) -> list[bytes]:
        if per_write not in self._chunks:
            self._chunks[per_write] = [
                b"".join(self.frames[start : start + per_write])
                for start in range(0, len(self.frames), per_write)
            ]
        return self._chunks[per_write]

    def go(self, per_write: int) -> int:
        chunks = self.chunks(per_write)
        sockets = list(self.sockets)
        self._go_started = time.monotonic()
        self.send_seconds = None if sockets else 0.0
        for connection in sockets:
            task = asyncio.create_task(connection.send_all(chunks))
            self.tasks.add(task)
            task.add_done_callback(self._finished)
        return len(sockets)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not self.tasks:
            self.send_seconds = time.monotonic() - self._go_started
        if not task.cancelled() and (error := task.exception()) is not None:
            traceback.print_exception(error, file=sys.stderr)

    async def shutdown(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        connections = list(self.sockets)
        for connection in connections:
            connection.close(GOING_AWAY)
        lost = [connection.lost for connection in connections]
        if lost:
            await asyncio.wait(lost, timeout=SHUTDOWN_SECONDS)
        # A peer that stopped reading would hold a graceful close open forever.
        for connection in connections:
            connection.abort()


class Connection(asyncio.Protocol):
    """One TCP connection: a plain HTTP request (control) or a WebSocket after `GET /ws`."""

    def __init__(self, server: BareServer) -> None:
        loop = asyncio.get_running_loop()
        self.server = server
        self.lost: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._upgraded = False
        self._close_sent = False
        self._writable: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.sockets.discard(self)
        self._wake()
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._upgraded:
            self._read_frames()
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                self._reply("431 Request Header Fields Too Large", {"error": "head too long"})
            return
        head, self._buffer = self._buffer[:end].decode("latin-1"), self._buffer[end + 4 :]
        self._request(head)
        if self._upgraded and self._buffer:
            self._read_frames()

    # Sending

    async def send_all(self, chunks: Sequence[bytes]) -> None:
        transport = self._transport
        assert transport is not None
        since_yield = 0
        for chunk in chunks:
            if self._writable is not None:
                await self._writable
                since_yield = 0
            if transport.is_closing() or self._close_sent:
                return
            transport.write(chunk)
            since_yield += 1
            if since_yield >= YIELD_EVERY:
                since_yield = 0
                await asyncio.sleep(0)

    def close(self, code: int) -> None:
        """Close handshake from this side; the peer's answer is not awaited."""
        self._send_close(code.to_bytes(2))

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _wake(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _send_close(self, payload: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        if not self._close_sent:
            self._close_sent = True
            self._transport.write(control_frame(OP_CLOSE, payload[:2]))
        self._transport.close()

    # HTTP

    def _request(self, head: str) -> None:
        request_line, *header_lines = head.split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3:
            self._reply("400 Bad Request", {"error": "bad request line"})
            return
        method, target, _version = parts
        url = urlsplit(target)
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if method == "GET" and url.path == "/ws":
            self._upgrade(headers)
        elif method == "GET" and url.path == "/ready":
            self._reply(
                "200 OK",
                {"sockets": len(self.server.sockets), "send_seconds": self.server.send_seconds},
            )
        elif method == "POST" and url.path == "/go":
            self._go(parse_qs(url.query))
        else:
            self._reply("404 Not Found", {"error": f"no {method} {url.path}"})

    def _upgrade(self, headers: dict[str, str]) -> None:
        key = headers.get("sec-websocket-key", "")
        if (
            headers.get("upgrade", "").lower() != "websocket"
            or "upgrade" not in headers.get("connection", "").lower()
            or headers.get("sec-websocket-version") != "13"
            or not key
        ):
            self._reply("400 Bad Request", {"error": "not a WebSocket upgrade"})
            return
        assert self._transport is not None
        self._transport.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
            ).encode()
        )
        self._upgraded = True
        self.server.sockets.add(self)

    def _go(self, query: dict[str, list[str]]) -> None:
        try:
            per_write = int(query.get("per_write", ["1"])[-1])
        except ValueError:
            per_write = 0
        if per_write < 1:
            self._reply("400 Bad Request", {"error": "per_write must be a whole number >= 1"})
            return
        sockets = self.server.go(per_write)
        self._reply(
            "200 OK",
            {"sockets": sockets, "frames": len(self.server.frames), "per_write": per_write},
        )

    def _reply(self, status: str, body: dict[str, object]) -> None:
        assert self._transport is not None
        self._transport.write(http_response(status, body))
        self._transport.close()

    # Client frames

    def _read_frames(self) -> None:
        """Masked client frames: only ping and close matter; the rest is skipped."""
        buffer, position = self._buffer, 0
        while len(buffer) - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length, header = second & 0x7F, 2
            if length == 126:
                if len(buffer) - position < 4:
                    break
                length, header = int.from_bytes(buffer[position + 2 : position + 4]), 4
            elif length == 127:
                if len(buffer) - position < 10:
                    break
                length, header = int.from_bytes(buffer[position + 2 : position + 10]), 10
            if not second & 0x80 or length > MAX_CLIENT_FRAME_BYTES:
                # RFC 6455 5.1: a server closes on an unmasked client frame (1002).
                self._send_close((1002).to_bytes(2))
                self._buffer = b""
                return
            start = position + header + 4
            end = start + length
            if end > len(buffer):
                break
            opcode = first & 0x0F
            if opcode in (OP_CLOSE, OP_PING):
                mask = buffer[start - 4 : start]
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buffer[start:end]))
                if opcode == OP_CLOSE:
                    self._send_close(payload[:2])
                    self._buffer = b""
                    return
                if self._transport is not None and not self._transport.is_closing():
                    self._transport.write(control_frame(OP_PONG, payload[:125]))
            position = end
        self._buffer = buffer[position:]


def load_frames(path: Path) -> list[bytes]:
    frames = json.loads(path.read_text())
    if not isinstance(frames, list) or not all(isinstance(f, str) for f in frames):
        raise ValueError("--frames must hold a JSON list of strings")
    return [encode_text_frame(text) for text in frames]


def raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(port: int, frames: list[bytes]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    state = BareServer(frames)
    listener = await loop.create_server(
        lambda: Connection(state), HOST, port, backlog=LISTEN_BACKLOG
    )
    print(f"bare serving {HOST}:{port} ({len(frames)} frames)", file=sys.stderr, flush=True)
    await stop.wait()
    # Not `async with`/wait_closed: from Python 3.12 that also waits for every connection.
    listener.close()
    await state.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        frames = load_frames(args.frames)
    except (OSError, ValueError) as error:
        print(f"bare: {error}", file=sys.stderr)
        return 2
    raise_open_file_limit()
    asyncio.run(serve(args.port, frames))
    return 0


if __name__ == "__main__":
    sys.exit(main())
