"""WireWriter.write_each, the hub's write to a channel's sockets, on a real socket."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestServer

from server.transports.websocket import WireWriter
from server.wire import text_frame
from tests.test_stalled_sockets import frames_of

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
# A close frame from the client: masked (with a key of zeros), no status.
CLIENT_CLOSE = b"\x88\x80\x00\x00\x00\x00"
CLOSE = 8


async def test_a_socket_whose_close_frame_went_out_is_refused_and_gets_nothing_after_it() -> None:
    # aiohttp has sent its close frame and waits for the peer's: no data frame may follow
    # it (RFC 6455 5.5.1), though the connection is still open.
    close_seen, tried = asyncio.Event(), asyncio.Event()
    refused: list[list[int]] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        stream = await ws.prepare(request)
        wire = WireWriter(request, ws, stream)
        refused.append(WireWriter.write_each([wire], text_frame("before")))
        closing = asyncio.create_task(ws.close())
        await close_seen.wait()
        refused.append(WireWriter.write_each([wire], text_frame("after")))
        tried.set()
        await closing
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    async with TestServer(app) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(UPGRADE)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101")
        received, frames = b"", []
        while CLOSE not in [opcode for opcode, _ in frames]:
            received += await asyncio.wait_for(reader.read(65536), 10)
            frames, _ = frames_of(received)
        close_seen.set()
        await asyncio.wait_for(tried.wait(), 10)
        writer.write(CLIENT_CLOSE)
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            received += chunk
        writer.close()
    frames, rest = frames_of(received)
    assert refused == [[], [0]]
    assert [opcode for opcode, _ in frames] == [1, CLOSE]
    assert frames[0][1] == b"before"
    assert rest == b""
