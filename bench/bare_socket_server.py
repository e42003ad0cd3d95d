"""The baseline: WebSocket frames pushed by a bare asyncio socket server, no pgcast in it.
bench/README.md says what it answers and how it sends.

    python -m bench.bare_socket_server --port P --frames FILE
"""

import argparse
import asyncio
import json
import signal
from asyncio import Task
from pathlib import Path
from typing import cast
from urllib.parse import parse_qs, urlsplit

from bench.lib.receivers import HOST, accept_key
from server.wire import text_frame

# What the load generator's Receiver waits for before its socket is live.
CONNECTED = '{"event":"connected","channel":"","data":{}}'
# Without a yield a socket whose kernel buffer has room would send everything before the next
# socket starts; every 16 writes keeps sockets interleaved for a small per-write cost.
YIELD_EVERY = 16


class Connection(asyncio.Protocol):
    """One TCP connection: a plain HTTP request (control) or a WebSocket after `GET /ws`."""

    def __init__(self, sockets: set["Connection"], tasks: set[Task], frames: list[bytes]) -> None:
        # The open WebSockets and the tasks sending to them, shared by every connection.
        self.sockets, self.tasks, self.frames = sockets, tasks, frames
        self._buffer, self._upgraded = b"", False
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=64 * 1024)

    def connection_lost(self, exc: Exception | None) -> None:
        self.sockets.discard(self)
        self.resume_writing()

    def pause_writing(self) -> None:
        self._writable = self._writable or asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
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
        for n, chunk in enumerate(chunks, start=1):
            if self._writable is not None:
                await self._writable
            if self.transport.is_closing():
                return
            self.transport.write(chunk)
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _request(self, head: str) -> None:
        request_line, *lines = head.split("\r\n")
        method, target, *_ = [*request_line.split(" "), "", ""]
        url = urlsplit(target)
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        if (method, url.path) == ("GET", "/ws") and "sec-websocket-key" in headers:
            accept = accept_key(headers["sec-websocket-key"])
            self.transport.write(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
            )
            self.transport.write(text_frame(CONNECTED))
            self._upgraded, self._buffer = True, b""
            self.sockets.add(self)
            return
        status, body = "200 OK", {"sockets": len(self.sockets)}
        if (method, url.path) == ("POST", "/go"):
            k = max(1, int(parse_qs(url.query).get("per_write", ["1"])[-1]))
            chunks = [b"".join(self.frames[i : i + k]) for i in range(0, len(self.frames), k)]
            for connection in list(self.sockets):
                task = asyncio.create_task(connection.send_all(chunks))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        elif (method, url.path) != ("GET", "/ready"):
            status, body = "404 Not Found", {"no such route": 0}
        content = json.dumps(body).encode()
        self.transport.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(content)}\r\nConnection: close\r\n\r\n".encode()
            + content
        )
        self.transport.close()


async def serve(port: int, frames: list[str]) -> None:
    loop, stop = asyncio.get_running_loop(), asyncio.Event()
    sockets: set[Connection] = set()
    tasks: set[Task] = set()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    encoded = [text_frame(text) for text in frames]
    listener = await loop.create_server(
        lambda: Connection(sockets, tasks, encoded), HOST, port, backlog=1024
    )
    await stop.wait()
    # Not `async with`/wait_closed: from Python 3.12 that also waits for every connection.
    listener.close()
    for task in list(tasks):
        task.cancel()
    # A peer that stopped reading would hold a graceful close open forever.
    for connection in list(sockets):
        connection.transport.abort()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, json.loads(args.frames.read_text())))
