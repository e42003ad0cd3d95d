"""Laravel Echo 2.5 over pusher-js 8.6, under Node, against a running pgcast: the seed's
snippet, private channels through /broadcasting/auth, notifications, presence, whispers,
sign-in and #server-to-user, reconnects, and toOthers()."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Client, RunningServer, create_user, server_config, start_server
from tests.pusher_support import EchoClient, cookie_of, echo_clients, start_echo
from tests.test_pusher_api import close_sdk, sdk_for

EVENT_TIMEOUT = 15.0
RECONNECT_TIMEOUT = 45.0


async def signed_in(client_factory: Any, email: str, name: str) -> tuple[Client, int]:
    client: Client = client_factory()
    body = await client.sign_in(email, name)
    return client, int(body["user"]["id"])


async def echo_as(server: RunningServer, client: Client, **options: Any) -> EchoClient:
    return await start_echo(server, cookie=cookie_of(client), **options)


@pytest.fixture
async def echo(server: RunningServer) -> AsyncIterator[Any]:
    async with echo_clients(server) as start:
        yield start


async def test_the_seed_snippet_gets_a_psql_insert_as_a_native_socket_does(
    server: RunningServer, client_factory: Any, echo: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, _ = await signed_in(client_factory, "alice@example.com", "Alice")
    native = await alice.connect()
    browser: EchoClient = await echo(cookie=cookie_of(alice))
    browser.send("listen", channel="messages", event=".new-message")
    await browser.wait_for(lambda r: r["type"] == "subscribed")

    author = await create_user(db)
    await db.execute(
        "INSERT INTO messages (user_id, content) VALUES (%s, 'Maintenance at 22:00')", [author]
    )

    record = await browser.wait_for(lambda r: r["type"] == "event", EVENT_TIMEOUT)
    frame = await native.next_frame()
    assert record["event"] == ".new-message"
    assert record["data"] == frame["data"] == {"message": frame["data"]["message"]}
    assert record["data"]["message"]["content"] == "Maintenance at 22:00"


async def test_private_channels_go_through_broadcasting_auth_and_the_listen_rule(
    server: RunningServer, client_factory: Any, echo: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, alice_id = await signed_in(client_factory, "alice@example.com", "Alice")
    _, bob_id = await signed_in(client_factory, "bob@example.com", "Bob")
    await db.execute(
        "INSERT INTO channel_members (channel, user_id) VALUES ('private-team.ops', %s)", [alice_id]
    )
    browser: EchoClient = await echo(cookie=cookie_of(alice))
    browser.send("private", channel="team.ops", event=".deployed")
    browser.send("private", channel="team.sales", event=".deployed")
    browser.send("private", channel=f"user.{bob_id}", event=".x")
    await browser.wait_for(
        lambda r: r["type"] == "subscribed" and r["channel"] == "private-team.ops"
    )
    refused = await browser.wait_count(lambda r: r["type"] == "subscription_error", 2)
    assert {r["channel"] for r in refused} == {"private-team.sales", f"private-user.{bob_id}"}
    assert {r["error"]["status"] for r in refused} == {403}

    await db.execute(
        "INSERT INTO broadcasts (channel, event, data) VALUES"
        " ('private-team.sales', 'deployed', '{\"n\": 0}'),"
        " ('private-team.ops', 'deployed', '{\"n\": 1}')"
    )
    record = await browser.wait_for(lambda r: r["type"] == "event", EVENT_TIMEOUT)
    assert (record["channel"], record["data"]) == ("private-team.ops", {"n": 1})
    await browser.settle()
    assert len(browser.events()) == 1


async def test_notifications_reach_echo_private_user_notification(
    server: RunningServer, client_factory: Any, echo: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, alice_id = await signed_in(client_factory, "alice@example.com", "Alice")
    browser: EchoClient = await echo(cookie=cookie_of(alice))
    browser.send("notification", channel=f"user.{alice_id}")
    await browser.wait_for(lambda r: r["type"] == "subscribed")
    await db.execute(
        "INSERT INTO notifications (user_id, type, data) VALUES (%s, 'invoice-paid', %s)",
        [alice_id, json.dumps({"amount": 42})],
    )
    record = await browser.wait_for(lambda r: r["type"] == "notification", EVENT_TIMEOUT)
    assert record["data"]["amount"] == 42
    assert record["data"]["type"] == "invoice-paid"
    assert record["data"]["id"]


async def test_presence_lists_members_and_announces_each_user_once(
    server: RunningServer, client_factory: Any, echo: Any
) -> None:
    alice, alice_id = await signed_in(client_factory, "alice@example.com", "Alice")
    bob, bob_id = await signed_in(client_factory, "bob@example.com", "Bob")
    first: EchoClient = await echo(cookie=cookie_of(alice))
    first.send("join", channel="room.1")
    here = await first.wait_for(lambda r: r["type"] == "here")
    assert here["members"] == [{"name": "Alice", "avatar_url": None}]

    # Bob in two tabs is one member: joined once, left once, when his last tab goes.
    bob_tab: EchoClient = await echo(cookie=cookie_of(bob))
    bob_tab.send("join", channel="room.1")
    here = await bob_tab.wait_for(lambda r: r["type"] == "here")
    assert sorted(m["name"] for m in here["members"]) == ["Alice", "Bob"]
    joining = await first.wait_for(lambda r: r["type"] == "joining")
    assert joining["member"] == {"name": "Bob", "avatar_url": None}
    bob_again: EchoClient = await echo(cookie=cookie_of(bob))
    bob_again.send("join", channel="room.1")
    await bob_again.wait_for(lambda r: r["type"] == "here")

    await bob_tab.close()
    await first.settle()
    assert not [r for r in first.seen if r["type"] == "leaving"]
    bob_again.send("leave", channel="presence-room.1")
    leaving = await first.wait_for(lambda r: r["type"] == "leaving")
    assert leaving["member"] == {"name": "Bob", "avatar_url": None}
    await first.settle()
    assert len([r for r in first.seen if r["type"] == "joining"]) == 1
    assert len([r for r in first.seen if r["type"] == "leaving"]) == 1
    assert (alice_id, bob_id) != (0, 0)


async def test_whispers_reach_the_others_on_the_channel_not_the_sender(
    server: RunningServer, client_factory: Any, echo: Any
) -> None:
    alice, _ = await signed_in(client_factory, "alice@example.com", "Alice")
    bob, bob_id = await signed_in(client_factory, "bob@example.com", "Bob")
    watchers: list[EchoClient] = [
        await echo(cookie=cookie_of(alice)),
        await echo(cookie=cookie_of(bob)),
    ]
    for client in watchers:
        client.send("join", channel="room.1")
        client.send("listenForWhisper", channel="presence-room.1", event="typing")
        await client.wait_for(lambda r: r["type"] == "here")
    alice_echo, bob_echo = watchers
    bob_echo.send("whisper", channel="presence-room.1", event="typing", data={"typing": True})
    record = await alice_echo.wait_for(lambda r: r["type"] == "event", EVENT_TIMEOUT)
    assert record["data"] == {"typing": True}
    assert record["event"] == "client-typing"
    # On a presence channel the whisper names its sender, as Pusher does.
    assert record["user_id"] == str(bob_id)
    await bob_echo.settle()
    assert bob_echo.events() == []


async def test_signin_gives_the_users_own_server_to_user_channel(
    server: RunningServer, client_factory: Any, echo: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, alice_id = await signed_in(client_factory, "alice@example.com", "Alice")
    browser: EchoClient = await echo(cookie=cookie_of(alice))
    browser.send("signin")
    state = await browser.signed_in()
    assert state["channel"] == f"#server-to-user-{alice_id}"
    assert state["user_data"]["id"] == str(alice_id)
    await db.execute(
        "INSERT INTO broadcasts (channel, event, data) VALUES (%s, 'hello', '{\"to\": \"you\"}')",
        [f"private-user.{alice_id}"],
    )
    record = await browser.wait_for(
        lambda r: r["type"] == "user_event" and r["event"] == "hello", EVENT_TIMEOUT
    )
    assert record["data"] == {"to": "you"}


async def test_to_others_keeps_the_posters_own_echo_socket_out(
    server: RunningServer, client_factory: Any, echo: Any
) -> None:
    alice, _ = await signed_in(client_factory, "alice@example.com", "Alice")
    bob, _ = await signed_in(client_factory, "bob@example.com", "Bob")
    poster: EchoClient = await echo(cookie=cookie_of(alice))
    reader: EchoClient = await echo(cookie=cookie_of(bob))
    for client in (poster, reader):
        client.send("listen", channel="messages", event=".new-message")
        await client.wait_for(lambda r: r["type"] == "subscribed")
    socket_id = await poster.connected()
    assert socket_id.count(".") == 1

    response = await alice.post_message("not for my own socket", socket_id=socket_id)
    assert response.status == 201
    record = await reader.wait_for(lambda r: r["type"] == "event", EVENT_TIMEOUT)
    assert record["data"]["message"]["content"] == "not for my own socket"
    await poster.settle()
    assert poster.events() == []


async def test_after_a_server_restart_echo_reconnects_and_resubscribes(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    config = server_config(database_url, tmp_path, unused_tcp_port)
    first = await start_server(config)
    restarted: RunningServer | None = None
    alice = Client(first.endpoint)
    try:
        await alice.sign_in("alice@example.com", "Alice")
        async with echo_clients(first) as start:
            browser: EchoClient = await start(cookie=cookie_of(alice))
            browser.send("listen", channel="messages", event=".new-message")
            await browser.wait_for(lambda r: r["type"] == "subscribed")
            await first.runner.cleanup()
            # Shutdown closes with 4200: pusher-js reconnects at once, without backing off.
            closed = await browser.wait_for(
                lambda r: r["type"] == "connection_error", EVENT_TIMEOUT
            )
            assert "4200" in json.dumps(closed)
            restarted = await start_server(config)
            assert restarted.config.port == first.config.port
            # pusher-js's connection strategy backs off while the port refuses connections.
            await browser.wait_count(lambda r: r["type"] == "subscribed", 2, RECONNECT_TIMEOUT)
            response = await alice.post_message("after the restart")
            assert response.status == 201
            record = await browser.wait_for(lambda r: r["type"] == "event", EVENT_TIMEOUT)
            assert record["data"]["message"]["content"] == "after the restart"
    finally:
        await alice.close()
        if restarted is not None:
            await restarted.runner.cleanup()


async def test_an_http_api_publish_reaches_echo_and_a_native_socket_and_the_audit(
    server: RunningServer, client_factory: Any, echo: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, _ = await signed_in(client_factory, "alice@example.com", "Alice")
    native = await alice.connect(channels=["orders.42"])
    browser: EchoClient = await echo(cookie=cookie_of(alice))
    browser.send("listen", channel="orders.42", event=".order-shipped")
    await browser.wait_for(lambda r: r["type"] == "subscribed")

    backend = sdk_for(server)
    try:
        await asyncio.to_thread(backend.trigger, "orders.42", "order-shipped", {"status": "out"})
    finally:
        close_sdk(backend)

    record = await browser.wait_for(lambda r: r["type"] == "event", EVENT_TIMEOUT)
    frame = await native.next_frame()
    assert record["data"] == frame["data"] == {"status": "out"}
    cursor = await db.execute(
        "SELECT channel, event, via_api FROM broadcast_audit WHERE channel = 'orders.42'"
    )
    assert await cursor.fetchall() == [("orders.42", "order-shipped", True)]
