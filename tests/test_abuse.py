"""Hostile and heavy clients: rate limits, odd requests, and fuzzed input. Each refusal is
a clear error, nothing is written, and the server keeps serving everyone else."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from tests.conftest import Client, RunningServer, count_rows, server_config, start_server


@pytest.fixture
async def limited(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> AsyncIterator[RunningServer]:
    running = await start_server(
        server_config(
            database_url,
            tmp_path,
            unused_tcp_port,
            PGCAST_RATE_POSTS_PER_MINUTE="5",
            PGCAST_RATE_SOCKETS_PER_USER="3",
            PGCAST_RATE_SOCKETS_PER_IP="4",
        )
    )
    yield running
    await running.runner.cleanup()


async def test_posting_too_fast_gets_429_with_retry_after(
    limited: RunningServer, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, bob = Client(limited.endpoint), Client(limited.endpoint)
    try:
        await alice.sign_in("alice@example.com", "Alice")
        await bob.sign_in("bob@example.com", "Bob")
        for n in range(5):
            assert (await alice.post_message(f"m{n}")).status == 201
        async with alice.http.post(
            limited.url + "/api/messages",
            json={"content": "one too many"},
            headers={"Origin": limited.origin},
        ) as response:
            assert response.status == 429
            assert 1 <= int(response.headers["Retry-After"]) <= 60
            assert (await response.json())["error"]["code"] == "rate_limited"
        # The limit is per user: Bob is unaffected.
        assert (await bob.post_message("hi")).status == 201
        assert await count_rows(db, "messages") == 6
    finally:
        await alice.close()
        await bob.close()


async def test_too_many_sockets_per_user_and_per_address_get_429(limited: RunningServer) -> None:
    alice, bob = Client(limited.endpoint), Client(limited.endpoint)
    try:
        await alice.sign_in("alice@example.com", "Alice")
        await bob.sign_in("bob@example.com", "Bob")
        alice_sockets = [await alice.connect() for _ in range(3)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await alice.connect()
        assert refused.value.status == 429

        bob_socket = await bob.connect()  # the fourth from 127.0.0.1
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await bob.connect()
        assert refused.value.status == 429

        # Closing one frees its place.
        await alice_sockets[0].close()
        await bob_socket.close()
        async with aiohttp.ClientSession() as probe:
            for _ in range(100):
                async with probe.get(limited.url + "/metrics") as response:
                    if "pgcast_sockets_connected 2.0" in await response.text():
                        break
        assert (await alice.connect()).socket_id
    finally:
        await alice.close()
        await bob.close()


async def test_sql_injection_is_stored_and_delivered_verbatim(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice'); DROP TABLE users; --")
    socket = await alice.connect()
    nasty = "'); DROP TABLE messages; -- \\x00? $1 %s {content} <b>&amp;"
    other = client_factory()
    await other.sign_in("bob@example.com", "Bob")
    assert (await other.post_message(nasty)).status == 201
    frame = await socket.next_frame()
    assert frame["data"]["message"]["content"] == nasty
    cursor = await db.execute("SELECT content FROM messages")
    assert await cursor.fetchall() == [(nasty,)]
    cursor = await db.execute("SELECT name FROM users ORDER BY id")
    assert (await cursor.fetchall())[0] == ("Alice'); DROP TABLE users; --",)


async def test_very_long_headers_are_refused_and_the_server_keeps_serving(
    client_factory: Any, server: RunningServer
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/api/me", headers={"X-Junk": "x" * 100_000}) as r:
            assert r.status in (400, 431)
        async with http.get(server.url + "/healthz") as r:
            assert r.status == 200


async def test_a_flood_of_frames_from_a_client_closes_only_that_socket(
    client_factory: Any,
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    flooder, bystander = await alice.connect(), await alice.connect()
    for n in range(500):
        await flooder.ws.send_str(f"spam {n}")
    code, _ = await flooder.expect_close()
    assert code == 1008
    assert (await alice.post_message("still fine")).status == 201
    assert (await bystander.next_frame())["data"]["message"]["content"] == "still fine"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    body=st.one_of(
        json_values.map(lambda value: json.dumps(value).encode()),
        st.fixed_dictionaries({"content": json_values}).map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=300),
    ),
    socket_id=st.one_of(st.none(), st.text(max_size=80)),
)
async def test_fuzzed_post_bodies_never_cause_a_server_error(
    client_factory: Any, body: bytes, socket_id: str | None
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    headers = {"Origin": alice.server.origin, "Content-Type": "application/json"}
    if socket_id is not None:
        headers["X-Socket-ID"] = socket_id.encode("utf-8", "replace").decode("latin-1")
    try:
        async with alice.http.post(
            alice.server.url + "/api/messages", data=body, headers=headers
        ) as response:
            assert response.status in (201, 400, 413, 422), await response.text()
            payload = await response.json()
    except ValueError:
        return  # the client library itself refused the header value
    if response.status == 201:
        assert isinstance(payload["content"], str)
    else:
        assert payload["error"]["code"]
        assert payload["error"]["message"]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    cursor=st.one_of(st.text(max_size=200), st.binary(max_size=120).map(lambda b: b.hex())),
    frame=st.one_of(st.text(max_size=100), st.binary(max_size=100)),
)
async def test_fuzzed_cursors_and_client_frames_get_a_clean_close(
    client_factory: Any, cursor: str, frame: str | bytes
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    refused_with: int | None = None
    try:
        ws = await alice.http.ws_connect(
            alice.server.ws_url, params={"after": cursor}, headers={"Origin": alice.server.origin}
        )
    except aiohttp.WSServerHandshakeError as refused:
        refused_with = refused.status
    if refused_with is not None:
        assert refused_with == 400  # e.g. a request line the HTTP parser refuses
        return
    message = await ws.receive(timeout=10)
    if message.type == aiohttp.WSMsgType.CLOSE:
        assert message.data == 4400
        assert message.extra
        return
    assert json.loads(message.data)["event"] == "connected"
    if isinstance(frame, bytes):
        await ws.send_bytes(frame)
    else:
        await ws.send_str(frame)
    message = await ws.receive(timeout=10)
    assert message.type == aiohttp.WSMsgType.CLOSE
    assert message.data in (1003, 1008)


async def test_clients_that_never_finish_their_handshake_do_not_block_others(
    client_factory: Any, server: RunningServer
) -> None:
    url = URL(server.url)
    stalled = []
    try:
        for _ in range(50):
            _, writer = await asyncio.open_connection(url.host, url.port)
            writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
            stalled.append(writer)
        alice = client_factory()
        await alice.sign_in("alice@example.com", "Alice")
        socket = await alice.connect()
        assert (await alice.post_message("served")).status == 201
        assert (await socket.next_frame())["data"]["message"]["content"] == "served"
    finally:
        for writer in stalled:
            writer.close()
            await writer.wait_closed()
