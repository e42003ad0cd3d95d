"""The Pusher HTTP API, driven by Pusher's own Python SDK (`pusher` on PyPI) against a running
pgcast, with native `/ws` sockets as the receivers: every route, its limits and status codes,
`socket_id` exclusion, and requests that are not signed right.

The SDK is synchronous (requests), as a backend's would be: each call runs in a thread so the
server keeps serving on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import psycopg
import pusher
import pusher.aiohttp
import pusher.errors
import pusher.http
import pytest

from server.core.presence import Member
from server.keys import PRESENCE
from server.transports.pusher.data import pusher_data_from_stored
from tests.conftest import Client, RunningServer, Socket, count_rows, server_config, start_server

SIGNED_OUT = 4401


def sdk_for(server: RunningServer, **override: Any) -> pusher.Pusher:
    app = server.config.pusher
    options: dict[str, Any] = {
        "app_id": app.app_id,
        "key": app.key,
        "secret": app.secret.value,
        "ssl": False,
        "host": server.config.host,
        "port": server.config.port,
    }
    options.update(override)
    return pusher.Pusher(**options)


def close_sdk(client: pusher.Pusher) -> None:
    # The requests backend keeps a session per client; close it, or its sockets leak.
    client._pusher_client.http.session.close()
    client._authentication_client.http.session.close()


@pytest.fixture
def sdk(server: RunningServer) -> Iterator[pusher.Pusher]:
    client = sdk_for(server)
    yield client
    close_sdk(client)


async def call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(method, *args, **kwargs)


async def send(client: pusher.Pusher, method: str, path: str, params: dict[str, Any]) -> Any:
    """A request built and signed by the SDK's own Request, for what the SDK's helpers check
    or refuse before sending (a native socket id, 101 channels, an `info` on a trigger)."""
    inner = client._pusher_client
    request = pusher.http.Request(inner, method, path, params)
    return await call(inner.http.send_request, request)


async def signed_in(client_factory: Any, name: str) -> tuple[Client, int]:
    client: Client = client_factory()
    me = await client.sign_in(f"{name.lower()}@example.com", name)
    return client, int(me["user"]["id"])


async def received(socket: Socket, count: int) -> list[tuple[str, str, Any]]:
    return [(f["channel"], f["event"], f["data"]) for f in await socket.frames(count)]


async def close_all(sockets: list[Socket]) -> None:
    await asyncio.gather(*(socket.close() for socket in sockets))


async def audit(db: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
    cursor = await db.execute(
        "SELECT channel, event, data, via_api, origin_socket_id, tx::text"
        " FROM broadcast_audit ORDER BY event_id"
    )
    return await cursor.fetchall()


def clock_behind(seconds: float) -> SimpleNamespace:
    return SimpleNamespace(time=lambda: time.time() - seconds)


def error_code(error: Exception) -> str:
    """pgcast's JSON error code in an SDK exception (the SDK puts the body in its message)."""
    text = str(error)
    body = json.loads(text[text.index("{") :])
    code: str = body["error"]["code"]
    assert body["error"]["message"]
    return code


# --- publishing --------------------------------------------------------------------------


async def test_a_trigger_reaches_native_sockets_and_shows_in_the_audit_view(
    client_factory: Any, sdk: pusher.Pusher, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, _ = await signed_in(client_factory, "Alice")
    socket = await alice.connect(channels=["orders.42"])
    assert await call(sdk.trigger, "orders.42", "order-shipped", {"status": "shipped"}) == {}
    assert await received(socket, 1) == [("orders.42", "order-shipped", {"status": "shipped"})]
    [(channel, event, data, via_api, origin, _)] = await audit(db)
    assert (channel, event, data, via_api, origin) == (
        "orders.42",
        "order-shipped",
        {"status": "shipped"},
        True,
        None,
    )


async def test_a_trigger_to_several_channels_writes_one_row_each_in_one_transaction(
    client_factory: Any, sdk: pusher.Pusher, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, _ = await signed_in(client_factory, "Alice")
    socket = await alice.connect(channels=["a", "b", "c"])
    await call(sdk.trigger, ["a", "b"], "hello", {"n": 1})
    assert await received(socket, 2) == [("a", "hello", {"n": 1}), ("b", "hello", {"n": 1})]
    rows = await audit(db)
    assert [row[0] for row in rows] == ["a", "b"]
    assert rows[0][5] == rows[1][5]


async def test_data_that_is_not_a_json_object_arrives_wrapped_in_pusher_data(
    client_factory: Any, sdk: pusher.Pusher
) -> None:
    alice, _ = await signed_in(client_factory, "Alice")
    socket = await alice.connect(channels=["feed"])
    # Pusher's data is a string; pgcast stores a JSON object as that object, anything else
    # (and an object that looks like the wrapper itself) wrapped, so it can be given back.
    for data in ["plain text", "[1, 2]", "42", '{"pusher_data": "x"}', ""]:
        await call(sdk.trigger, "feed", "said", data)
    await call(sdk.trigger, "feed", "said", '{"pusher_data": 1}')
    assert [frame[2] for frame in await received(socket, 6)] == [
        {"pusher_data": "plain text"},
        {"pusher_data": "[1, 2]"},
        {"pusher_data": "42"},
        {"pusher_data": '{"pusher_data": "x"}'},
        {"pusher_data": ""},
        {"pusher_data": 1},
    ]


async def test_a_pusher_transport_gets_every_data_string_back_from_the_table(
    sdk: pusher.Pusher, db: psycopg.AsyncConnection[Any]
) -> None:
    sent = [
        '{"b": 1, "a": [true, null, 1.5e300]}',
        "plain text",
        '{"pusher_data": "x"}',
        '{"pusher_data": "x", "more": 1}',
        '{"pusher_data": 1}',
        "  {} ",
        '"a JSON string"',
        "{not json",
        "ünïcödé ✓",
    ]
    for data in sent:
        await call(sdk.trigger, "feed", "said", data)
    cursor = await db.execute("SELECT data::text FROM broadcasts ORDER BY id")
    given_back = [pusher_data_from_stored(text) for (text,) in await cursor.fetchall()]
    for original, back in zip(sent, given_back, strict=True):
        try:
            parsed = json.loads(original)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            # Stored as the object: equal JSON, keys, spacing and numbers as jsonb writes
            # them (1.5e300 comes back in digits: the same number to JavaScript).
            assert json.loads(back, parse_int=float) == parsed
        else:
            assert back == original


async def test_socket_id_keeps_that_socket_from_receiving_its_own_event(
    client_factory: Any, sdk: pusher.Pusher, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, _ = await signed_in(client_factory, "Alice")
    poster = await alice.connect(channels=["room"])
    other = await alice.connect(channels=["room"])
    # The SDK's trigger() only takes Pusher-shaped socket ids ("123.456"); pgcast takes
    # either protocol's, so a native socket's id goes through the SDK's Request directly.
    app_id = sdk._pusher_client.app_id
    params = {"name": "typed", "channels": ["room"], "data": '{"n": 1}', "socket_id": ""}
    params["socket_id"] = poster.socket_id
    assert await send(sdk, "POST", f"/apps/{app_id}/events", params) == {}
    await call(sdk.trigger, "room", "typed", {"n": 2})
    assert await received(other, 2) == [("room", "typed", {"n": 1}), ("room", "typed", {"n": 2})]
    # The poster's first frame is the second event: its own never came.
    assert await received(poster, 1) == [("room", "typed", {"n": 2})]
    assert [row[4] for row in await audit(db)] == [poster.socket_id, None]


async def test_a_pusher_socket_id_is_recorded_as_the_origin(
    sdk: pusher.Pusher, db: psycopg.AsyncConnection[Any]
) -> None:
    await call(sdk.trigger, "room", "typed", {"n": 1}, socket_id="123.456")
    assert [row[4] for row in await audit(db)] == ["123.456"]


async def test_batch_events_arrive_in_order_each_with_its_own_socket_id(
    client_factory: Any, sdk: pusher.Pusher, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, _ = await signed_in(client_factory, "Alice")
    first = await alice.connect(channels=["x", "y"])
    second = await alice.connect(channels=["x", "y"])
    batch = [
        {"channel": "x", "name": "one", "data": {"n": 1}, "socket_id": first.socket_id},
        {"channel": "y", "name": "two", "data": "two"},
        {"channel": "x", "name": "three", "data": {"n": 3}},
    ]
    assert await call(sdk.trigger_batch, batch) == {}
    assert await received(second, 3) == [
        ("x", "one", {"n": 1}),
        ("y", "two", {"pusher_data": "two"}),
        ("x", "three", {"n": 3}),
    ]
    assert await received(first, 2) == [
        ("y", "two", {"pusher_data": "two"}),
        ("x", "three", {"n": 3}),
    ]
    rows = await audit(db)
    assert len({row[5] for row in rows}) == 1
    assert [row[4] for row in rows] == [first.socket_id, None, None]


async def test_send_to_user_reaches_that_users_own_channel(
    client_factory: Any, sdk: pusher.Pusher, db: psycopg.AsyncConnection[Any]
) -> None:
    # #server-to-user-{id} is carried by private-user.{id}, which /ws sockets of that
    # user may join and a Pusher socket signed in as them receives.
    alice, alice_id = await signed_in(client_factory, "Alice")
    socket = await alice.connect(channels=[f"private-user.{alice_id}"])
    await call(sdk.send_to_user, str(alice_id), "nudge", {"n": 1})
    assert await received(socket, 1) == [(f"private-user.{alice_id}", "nudge", {"n": 1})]
    [(channel, *_)] = await audit(db)
    assert channel == f"private-user.{alice_id}"


async def test_the_sdks_asyncio_backend_works_too(
    client_factory: Any, server: RunningServer
) -> None:
    # pusher.aiohttp sends its parameters through aiohttp's URL encoding, not as signed.
    client = sdk_for(server, backend=pusher.aiohttp.AsyncIOBackend)
    alice, _ = await signed_in(client_factory, "Alice")
    socket = await alice.connect(channels=["presence-room"])
    assert await client.trigger("presence-room", "hello", {"text": "a b+c,d"}) == {}
    assert await received(socket, 1) == [("presence-room", "hello", {"text": "a b+c,d"})]
    assert await client.channels_info("presence-", ["user_count", "subscription_count"]) == {
        "channels": {"presence-room": {"user_count": 1, "subscription_count": 1}}
    }
    await socket.close()


# --- channel state -----------------------------------------------------------------------


async def test_trigger_info_counts_the_channels_it_reached(
    client_factory: Any, sdk: pusher.Pusher
) -> None:
    alice, _ = await signed_in(client_factory, "Alice")
    bob, _ = await signed_in(client_factory, "Bob")
    sockets = [
        await alice.connect(channels=["presence-room", "news"]),
        await alice.connect(channels=["presence-room"]),
        await bob.connect(channels=["presence-room"]),
    ]
    app_id = sdk._pusher_client.app_id
    params = {
        "name": "hi",
        "channels": ["presence-room", "news", "empty"],
        "data": "{}",
        "info": "user_count,subscription_count",
    }
    assert await send(sdk, "POST", f"/apps/{app_id}/events", params) == {
        "channels": {
            "presence-room": {"user_count": 2, "subscription_count": 3},
            "news": {"subscription_count": 1},
            "empty": {"subscription_count": 0},
        }
    }
    batch = {
        "batch": [
            {"channel": "news", "name": "hi", "data": "{}", "info": "subscription_count"},
            {"channel": "empty", "name": "hi", "data": "{}"},
        ]
    }
    assert await send(sdk, "POST", f"/apps/{app_id}/batch_events", batch) == {
        "batch": [{"subscription_count": 1}, {}]
    }
    await close_all(sockets)


async def test_channels_and_channel_info_count_the_subscribers(
    client_factory: Any, sdk: pusher.Pusher
) -> None:
    alice, _ = await signed_in(client_factory, "Alice")
    bob, _ = await signed_in(client_factory, "Bob")
    sockets = [
        await alice.connect(channels=["presence-room", "news"]),
        await alice.connect(channels=["presence-room"]),
        await bob.connect(channels=["presence-room", "presence-other"]),
    ]

    listed = await call(sdk.channels_info)
    assert listed["channels"] == {
        "presence-room": {},
        "news": {},
        "presence-other": {},
    }
    present = await call(sdk.channels_info, "presence-", ["user_count"])
    assert present == {
        "channels": {"presence-room": {"user_count": 2}, "presence-other": {"user_count": 1}}
    }
    with pytest.raises(pusher.errors.PusherBadRequest) as refused:
        await call(sdk.channels_info, None, ["user_count"])
    assert error_code(refused.value) == "invalid_info"

    assert await call(sdk.channel_info, "news", ["subscription_count"]) == {
        "occupied": True,
        "subscription_count": 1,
    }
    assert await call(sdk.channel_info, "presence-room", ["user_count", "subscription_count"]) == {
        "occupied": True,
        "user_count": 2,
        "subscription_count": 3,
    }
    assert await call(sdk.channel_info, "nobody-here") == {"occupied": False}
    with pytest.raises(pusher.errors.PusherBadRequest) as refused:
        await call(sdk.channel_info, "news", ["user_count"])
    assert error_code(refused.value) == "invalid_info"
    with pytest.raises(pusher.errors.PusherBadRequest) as refused:
        await call(sdk.channel_info, "news", ["cache"])
    assert error_code(refused.value) == "invalid_info"
    await close_all(sockets)


async def test_presence_users_lists_each_user_once(
    client_factory: Any, server: RunningServer, sdk: pusher.Pusher
) -> None:
    alice, alice_id = await signed_in(client_factory, "Alice")
    bob, bob_id = await signed_in(client_factory, "Bob")
    sockets = [await alice.connect(channels=["presence-room"]) for _ in range(2)]
    sockets.append(await bob.connect(channels=["presence-room"]))
    users = await call(sdk.users_info, "presence-room")
    assert sorted(users["users"], key=lambda user: int(user["id"])) == [
        {"id": str(alice_id)},
        {"id": str(bob_id)},
    ]
    # A member who joined over the Pusher protocol, as the transport puts them in the
    # presence store (an external backend's user id, no pgcast user).
    await server.app[PRESENCE].join("presence-room", "1.2", Member("ext-7", {"name": "Eve"}))
    users = await call(sdk.users_info, "presence-room")
    assert sorted(user["id"] for user in users["users"]) == sorted(
        [str(alice_id), str(bob_id), "ext-7"]
    )
    assert await call(sdk.channel_info, "presence-room", ["user_count"]) == {
        "occupied": True,
        "user_count": 3,
    }
    assert await call(sdk.users_info, "presence-empty") == {"users": []}
    with pytest.raises(pusher.errors.PusherBadRequest) as refused:
        await call(sdk.users_info, "news")
    assert error_code(refused.value) == "not_a_presence_channel"
    await close_all(sockets)


async def test_terminate_user_connections_closes_them_on_every_process(
    client_factory: Any,
    server: RunningServer,
    sdk: pusher.Pusher,
    database_url: str,
    tmp_path: Path,
    unused_tcp_port_factory: Any,
) -> None:
    second = await start_server(
        server_config(database_url, tmp_path / "second", unused_tcp_port_factory())
    )
    try:
        alice, alice_id = await signed_in(client_factory, "Alice")
        bob, _ = await signed_in(client_factory, "Bob")
        here = await alice.connect(channels=["news"])
        # The same user (signed in by e-mail) with a socket on the other process.
        there_client, there_id = await signed_in(lambda: Client(second.endpoint), "Alice")
        assert there_id == alice_id
        there = await there_client.connect(channels=["news"])
        bystander = await bob.connect(channels=["news"])
        # pusher-http-python sends /users/{id}/terminate_connections (no /apps/{id} prefix).
        assert await call(sdk.terminate_user_connections, str(alice_id)) == {}
        assert (await here.expect_close(5.0))[0] == SIGNED_OUT
        assert (await there.expect_close(5.0))[0] == SIGNED_OUT
        # Others stay, and Alice may connect again.
        again = await alice.connect(channels=["news"])
        await call(sdk.trigger, "news", "still-here", {})
        assert await received(bystander, 1) == [("news", "still-here", {})]
        assert await received(again, 1) == [("news", "still-here", {})]
        await there_client.close()
    finally:
        await second.runner.cleanup()


async def test_terminate_under_the_apps_path_as_other_sdks_send_it(
    client_factory: Any, sdk: pusher.Pusher
) -> None:
    alice, alice_id = await signed_in(client_factory, "Alice")
    socket = await alice.connect(channels=["news"])
    app_id = sdk._pusher_client.app_id
    assert (
        await send(sdk, "POST", f"/apps/{app_id}/users/{alice_id}/terminate_connections", {}) == {}
    )
    assert (await socket.expect_close(5.0))[0] == SIGNED_OUT
    # A user pgcast does not know is no error: there is nothing of theirs to close.
    assert await call(sdk.terminate_user_connections, "someone-else") == {}


# --- refusals ----------------------------------------------------------------------------


async def test_a_bad_signature_is_401_and_nothing_is_written(
    server: RunningServer, db: psycopg.AsyncConnection[Any]
) -> None:
    wrong = sdk_for(server, secret="not-the-secret")
    try:
        with pytest.raises(pusher.errors.PusherBadAuth) as refused:
            await call(wrong.trigger, "news", "x", {})
        assert error_code(refused.value) == "invalid_signature"
        with pytest.raises(pusher.errors.PusherBadAuth):
            await call(wrong.channels_info)
    finally:
        close_sdk(wrong)
    assert await count_rows(db, "broadcasts") == 0


async def test_an_unknown_key_is_401(server: RunningServer) -> None:
    stranger = sdk_for(server, key="someone-elses-key")
    try:
        with pytest.raises(pusher.errors.PusherBadAuth) as refused:
            await call(stranger.trigger, "news", "x", {})
        assert error_code(refused.value) == "unknown_auth_key"
    finally:
        close_sdk(stranger)


async def test_a_request_signed_more_than_600_seconds_ago_is_401(
    sdk: pusher.Pusher, db: psycopg.AsyncConnection[Any]
) -> None:
    # A backend whose clock is 601 s behind, or a captured request replayed later.
    # Only the SDK's clock moves (pusher.http's own reference to the time module).
    with (
        mock.patch.object(pusher.http, "time", clock_behind(601)),
        pytest.raises(pusher.errors.PusherBadAuth) as refused,
    ):
        await call(sdk.trigger, "news", "x", {})
    assert error_code(refused.value) == "auth_timestamp_expired"
    with mock.patch.object(pusher.http, "time", clock_behind(590)):
        assert await call(sdk.trigger, "news", "x", {}) == {}
    assert await count_rows(db, "broadcasts") == 1


async def test_a_replayed_request_counts_within_600_seconds_but_never_with_another_body(
    sdk: pusher.Pusher, db: psycopg.AsyncConnection[Any]
) -> None:
    inner = sdk._pusher_client
    params = {"name": "x", "channels": ["news"], "data": "{}"}
    request = pusher.http.Request(inner, "POST", f"/apps/{inner.app_id}/events", params)
    assert await call(inner.http.send_request, request) == {}
    # As on Pusher, the same signed request is accepted again until its timestamp is 600 s
    # old (a backend may send one event twice in a second): HTTPS keeps it from others.
    assert await call(inner.http.send_request, request) == {}
    request.body = request.body.replace(b"news", b"evil")
    with pytest.raises(pusher.errors.PusherBadAuth) as refused:
        await call(inner.http.send_request, request)
    assert error_code(refused.value) == "body_md5_mismatch"
    cursor = await db.execute("SELECT channel FROM broadcasts")
    assert await cursor.fetchall() == [("news",), ("news",)]


async def test_data_over_10_kb_is_413(sdk: pusher.Pusher, db: psycopg.AsyncConnection[Any]) -> None:
    assert await call(sdk.trigger, "news", "big", "x" * 10240) == {}
    with pytest.raises(pusher.errors.PusherBadStatus) as refused:
        await call(sdk.trigger, "news", "big", "x" * 10241)
    assert str(refused.value).startswith("413")
    assert error_code(refused.value) == "data_too_large"
    # The SDK checks batch sizes itself unless told the data is already encoded.
    batch = [{"channel": "news", "name": "big", "data": "é" * 5121}]
    with pytest.raises(pusher.errors.PusherBadStatus) as refused:
        await call(sdk.trigger_batch, batch, already_encoded=True)
    assert str(refused.value).startswith("413")
    assert await count_rows(db, "broadcasts") == 1


async def test_a_body_over_1_mib_is_413(server: RunningServer, sdk: pusher.Pusher) -> None:
    inner = sdk._pusher_client
    request = pusher.http.Request(inner, "POST", f"/apps/{inner.app_id}/batch_events", {})
    request.body = b" " * (1024 * 1024 + 1)
    with pytest.raises(pusher.errors.PusherBadStatus) as refused:
        await call(inner.http.send_request, request)
    assert str(refused.value).startswith("413")
    assert error_code(refused.value) == "body_too_large"


async def test_more_than_100_channels_is_400(sdk: pusher.Pusher) -> None:
    app_id = sdk._pusher_client.app_id
    params = {"name": "x", "channels": [f"c{n}" for n in range(101)], "data": "{}"}
    with pytest.raises(pusher.errors.PusherBadRequest) as refused:
        await send(sdk, "POST", f"/apps/{app_id}/events", params)
    assert error_code(refused.value) == "too_many_channels"
    params["channels"] = params["channels"][:100]
    assert await send(sdk, "POST", f"/apps/{app_id}/events", params) == {}


async def test_more_than_10_events_in_a_batch_is_400(
    sdk: pusher.Pusher, db: psycopg.AsyncConnection[Any]
) -> None:
    batch = [{"channel": "news", "name": f"e{n}", "data": "{}"} for n in range(11)]
    with pytest.raises(pusher.errors.PusherBadRequest) as refused:
        await call(sdk.trigger_batch, batch)
    assert error_code(refused.value) == "too_many_events"
    assert await count_rows(db, "broadcasts") == 0


async def test_a_wrong_app_id_is_404(server: RunningServer) -> None:
    other_app = sdk_for(server, app_id="1" + server.config.pusher.app_id)
    try:
        with pytest.raises(pusher.errors.PusherBadStatus) as refused:
            await call(other_app.trigger, "news", "x", {})
        assert str(refused.value).startswith("404")
        assert error_code(refused.value) == "unknown_app"
    finally:
        close_sdk(other_app)


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ({"channel": "has space", "name": "x", "data": "{}"}, "invalid_channel"),
        ({"channel": "c" * 165, "name": "x", "data": "{}"}, "invalid_channel"),
        ({"channel": "news", "name": "", "data": "{}"}, "invalid_event_name"),
        ({"channel": "news", "name": "bad\nname", "data": "{}"}, "invalid_event_name"),
        ({"channel": "news", "name": "pusher:error", "data": "{}"}, "invalid_event_name"),
        ({"channel": "news", "name": "pusher_internal:x", "data": "{}"}, "invalid_event_name"),
        ({"channel": "news", "name": "x", "data": {"not": "a string"}}, "invalid_data"),
        ({"channel": "news", "name": "x"}, "invalid_data"),
        ({"channel": "news", "name": "x", "data": "\x00"}, "invalid_data"),
        ({"channel": "news", "name": "x", "data": "{}", "socket_id": "a b"}, "invalid_socket_id"),
    ],
)
async def test_invalid_names_and_data_are_400(
    sdk: pusher.Pusher, db: psycopg.AsyncConnection[Any], event: dict[str, Any], code: str
) -> None:
    with pytest.raises(pusher.errors.PusherBadRequest) as refused:
        await call(sdk.trigger_batch, [event], already_encoded=True)
    assert error_code(refused.value) == code
    assert await count_rows(db, "broadcasts") == 0


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"name": "x"}',
        b'{"name": "x", "channels": [], "data": "{}"}',
        b'{"name": "x", "channels": "news", "data": "{}"}',
        b'{"name": "x", "channel": "a", "channels": ["b"], "data": "{}"}',
        b'{"name": 1, "channels": ["news"], "data": "{}"}',
        b"\xff\xfe",
        b"[" * 5000 + b"]" * 5000,
    ],
)
async def test_a_signed_body_that_is_not_an_event_is_400(
    server: RunningServer, sdk: pusher.Pusher, body: bytes
) -> None:
    inner = sdk._pusher_client
    request = pusher.http.Request(inner, "POST", f"/apps/{inner.app_id}/events", {})
    request.body = body
    request.query_params.pop("auth_signature")
    request._generate_auth()
    with pytest.raises(pusher.errors.PusherBadRequest) as refused:
        await call(inner.http.send_request, request)
    assert error_code(refused.value) in ("invalid_json", "invalid_event")
