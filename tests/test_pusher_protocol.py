"""GET /app/{key} frame by frame: the handshake and its refusals, close codes, pings both
ways, subscriptions and their errors, client events and their limits, and hostile input,
which gets an error frame or a clear close and never a crash."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.app import create_app
from server.transports.pusher.keys import PUSHER_TIMING, Timing
from tests.conftest import Client, RunningServer, count_rows, server_config, start_server
from tests.pusher_support import app_url, broadcast, raw_pusher, signed

TIMEOUT = 10.0


@pytest.fixture
async def alice(client_factory: Any) -> Client:
    client: Client = client_factory()
    await client.sign_in("alice@example.com", "Alice")
    return client


async def refusal(http: aiohttp.ClientSession, url: str, **headers: str) -> tuple[Any, int | None]:
    ws = await http.ws_connect(url, headers=headers)
    error = json.loads((await ws.receive(timeout=TIMEOUT)).data)
    message = await ws.receive(timeout=TIMEOUT)
    assert message.type == aiohttp.WSMsgType.CLOSE
    return error, ws.close_code


@pytest.mark.parametrize(
    ("key", "query", "code"),
    [
        ("wrong-key-1", "protocol=7&client=js&version=8.6.0", 4001),
        (None, "protocol=6&client=js&version=8.6.0", 4007),
        (None, "protocol=seven", 4007),
        (None, "client=js&version=8.6.0", 4008),
    ],
)
async def test_a_bad_handshake_gets_an_error_frame_then_its_close_code(
    server: RunningServer, alice: Client, key: str | None, query: str, code: int
) -> None:
    error, close_code = await refusal(alice.http, app_url(server, key, query), Origin=server.origin)
    assert error["event"] == "pusher:error"
    assert error["data"]["code"] == close_code == code


async def test_signed_in_mode_refuses_a_socket_without_a_session(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        error, code = await refusal(http, app_url(server))
    assert code == error["data"]["code"] == 4009


async def test_signed_in_mode_refuses_a_cross_site_upgrade_with_403(
    server: RunningServer, alice: Client
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await alice.http.ws_connect(app_url(server), headers={"Origin": "https://evil.example"})
    assert refused.value.status == 403


async def test_connection_established_carries_a_pusher_socket_id(
    server: RunningServer, alice: Client
) -> None:
    ws = await alice.http.ws_connect(app_url(server), headers={"Origin": server.origin})
    frame = json.loads((await ws.receive(timeout=TIMEOUT)).data)
    assert frame["event"] == "pusher:connection_established"
    data = json.loads(frame["data"])  # a JSON string, as Pusher sends it
    left, _, right = data["socket_id"].partition(".")
    assert left.isdigit()
    assert right.isdigit()
    assert data["activity_timeout"] == 30
    await ws.close()


async def test_pings_are_answered_and_a_public_channel_delivers_with_a_cursor(
    server: RunningServer, alice: Client, db: psycopg.AsyncConnection[Any]
) -> None:
    socket = await raw_pusher(alice.http, server)
    await socket.send("pusher:ping")
    assert await socket.next() == {"event": "pusher:pong", "data": "{}"}
    succeeded = await socket.subscribe("orders.42")
    assert succeeded["event"] == "pusher_internal:subscription_succeeded"
    assert succeeded["channel"] == "orders.42"
    await broadcast(db, "orders.42", "order-shipped", {"status": "shipped"})
    frame = await socket.next()
    assert (frame["event"], frame["channel"]) == ("order-shipped", "orders.42")
    assert json.loads(frame["data"]) == {"status": "shipped"}
    assert frame["cursor"]
    await socket.send("pusher:unsubscribe", {"channel": "orders.42"})
    await socket.subscribe("messages")
    async with db.transaction():
        await broadcast(db, "orders.42", "gone", {})
        await broadcast(db, "messages", "marker", {})
    assert (await socket.next())["event"] == "marker"


async def test_encrypted_channels_are_relayed_untouched(
    server: RunningServer, alice: Client, db: psycopg.AsyncConnection[Any]
) -> None:
    # The publisher encrypted it; pgcast only passes it on.
    sealed = {"nonce": "bm9uY2U=", "ciphertext": "c2VhbGVk"}
    await db_grant(server, "private-encrypted-vault")
    socket = await raw_pusher(alice.http, server)
    auth = signed(server, f"{socket.socket_id}:private-encrypted-vault")
    assert (await socket.subscribe("private-encrypted-vault", auth=auth))["event"].endswith(
        "succeeded"
    )
    await broadcast(db, "private-encrypted-vault", "secret", sealed)
    assert json.loads((await socket.next())["data"]) == sealed


async def test_refused_subscriptions_get_a_channel_scoped_subscription_error(
    server: RunningServer, alice: Client
) -> None:
    socket = await raw_pusher(alice.http, server)
    for channel, fields, status in [
        ("private-team.ops", {"auth": "nope"}, 401),
        ("presence-room", {"auth": "x"}, 400),
        ("bad name!", {}, 400),
        ("#server-to-user-1", {}, 403),
        ("private-user.999", {}, 401),
    ]:
        frame = await socket.subscribe(channel, **fields)
        assert frame["event"] == "pusher:subscription_error", frame
        assert frame["channel"] == channel
        error = json.loads(frame["data"])
        assert (error["type"], error["status"]) == ("AuthError", status)
    # The socket carries on.
    assert (await socket.subscribe("messages"))["event"].endswith("succeeded")


async def test_a_thousand_subscriptions_stop_at_the_limit_and_the_socket_carries_on(
    server: RunningServer, alice: Client
) -> None:
    socket = await raw_pusher(alice.http, server)
    for n in range(1000):
        await socket.send("pusher:subscribe", {"channel": f"c{n}"})
    frames = [await socket.next(30) for _ in range(1000)]
    ok = [f for f in frames if f["event"] == "pusher_internal:subscription_succeeded"]
    refused = [f for f in frames if f["event"] == "pusher:subscription_error"]
    assert (len(ok), len(refused)) == (100, 900)
    assert "at most 100 channels" in json.loads(refused[0]["data"])["error"]
    await socket.send("pusher:ping")
    assert (await socket.next())["event"] == "pusher:pong"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"data": {}}', "JSON object"),
        ('{"event": "pusher:teleport"}', "unknown event"),
        ('{"event": "pusher:subscribe", "data": 5}', "data object"),
        ('{"event": "pusher:subscribe", "data": {}}', "channel"),
        ('{"event": "pgcast:resume", "data": {"channel": 1}}', "cursor"),
        ('{"event": "pusher:signin", "data": {"user_data": "{}", "auth": "k:0"}}', "signature"),
        ("[" * 100000 + "]" * 100000, "not JSON"),
    ],
)
async def test_frames_pgcast_cannot_use_get_an_error_frame_not_a_close(
    server: RunningServer, alice: Client, text: str, message: str
) -> None:
    socket = await raw_pusher(alice.http, server)
    await socket.ws.send_str(text[:60000])
    frame = await socket.next()
    assert frame["event"] == "pusher:error"
    assert message in frame["data"]["message"]
    await socket.send("pusher:ping")
    assert (await socket.next())["event"] == "pusher:pong"


async def test_a_binary_frame_gets_an_error_and_a_huge_frame_a_clear_close(
    server: RunningServer, alice: Client
) -> None:
    socket = await raw_pusher(alice.http, server)
    await socket.ws.send_bytes(b"\x00\x01")
    assert "binary" in (await socket.next())["data"]["message"]
    await socket.ws.send_str(json.dumps({"event": "client-x", "data": "x" * 100_000}))
    code, reason = await socket.expect_close()
    # pusher-js acts on 4000-4299 only; 4000-4099 tells it not to retry unchanged.
    assert code == 4010
    assert "65536" in reason


async def test_client_events_follow_pushers_rules(
    server: RunningServer, alice: Client, client_factory: Any
) -> None:
    bob: Client = client_factory()
    await bob.sign_in("bob@example.com", "Bob")
    sender = await raw_pusher(alice.http, server)
    receiver = await raw_pusher(bob.http, server)
    await sender.subscribe("messages")
    for name, channel, data, expected in [
        ("client-typing", "messages", {}, "private- and presence- channels only"),
        ("client-typing", "private-chat", {}, "subscribe to private-chat"),
    ]:
        await sender.send(name, data, channel)
        assert expected in (await sender.next())["data"]["message"]
    await db_grant(server, "private-chat")
    for socket in (sender, receiver):
        auth = signed(server, f"{socket.socket_id}:private-chat")
        assert (await socket.subscribe("private-chat", auth=auth))["event"].endswith("succeeded")
    await sender.send("client-typing", "a string, not an object", "private-chat")
    assert "JSON object" in (await sender.next())["data"]["message"]
    await sender.send("client-typing", {"blob": "x" * 8000}, "private-chat")
    assert "8000 bytes" in (await sender.next())["data"]["message"]

    # Ten a second go through; the eleventh is refused with 4301, and the socket stays.
    for n in range(11):
        await sender.send("client-typing", {"n": n}, "private-chat")
    limited = await sender.next()
    assert limited["data"]["code"] == 4301
    got = [json.loads((await receiver.next())["data"])["n"] for _ in range(10)]
    assert got == list(range(10))
    await sender.send("pusher:ping")
    assert (await sender.next())["event"] == "pusher:pong"


async def db_grant(server: RunningServer, channel: str) -> None:
    assert server.config.database_url is not None
    async with await psycopg.AsyncConnection.connect(
        server.config.database_url, autocommit=True
    ) as conn:
        await conn.execute(
            "INSERT INTO channel_members (channel, user_id) SELECT %s, id FROM users", [channel]
        )


@pytest.fixture
async def quick_ping_server(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> AsyncIterator[RunningServer]:
    config = server_config(database_url, tmp_path, unused_tcp_port)
    app = create_app(config)
    app[PUSHER_TIMING] = Timing(activity_timeout=0.5, pong_timeout=0.5)
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    await web.TCPSite(runner, config.host, config.port).start()
    yield RunningServer(config, app, runner)
    await runner.cleanup()


async def test_the_server_pings_a_silent_client_and_closes_one_that_does_not_answer(
    quick_ping_server: RunningServer,
) -> None:
    alice = Client(quick_ping_server.endpoint)
    try:
        await alice.sign_in("alice@example.com", "Alice")
        answering = await raw_pusher(alice.http, quick_ping_server)
        silent = await raw_pusher(alice.http, quick_ping_server)
        assert (await answering.next())["event"] == "pusher:ping"
        await answering.send("pusher:pong")
        assert (await silent.next())["event"] == "pusher:ping"
        assert (await answering.next())["event"] == "pusher:ping"
        await answering.send("pusher:pong")
        code, reason = await silent.expect_close()
        assert code == 4201
        assert "pong" in reason
        assert not answering.ws.closed
    finally:
        await alice.close()


client_frames = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
events = st.sampled_from(
    [
        "pusher:subscribe",
        "pusher:unsubscribe",
        "pusher:signin",
        "pusher:ping",
        "pgcast:resume",
        "client-x",
        "pusher:pong",
        "other",
    ]
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    frames=st.lists(
        st.tuples(events, client_frames, st.one_of(st.none(), st.text(max_size=30))),
        min_size=1,
        max_size=8,
    )
)
async def test_fuzzed_client_frames_never_break_the_socket(
    server: RunningServer, alice: Client, frames: list[tuple[str, Any, str | None]]
) -> None:
    socket = await raw_pusher(alice.http, server)
    try:
        for event, data, channel in frames:
            frame: dict[str, Any] = {"event": event, "data": data}
            if channel is not None:
                frame["channel"] = channel
            await socket.ws.send_str(json.dumps(frame))
        marker = "pusher:ping"
        await socket.send(marker)
        async with asyncio.timeout(TIMEOUT):
            while (await socket.next())["event"] != "pusher:pong":
                pass
    finally:
        await socket.close()


async def test_client_events_reach_subscribers_on_another_process_and_are_not_stored(
    server: RunningServer,
    alice: Client,
    database_url: str,
    tmp_path: Path,
    unused_tcp_port_factory: Any,
    db: psycopg.AsyncConnection[Any],
) -> None:
    other = await start_server(
        server_config(database_url, tmp_path / "other", unused_tcp_port_factory())
    )
    try:
        bob = Client(other.endpoint)
        await bob.sign_in("bob@example.com", "Bob")
        await db_grant(server, "private-chat")
        sender = await raw_pusher(alice.http, server)
        receiver = await raw_pusher(bob.http, other)
        for socket, running in ((sender, server), (receiver, other)):
            auth = signed(running, f"{socket.socket_id}:private-chat")
            frame = await socket.subscribe("private-chat", auth=auth)
            assert frame["event"].endswith("succeeded")
        before = await count_rows(db, "broadcasts")
        await sender.send("client-typing", {"who": "alice"}, "private-chat")
        frame = await receiver.next()
        assert (frame["event"], frame["channel"]) == ("client-typing", "private-chat")
        assert json.loads(frame["data"]) == {"who": "alice"}
        assert "cursor" not in frame
        assert await count_rows(db, "broadcasts") == before
        await bob.close()
    finally:
        await other.runner.cleanup()


@pytest.mark.parametrize(
    "text",
    [
        '{"event": "pusher:subscribe", "data": {"channel": "messages", "auth": NaN}}',
        '{"event": "pusher:subscribe", "data": {"channel": "\\ud800"}}',
        '{"event": "pusher:subscribe", "data": "{\\"channel\\": \\"\\\\udfff\\"}"}',
    ],
)
async def test_json_no_frame_could_carry_on_gets_an_error_frame(
    server: RunningServer, alice: Client, text: str
) -> None:
    socket = await raw_pusher(alice.http, server)
    await socket.ws.send_str(text)
    frame = await socket.next()
    assert frame["event"] == "pusher:error"
    assert frame["data"]["code"] == 4300
    await socket.send("pusher:ping")
    assert (await socket.next())["event"] == "pusher:pong"


async def test_a_pusher_client_gets_a_string_published_through_the_api_back_as_given(
    server: RunningServer, alice: Client, db: psycopg.AsyncConnection[Any]
) -> None:
    # The HTTP API stores a data string that is not a JSON object wrapped in an object
    # (broadcasts.data must be one); a Pusher client must see the string it was given.
    socket = await raw_pusher(alice.http, server)
    await socket.subscribe("orders.42")
    await broadcast(db, "orders.42", "note", {"pusher_data": "plain text, not JSON"})
    await broadcast(db, "orders.42", "object", {"pusher_data": "x", "and": "more"})
    frame = await socket.next()
    assert (frame["event"], frame["data"]) == ("note", "plain text, not JSON")
    # Only the wrapper alone is unwrapped: an object that merely has the key is data.
    frame = await socket.next()
    assert json.loads(frame["data"]) == {"pusher_data": "x", "and": "more"}
