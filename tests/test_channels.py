"""Channels: any tool broadcasts on any channel with SQL; each socket gets exactly its
channels' events, live and on resume; the database decides who may listen."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from server.migrate import migrate
from tests.conftest import (
    Client,
    Endpoint,
    RunningServer,
    Socket,
    count_rows,
    server_config,
    start_server,
)
from tests.test_cli import cli_env
from tests.test_serve import start_serving, wait_until_ready

FORBIDDEN = 4403


async def signed_in(client_factory: Any, name: str) -> tuple[Client, int]:
    client: Client = client_factory()
    me = await client.sign_in(f"{name.lower()}@example.com", name)
    return client, int(me["user"]["id"])


async def broadcast(
    db: psycopg.AsyncConnection[Any], channel: str, event: str, **data: Any
) -> None:
    await db.execute(
        "INSERT INTO broadcasts (channel, event, data) VALUES (%s, %s, %s)",
        [channel, event, json.dumps(data)],
    )


async def received(socket: Socket, count: int) -> list[tuple[str, str, Any]]:
    return [(f["channel"], f["event"], f["data"]) for f in await socket.frames(count)]


async def expect_forbidden(client: Client, channels: list[str]) -> str:
    ws = await client.http.ws_connect(
        client.socket_url(channels=channels), headers={"Origin": client.server.origin}
    )
    message = await ws.receive(timeout=10)
    assert message.type == aiohttp.WSMsgType.CLOSE, (message.type, message.data)
    assert ws.close_code == FORBIDDEN
    return str(message.extra)


async def test_a_psql_broadcast_reaches_exactly_its_channels_subscribers(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, _ = await signed_in(client_factory, "Alice")
    orders = await alice.connect(channels=["orders.42"])
    feed = await alice.connect()
    both = await alice.connect(channels=["messages", "orders.42"])

    await broadcast(db, "orders.42", "order-shipped", status="shipped")
    await broadcast(db, "orders.43", "order-shipped", status="elsewhere")
    await db.execute("INSERT INTO broadcasts (channel, event, data) VALUES ('messages', 'x', '{}')")

    shipped = ("orders.42", "order-shipped", {"status": "shipped"})
    assert await received(orders, 1) == [shipped]
    assert await received(both, 2) == [shipped, ("messages", "x", {})]
    assert await received(feed, 1) == [("messages", "x", {})]
    # orders.43 went to nobody here: the next frame on `orders` is the next orders.42 event.
    await broadcast(db, "orders.42", "order-delivered")
    assert await received(orders, 1) == [("orders.42", "order-delivered", {})]

    cursor = await db.execute(
        "SELECT channel, event, application_name, via_api FROM broadcast_audit "
        "WHERE channel LIKE 'orders.%' ORDER BY event_id"
    )
    assert await cursor.fetchall() == [
        ("orders.42", "order-shipped", "psql", False),
        ("orders.43", "order-shipped", "psql", False),
        ("orders.42", "order-delivered", "psql", False),
    ]


@pytest.mark.parametrize(
    ("channel", "event", "data", "constraint"),
    [
        ("has space", "e", "{}", "broadcasts_channel_name_rule"),
        ("", "e", "{}", "broadcasts_channel_name_rule"),
        ("c" * 165, "e", "{}", "broadcasts_channel_name_rule"),
        ("ok", "", "{}", "broadcasts_event_name_rule"),
        ("ok", "bell\x07", "{}", "broadcasts_event_name_rule"),
        ("ok", "e" * 201, "{}", "broadcasts_event_name_rule"),
        ("ok", "e", "[1, 2]", "broadcasts_data_is_object"),
        ("ok", "e", '"text"', "broadcasts_data_is_object"),
    ],
)
async def test_the_database_refuses_a_bad_broadcast_and_nothing_is_sent(
    client_factory: Any,
    db: psycopg.AsyncConnection[Any],
    channel: str,
    event: str,
    data: str,
    constraint: str,
) -> None:
    alice, _ = await signed_in(client_factory, "Alice")
    socket = await alice.connect(channels=["ok", "messages"])
    with pytest.raises(psycopg.errors.CheckViolation, match=constraint):
        await db.execute(
            "INSERT INTO broadcasts (channel, event, data) VALUES (%s, %s, %s)",
            [channel, event, data],
        )
    assert await count_rows(db, "broadcasts") == 0
    await broadcast(db, "ok", "after")
    assert await received(socket, 1) == [("ok", "after", {})]


@pytest.mark.parametrize(
    "query",
    [
        "channels=has%20space",
        "channels=ok,",
        "channels=" + "c" * 165,
        "channels=" + ",".join(f"c{n}" for n in range(101)),
        "channel=",
    ],
)
async def test_an_invalid_channel_list_is_refused_before_the_upgrade(
    client_factory: Any, query: str
) -> None:
    alice, _ = await signed_in(client_factory, "Alice")
    async with alice.http.get(
        alice.server.url + "/ws?" + query, headers={"Origin": alice.server.origin}
    ) as response:
        assert response.status == 400
        body = await response.json()
    assert body["error"]["code"] == "invalid_channels"
    assert body["error"]["message"]


async def test_a_channel_whose_name_has_a_comma_is_given_on_its_own(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, _ = await signed_in(client_factory, "Alice")
    ws = await alice.http.ws_connect(
        alice.server.ws_url + "?channel=a,b&channels=c",
        headers={"Origin": alice.server.origin},
    )
    socket = Socket(ws)
    connected = await socket.next_frame()
    assert connected["data"]["channels"] == ["c", "a,b"]
    await broadcast(db, "a", "split")
    await broadcast(db, "a,b", "whole")
    assert await received(socket, 1) == [("a,b", "whole", {})]


async def test_a_users_private_channel_is_theirs_alone_live_and_on_resume(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, alice_id = await signed_in(client_factory, "Alice")
    bob, bob_id = await signed_in(client_factory, "Bob")
    mine = await alice.connect(channels=[f"private-user.{alice_id}", "messages"])
    bobs_feed = await bob.connect(channels=[f"private-user.{bob_id}", "messages"])
    reason = await expect_forbidden(bob, [f"private-user.{alice_id}"])
    assert f"private-user.{alice_id}" in reason

    await broadcast(db, f"private-user.{alice_id}", "secret", n=1)
    await broadcast(db, "messages", "public", n=2)
    assert await received(mine, 2) == [
        (f"private-user.{alice_id}", "secret", {"n": 1}),
        ("messages", "public", {"n": 2}),
    ]
    assert await received(bobs_feed, 1) == [("messages", "public", {"n": 2})]

    # Bob resumes from before both, with his own channels: never Alice's event.
    await bobs_feed.close()
    resumed = await bob.connect(after=mine.cursor, channels=[f"private-user.{bob_id}", "messages"])
    await broadcast(db, f"private-user.{alice_id}", "secret", n=3)
    await broadcast(db, f"private-user.{bob_id}", "for-bob", n=4)
    assert await received(resumed, 1) == [(f"private-user.{bob_id}", "for-bob", {"n": 4})]
    # And he may not resume onto her channel with any cursor.
    await expect_forbidden(bob, [f"private-user.{alice_id}", "messages"])


async def test_channel_members_decide_and_a_revoked_membership_closes_at_once_everywhere(
    client_factory: Any,
    db: psycopg.AsyncConnection[Any],
    server: RunningServer,
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
        alice_elsewhere = Client(second.endpoint)
        try:
            await alice_elsewhere.sign_in("alice@example.com", "Alice")
            await expect_forbidden(alice, ["private-team.ops"])

            await db.execute(
                "INSERT INTO channel_members (channel, user_id) VALUES ('private-team.ops', %s)",
                [alice_id],
            )
            here = await alice.connect(channels=["private-team.ops", "messages"])
            there = await alice_elsewhere.connect(channels=["private-team.ops"])
            unrelated = await alice.connect(channels=["messages"])
            reason = await expect_forbidden(bob, ["private-team.ops"])
            assert "private-team.ops" in reason

            await broadcast(db, "private-team.ops", "page", level="high")
            for socket in (here, there):
                assert await received(socket, 1) == [
                    ("private-team.ops", "page", {"level": "high"})
                ]

            await db.execute("DELETE FROM channel_members WHERE user_id = %s", [alice_id])
            for socket in (here, there):
                code, reason = await socket.expect_close()
                assert code == FORBIDDEN
                assert "private-team.ops" in reason
            await broadcast(db, "messages", "still-here")
            assert await received(unrelated, 1) == [("messages", "still-here", {})]
        finally:
            await alice_elsewhere.close()
    finally:
        await second.runner.cleanup()


async def test_resume_with_several_channels_gets_each_event_once_in_commit_order(
    client_factory: Any, db: psycopg.AsyncConnection[Any], database_url: str
) -> None:
    alice, _ = await signed_in(client_factory, "Alice")
    socket = await alice.connect(channels=["a", "b"])
    await socket.close()

    # Two transactions committing out of their id order, across three channels.
    async with (
        await psycopg.AsyncConnection.connect(database_url) as first,
        await psycopg.AsyncConnection.connect(database_url) as second,
    ):
        await first.execute("INSERT INTO broadcasts (channel, event, data) VALUES ('a', '1', '{}')")
        await second.execute(
            "INSERT INTO broadcasts (channel, event, data) "
            "VALUES ('b', '2', '{}'), ('c', '3', '{}')"
        )
        await second.commit()
        await first.execute("INSERT INTO broadcasts (channel, event, data) VALUES ('b', '4', '{}')")
        await first.commit()
    await broadcast(db, "c", "5")
    await broadcast(db, "a", "6")

    # The replay reads both transactions as one batch, ordered by (transaction id, event id)
    # (docs/delivery.md): the first transaction's events, then the second's.
    resumed = await alice.connect(after=socket.cursor, channels=["a", "b"])
    assert [e for _, e, _ in await received(resumed, 3)] == ["1", "4", "2"]
    half_way = resumed.cursor
    assert [e for _, e, _ in await received(resumed, 1)] == ["6"]
    await resumed.close()

    # From the middle: only what came after, once.
    again = await alice.connect(after=half_way, channels=["a", "b"])
    assert [e for _, e, _ in await received(again, 1)] == ["6"]
    await again.close()
    # A new list from the same cursor: every event of the new list after it, c's included.
    wider = await alice.connect(after=socket.cursor, channels=["a", "b", "c"])
    assert [(c, e) for c, e, _ in await received(wider, 6)] == [
        ("a", "1"),
        ("b", "4"),
        ("b", "2"),
        ("c", "3"),
        ("c", "5"),
        ("a", "6"),
    ]
    await broadcast(db, "c", "live")
    assert await received(wider, 1) == [("c", "live", {})]


async def test_resume_across_channels_after_the_server_was_killed_loses_and_leaks_nothing(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    env = cli_env(database_url, tmp_path, PGCAST_PORT=str(unused_tcp_port))
    url = f"http://127.0.0.1:{unused_tcp_port}"
    process = await start_serving(env)
    alice, bob = Client(Endpoint(url)), Client(Endpoint(url))
    try:
        await wait_until_ready(url)
        alice_id = int((await alice.sign_in("alice@example.com", "Alice"))["user"]["id"])
        bob_id = int((await bob.sign_in("bob@example.com", "Bob"))["user"]["id"])
        lists = {
            alice: ["shared", f"private-user.{alice_id}", "orders.1"],
            bob: ["shared", f"private-user.{bob_id}"],
        }
        sockets = {client: await client.connect(channels=lists[client]) for client in lists}
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
            await broadcast(db, "shared", "before")
            for socket in sockets.values():
                assert (await socket.next_frame())["event"] == "before"

            process.kill()
            await process.wait()
            for socket in sockets.values():
                with contextlib.suppress(AssertionError):
                    await socket.expect_close()
            # While no server runs: two transactions commit out of their id order, on every
            # channel either socket has and on one neither has.
            async with (
                await psycopg.AsyncConnection.connect(database_url) as first,
                await psycopg.AsyncConnection.connect(database_url) as second,
            ):
                await broadcast(first, "shared", "1")
                await broadcast(second, f"private-user.{bob_id}", "2")
                await broadcast(second, "orders.1", "3")
                await broadcast(second, "elsewhere", "x")
                await second.commit()
                await broadcast(first, f"private-user.{alice_id}", "4")
                await first.commit()
            await broadcast(db, "shared", "5")

            process = await start_serving(env)
            await wait_until_ready(url)
            # One batch, ordered by (transaction id, event id): the first transaction's events,
            # then the second's, then the last.
            expected = {
                alice: [
                    ("shared", "1"),
                    (f"private-user.{alice_id}", "4"),
                    ("orders.1", "3"),
                    ("shared", "5"),
                ],
                bob: [("shared", "1"), (f"private-user.{bob_id}", "2"), ("shared", "5")],
            }
            resumed = {}
            for client, socket in sockets.items():
                resumed[client] = await client.connect(after=socket.cursor, channels=lists[client])
                got = await received(resumed[client], len(expected[client]))
                assert [(channel, event) for channel, event, _ in got] == expected[client]
            # Then live, and nothing more of the replay: the next frame is the live one.
            await broadcast(db, "shared", "live")
            for socket in resumed.values():
                assert await received(socket, 1) == [("shared", "live", {})]
                await socket.close()
    finally:
        await alice.close()
        await bob.close()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            assert process.stderr is not None
            await asyncio.wait_for(process.stderr.read(), 30)
            await asyncio.wait_for(process.wait(), 30)


async def test_a_dbas_own_listen_rule_survives_migrate(
    client_factory: Any, db: psycopg.AsyncConnection[Any], database_url: str
) -> None:
    alice, _ = await signed_in(client_factory, "Alice")
    await db.execute(
        """
        CREATE OR REPLACE FUNCTION pgcast_may_listen(listener_id bigint, channel text)
        RETURNS boolean LANGUAGE sql STABLE AS $$ SELECT channel <> 'closed' $$
        """
    )
    await asyncio.to_thread(migrate, database_url)
    await expect_forbidden(alice, ["closed"])
    await alice.connect(channels=["open"])


async def test_a_recheck_closes_what_a_changed_rule_no_longer_allows(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, _ = await signed_in(client_factory, "Alice")
    socket = await alice.connect(channels=["lobby"])
    await db.execute(
        """
        CREATE OR REPLACE FUNCTION pgcast_may_listen(listener_id bigint, channel text)
        RETURNS boolean LANGUAGE sql STABLE AS $$ SELECT channel <> 'lobby' $$
        """
    )
    await db.execute("SELECT pg_notify('pgcast_revocations', 'recheck')")
    code, reason = await socket.expect_close()
    assert code == FORBIDDEN
    assert "lobby" in reason


async def test_channels_lose_nothing_and_leak_nothing_across_listener_kills(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, alice_id = await signed_in(client_factory, "Alice")
    bob, bob_id = await signed_in(client_factory, "Bob")
    alices = await alice.connect(channels=[f"private-user.{alice_id}", "shared"])
    bobs = await bob.connect(channels=[f"private-user.{bob_id}", "shared"])

    async def write() -> None:
        for n in range(150):
            channel = ("shared", f"private-user.{alice_id}", f"private-user.{bob_id}")[n % 3]
            await broadcast(db, channel, "n", n=n)

    async def kill_listener() -> None:
        for _ in range(5):
            await db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'pgcast-listener%' AND datname = current_database()"
            )
            await asyncio.sleep(0.02)

    await asyncio.gather(write(), kill_listener())
    alice_got = [data["n"] for _, _, data in await received(alices, 100)]
    bob_got = [data["n"] for _, _, data in await received(bobs, 100)]
    assert alice_got == [n for n in range(150) if n % 3 in (0, 1)]
    assert bob_got == [n for n in range(150) if n % 3 in (0, 2)]


async def test_a_dbas_own_table_broadcasts_after_one_call(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, _ = await signed_in(client_factory, "Alice")
    socket = await alice.connect(channels=["orders"])
    await db.execute("CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL)")
    await db.execute(
        """
        CREATE FUNCTION orders_broadcasts(o orders, operation text)
        RETURNS TABLE (channel text, event text, data jsonb) LANGUAGE sql STABLE AS $$
            SELECT 'orders', 'order-' || lower(operation),
                   jsonb_build_object('id', o.id, 'status', o.status)
        $$
        """
    )
    await db.execute("SELECT pgcast_broadcast_table('orders', 'orders_broadcasts')")
    await db.execute("INSERT INTO orders VALUES (1, 'new')")
    await db.execute("UPDATE orders SET status = 'shipped'")
    await db.execute("DELETE FROM orders")
    assert await received(socket, 3) == [
        ("orders", "order-insert", {"id": 1, "status": "new"}),
        ("orders", "order-update", {"id": 1, "status": "shipped"}),
        ("orders", "order-delete", {"id": 1, "status": "shipped"}),
    ]
