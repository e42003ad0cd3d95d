"""The socket limit for bench/socket_limit.py: WebSocket frames pushed with no framework.

A plain asyncio server (stdlib only). `GET /ws` upgrades to a WebSocket; of the client's
frames only close matters (answered, then the connection ends). `GET /ready` answers
`{"sockets": N}`. `POST /go?per_write=K` makes every socket send the frames of `--frames`
(a JSON list of strings), encoded once, K frames per `transport.write`, each socket from its
own task, honouring flow control (above 64 KiB buffered it waits for `resume_writing`).

    python bench/bare_socket_server.py --port P --frames FILE
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import signal
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Without a yield a socket whose kernel buffer has room would send everything before the next
# socket starts; every 16 writes keeps sockets interleaved for a small per-write cost.
YIELD_EVERY = 16


def text_frame(text: str) -> bytes:
    """A complete, final, unmasked text frame (server to client)."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes([0x81, size]) + payload
    if size < 1 << 16:
        return bytes([0x81, 126]) + size.to_bytes(2) + payload
    return bytes([0x81, 127]) + size.to_bytes(8) + payload


class BareServer:
    """What every connection shares: the encoded frames, the open WebSockets, their tasks."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.sockets: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    def go(self, per_write: int) -> int:
        frames = self.frames
        chunks = [b"".join(frames[i : i + per_write]) for i in range(0, len(frames), per_write)]
        for connection in list(self.sockets):
            task = asyncio.create_task(connection.send_all(chunks))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return len(self.sockets)


class Connection(asyncio.Protocol):
    """One TCP connection: a plain HTTP request (control) or a WebSocket after `GET /ws`."""

    def __init__(self, server: BareServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self._upgraded = False
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=64 * 1024)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.sockets.discard(self)
        self.resume_writing()

    def pause_writing(self) -> None:
        self._writable = self._writable or asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self._buffer += data
        if self._upgraded:
            # The receivers send no frame but a close (a pong answers a ping, never sent here).
            if self._buffer[0] & 0x0F == 0x8:
                self.transport.write(bytes([0x88, 2]) + (1000).to_bytes(2))
                self.transport.close()
            self._buffer = b""
        elif (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            self._request(self._buffer[:end].decode("latin-1"))

    async def send_all(self, chunks: list[bytes]) -> None:
        assert self.transport is not None
        for n, chunk in enumerate(chunks, start=1):
            if self._writable is not None:
                await self._writable
            if self.transport.is_closing():
                return
            self.transport.write(chunk)
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _request(self, head: str) -> None:
        assert self.transport is not None
        request_line, *lines = head.split("\r\n")
        method, target, *_ = [*request_line.split(" "), "", ""]
        url = urlsplit(target)
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        if (method, url.path) == ("GET", "/ws") and "sec-websocket-key" in headers:
            key = headers["sec-websocket-key"] + WS_GUID
            digest = hashlib.sha1(key.encode(), usedforsecurity=False).digest()
            accept = base64.b64encode(digest).decode()
            self.transport.write(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
            )
            self._upgraded, self._buffer = True, b""
            self.server.sockets.add(self)
            return
        if (method, url.path) == ("GET", "/ready"):
            status, body = "200 OK", {"sockets": len(self.server.sockets)}
        elif (method, url.path) == ("POST", "/go"):
            per_write = int(parse_qs(url.query).get("per_write", ["1"])[-1])
            status, body = "200 OK", {"sockets": self.server.go(max(1, per_write))}
        else:
            status, body = "404 Not Found", {"error": f"no {method} {url.path}"}
        content = json.dumps(body).encode()
        self.transport.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(content)}\r\nConnection: close\r\n\r\n".encode()
            + content
        )
        self.transport.close()


async def serve(port: int, frames: list[bytes]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    state = BareServer(frames)
    listener = await loop.create_server(lambda: Connection(state), HOST, port, backlog=1024)
    print(f"bare serving {HOST}:{port} ({len(frames)} frames)", file=sys.stderr, flush=True)
    await stop.wait()
    # Not `async with`/wait_closed: from Python 3.12 that also waits for every connection.
    listener.close()
    for task in list(state.tasks):
        task.cancel()
    # A peer that stopped reading would hold a graceful close open forever.
    for connection in list(state.sockets):
        if connection.transport is not None:
            connection.transport.abort()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(
        serve(args.port, [text_frame(text) for text in json.loads(args.frames.read_text())])
    )
