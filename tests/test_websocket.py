"""/ws: who may connect, cursors it refuses, frames it refuses, and shutdown."""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import struct
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from server.core.cursor import Cursor
from server.keys import HUB
from server.wire import text_frame
from tests.conftest import (
    Client,
    RunningServer,
    create_database_from,
    drop_database,
    server_config,
    start_server,
)
from tests.test_cursor import DEEPLY_NESTED_CURSOR
from tests.test_stalled_sockets import (
    client_frame,
    eventually,
    read_until,
    sees_end_of_connection,
    send_upgrade,
    start_server_with_heartbeat,
)


async def refused_cursor(client: Client, cursor: str) -> str:
    """Connect with `?after=cursor`, expect a 4400 close, return its reason."""
    ws = await client.http.ws_connect(
        client.server.ws_url + f"?after={cursor}", headers={"Origin": client.server.origin}
    )
    message = await ws.receive(timeout=10)
    assert message.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 4400
    assert message.extra
    return str(message.extra)


async def signed_in(client_factory: Any) -> Client:
    client: Client = client_factory()
    await client.sign_in("alice@example.com", "Alice")
    return client


async def test_websocket_without_session_is_refused_before_upgrade(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(server.ws_url)
    assert refused.value.status == 401


async def test_cross_site_websocket_is_refused_with_403(client_factory: Any) -> None:
    alice = await signed_in(client_factory)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await alice.http.ws_connect(alice.server.ws_url, headers={"Origin": "https://evil.example"})
    assert refused.value.status == 403


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "",
        "W10",
        "WzEsImFiYyIsMSwiMTA6NTo3Il0",
        "eyJhIjogMX0",
        "!!!!",
        "A" * 5000,
        DEEPLY_NESTED_CURSOR,
    ],
)
async def test_unreadable_cursor_closes_with_4400(client_factory: Any, cursor: str) -> None:
    alice = await signed_in(client_factory)
    await refused_cursor(alice, cursor)


async def test_cursor_from_the_future_closes_with_4400(client_factory: Any) -> None:
    alice = await signed_in(client_factory)
    socket = await alice.connect()
    real = Cursor.decode(socket.cursor)
    ahead = type(real.next)(real.next.xmax + 1000, real.next.xmax + 1000, frozenset())
    forged = Cursor.at(real.database, real.taken_at_us, ahead).encode()
    assert "ahead" in await refused_cursor(alice, forged)


async def test_cursor_older_than_retention_closes_with_4400(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice = await signed_in(client_factory)
    socket = await alice.connect()
    await socket.close()
    # As if retention had just removed an event of a transaction newer than this cursor.
    await db.execute("UPDATE pgcast_instance SET pruned_tx = pg_current_xact_id()")
    assert "retention" in await refused_cursor(alice, socket.cursor)


async def test_cursor_from_another_database_closes_with_4400(
    client_factory: Any,
    postgres_conninfo: str,
    template_database: str,
    tmp_path: Path,
    unused_tcp_port_factory: Any,
) -> None:
    other_name = create_database_from(postgres_conninfo, template_database)
    try:
        other_url = psycopg.conninfo.make_conninfo(postgres_conninfo, dbname=other_name)
        other = await start_server(server_config(other_url, tmp_path, unused_tcp_port_factory()))
        try:
            stranger = Client(other.endpoint)
            await stranger.sign_in("alice@example.com", "Alice")
            foreign_cursor = (await stranger.connect()).cursor
            await stranger.close()
        finally:
            await other.runner.cleanup()
    finally:
        drop_database(postgres_conninfo, other_name)

    alice = await signed_in(client_factory)
    assert "another database" in await refused_cursor(alice, foreign_cursor)


async def test_text_frame_from_client_closes_with_1008(client_factory: Any) -> None:
    alice = await signed_in(client_factory)
    socket = await alice.connect()
    await socket.ws.send_str('{"event": "subscribe"}')
    code, reason = await socket.expect_close()
    assert code == 1008
    assert reason


async def test_binary_frame_from_client_closes_with_1003(client_factory: Any) -> None:
    alice = await signed_in(client_factory)
    socket = await alice.connect()
    await socket.ws.send_bytes(b"\x00\x01")
    code, reason = await socket.expect_close()
    assert code == 1003
    assert reason


async def test_oversized_frame_from_client_closes_with_1009(client_factory: Any) -> None:
    alice = await signed_in(client_factory)
    socket = await alice.connect()
    await socket.ws.send_str("x" * 100_000)
    code, _ = await socket.expect_close()
    assert code == 1009


async def test_other_sockets_keep_working_after_one_misbehaves(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice = await signed_in(client_factory)
    rude = await alice.connect()
    polite = await alice.connect()
    await rude.ws.send_bytes(b"junk")
    await rude.expect_close()
    await alice.post_message("still here")
    assert (await polite.next_frame())["data"]["message"]["content"] == "still here"


async def test_connected_frame_comes_first_with_socket_id_and_cursor(client_factory: Any) -> None:
    alice = await signed_in(client_factory)
    ws = await alice.http.ws_connect(alice.server.ws_url, headers={"Origin": alice.server.origin})
    frame = await ws.receive_json(timeout=10)
    assert frame["event"] == "connected"
    assert frame["channel"] == ""
    assert set(frame["data"]) == {"socket_id", "cursor", "channels"}
    # With no channels asked for, a socket listens to `messages`, as before channels.
    assert frame["data"]["channels"] == ["messages"]
    Cursor.decode(frame["data"]["cursor"])
    await ws.close()


async def test_server_shutdown_closes_sockets_with_1001(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    server = await start_server(server_config(database_url, tmp_path, unused_tcp_port))
    alice = Client(server.endpoint)
    try:
        await alice.sign_in("alice@example.com", "Alice")
        socket = await alice.connect()
        await server.runner.cleanup()
        code, reason = await socket.expect_close()
        assert code == 1001
        assert "shutting down" in reason
    finally:
        await alice.close()


PING_HEARTBEAT_SECONDS = 0.2
# The server's ping: an unfragmented ping frame with no payload.
SERVER_PING = b"\x89\x00"


async def test_clients_that_vanish_around_a_ping_are_logged_as_info_without_a_traceback(
    database_url: str, tmp_path: Path, unused_tcp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = server_config(database_url, tmp_path, unused_tcp_port)
    server = await start_server_with_heartbeat(config, PING_HEARTBEAT_SECONDS)
    alice = Client(server.endpoint)
    loop = asyncio.get_running_loop()

    async def vanish(moment: str, reset: bool) -> None:
        raw = await send_upgrade(alice)
        try:
            if moment != "right after asking for the upgrade":
                await read_until(raw, b'"connected"')
            if moment == "when the server's ping arrives":
                await read_until(raw, SERVER_PING)
            elif moment == "right after its own ping":
                await loop.sock_sendall(raw, client_frame(0x9, b"are you there"))
            elif moment == "once the server gave up on its pongs":
                async with asyncio.timeout(PING_HEARTBEAT_SECONDS * 10):
                    await sees_end_of_connection(raw)
        finally:
            if reset:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()

    moments = [
        "right after asking for the upgrade",
        "right after the upgrade",
        "when the server's ping arrives",
        "right after its own ping",
        "once the server gave up on its pongs",
    ]
    vanishing = [(moment, reset) for moment in moments for reset in (False, True)] * 3
    try:
        await alice.sign_in("alice@example.com", "Alice")
        await alice.close()
        await asyncio.gather(*(vanish(moment, reset) for moment, reset in vanishing))
        handlers = server.runner.server
        assert handlers is not None

        async def every_connection_finished() -> bool:
            # `connections` is a copy, taken anew each time.
            return not handlers.connections

        assert await eventually(every_connection_finished, 10.0), handlers.connections
    finally:
        await server.runner.cleanup()

    troubles = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not troubles, [(r.name, r.getMessage()) for r in troubles]
    own_lines = [r for r in caplog.records if r.name.startswith("server.")]
    assert len(own_lines) <= len(vanishing), [r.getMessage() for r in own_lines]


async def test_a_frame_the_hub_hands_over_is_in_the_kernel_before_the_loop_turns(
    server: RunningServer, client_factory: Any
) -> None:
    """A live frame is written during the hand-over itself, not queued for the event loop's
    next turn: every socket of a broadcast costs one system call and nothing more."""
    client = client_factory()
    me = await client.sign_in("direct@example.com", "Direct")
    live = await client.connect()
    # Once a broadcast of a batch begun after its catch-up has reached it (the second one),
    # a socket takes the bytes every socket shares.
    for content in ("first", "second"):
        assert (await client.post_message(content)).status == 201
        await live.next_frame()
    [connection] = server.app[HUB].connections_of(int(me["user"]["id"]))
    assert connection.direct is not None
    received = live.ws.get_extra_info("socket")
    assert select.select([received], [], [], 0) == ([], [], [])

    assert connection.direct.write_now(text_frame('{"probe": 1}'))
    # No await in between: the server's loop has not turned since the write.
    assert select.select([received], [], [], 0)[0] == [received]
    message = await asyncio.wait_for(live.ws.receive(), 10)
    assert message.data == '{"probe": 1}'
