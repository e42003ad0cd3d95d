"""Frames encoded once by server/wire.py, read by aiohttp's own client over a real socket."""

from __future__ import annotations

import pytest
from aiohttp import ClientSession, WSMsgType, web
from aiohttp.test_utils import TestServer

from server.wire import text_frame, text_of

# Every header form of RFC 6455: 7-bit, 16-bit and 64-bit lengths, at their edges, and text
# whose UTF-8 is longer than its character count.
TEXTS = ["", "x" * 125, "x" * 126, "x" * 65535, "x" * 65536, "é" * 40000 + "🙂" * 3]


async def test_aiohttp_client_reads_every_length_form_written_in_one_write() -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        stream = await ws.prepare(request)
        assert request.transport is not None
        request.transport.write(b"".join(text_frame(text) for text in TEXTS))
        await stream.drain()
        await ws.receive()
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    async with (
        TestServer(app) as server,
        ClientSession() as http,
        http.ws_connect(server.make_url("/")) as ws,
    ):
        received = [await ws.receive(timeout=10) for _ in TEXTS]
        await ws.close()
    assert [message.type for message in received] == [WSMsgType.TEXT] * len(TEXTS)
    assert [message.data for message in received] == TEXTS


@pytest.mark.parametrize("text", TEXTS, ids=lambda text: f"{len(text)}-chars")
def test_text_of_reads_back_what_text_frame_wrote(text: str) -> None:
    assert text_of(text_frame(text)) == text
