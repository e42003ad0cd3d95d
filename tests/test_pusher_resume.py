"""Resume for Pusher clients: with clients/pgcast-echo-resume.mjs a pusher-js client that
drops and reconnects loses nothing and gets nothing twice; without it, it behaves as on
Pusher; a position that cannot be honoured is said so, never replayed in part."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import psycopg
import pytest

from tests.conftest import Client, RunningServer
from tests.pusher_support import EchoClient, broadcast, cookie_of, echo_clients, raw_pusher

EVENTS = 1000
TIMEOUT = 60.0


async def publish(database_url: str, count: int) -> None:
    """`count` broadcasts on `orders`, each in a transaction of its own, as writers do."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for n in range(count):
            await conn.execute(
                "INSERT INTO broadcasts (channel, event, data) VALUES ('orders', 'placed', %s)",
                [json.dumps({"n": n})],
            )
            if n % 50 == 0:
                await asyncio.sleep(0.01)


async def drop_while_publishing(
    server: RunningServer, database_url: str, alice: Client, resume: bool
) -> list[int]:
    async with echo_clients(server) as start:
        browser: EchoClient = await start(cookie=cookie_of(alice), resume=resume)
        browser.send("listen", channel="orders", event=".placed")
        await browser.wait_for(lambda r: r["type"] == "subscribed")
        publishing = asyncio.create_task(publish(database_url, EVENTS))
        await browser.wait_count(lambda r: r["type"] == "event", 100, TIMEOUT)
        browser.send("disconnect")
        await browser.wait_for(lambda r: r["type"] == "state" and r["current"] == "disconnected")
        await asyncio.sleep(0.3)  # a real gap: events commit while the client is away
        browser.send("connect")
        await browser.wait_count(lambda r: r["type"] == "subscribed", 2, TIMEOUT)
        await publishing
        await browser.wait_for(
            lambda r: r["type"] == "event" and r["data"]["n"] == EVENTS - 1, TIMEOUT
        )
        await browser.settle()
        if resume:
            [complete] = [r for r in browser.seen if r["type"] == "resume_complete"]
            assert complete["complete"] is True
            assert complete["channel"] == "orders"
        return [record["data"]["n"] for record in browser.events()]


@pytest.fixture
async def alice(client_factory: Any) -> Client:
    client: Client = client_factory()
    await client.sign_in("alice@example.com", "Alice")
    return client


async def test_with_the_helper_a_dropped_client_gets_every_event_once_in_order(
    server: RunningServer, database_url: str, alice: Client
) -> None:
    received = await drop_while_publishing(server, database_url, alice, resume=True)
    assert received == list(range(EVENTS))


async def test_without_the_helper_a_dropped_client_carries_on_as_on_pusher(
    server: RunningServer, database_url: str, alice: Client
) -> None:
    received = await drop_while_publishing(server, database_url, alice, resume=False)
    # What was committed while it was away is missed, as with Pusher; nothing comes twice
    # or out of order, and live delivery carries on.
    assert received == sorted(set(received))
    assert received[-1] == EVENTS - 1
    assert len(received) < EVENTS


async def test_a_position_the_server_cannot_honour_says_complete_false(
    server: RunningServer, alice: Client, db: psycopg.AsyncConnection[Any]
) -> None:
    socket = await raw_pusher(alice.http, server)
    await socket.send("pgcast:resume", {"channel": "orders", "cursor": "not-a-cursor"})
    succeeded = await socket.subscribe("orders")
    assert succeeded["event"] == "pusher_internal:subscription_succeeded"
    complete = await socket.next_event("pgcast:resume_complete")
    result = json.loads(complete["data"])
    assert result["complete"] is False
    assert result["reason"]
    assert result["cursor"] == json.loads(succeeded["data"])["pgcast"]["cursor"]
    # The channel carries on live from now.
    await db.execute(
        "INSERT INTO broadcasts (channel, event, data) VALUES ('orders', 'placed', '{}')"
    )
    assert (await socket.next_event("placed"))["channel"] == "orders"


async def test_resume_after_subscribing_is_refused_not_half_done(
    server: RunningServer, alice: Client
) -> None:
    socket = await raw_pusher(alice.http, server)
    succeeded = await socket.subscribe("orders")
    cursor = json.loads(succeeded["data"])["pgcast"]["cursor"]
    await socket.send("pgcast:resume", {"channel": "orders", "cursor": cursor})
    complete = json.loads((await socket.next_event("pgcast:resume_complete"))["data"])
    assert complete["complete"] is False
    assert "before pusher:subscribe" in complete["reason"]


async def test_a_raw_resume_replays_in_commit_order_then_goes_live(
    server: RunningServer, alice: Client, db: psycopg.AsyncConnection[Any]
) -> None:
    async with aiohttp.ClientSession(cookie_jar=alice.http.cookie_jar) as http:
        first = await raw_pusher(http, server)
        succeeded = await first.subscribe("orders")
        cursor = json.loads(succeeded["data"])["pgcast"]["cursor"]
        await first.close()
        for n in range(5):
            await db.execute(
                "INSERT INTO broadcasts (channel, event, data) VALUES ('orders', 'placed', %s)",
                [json.dumps({"n": n})],
            )
        again = await raw_pusher(http, server)
        await again.send("pgcast:resume", {"channel": "orders", "cursor": cursor})
        assert json.loads((await again.subscribe("orders"))["data"])["pgcast"] == {"cursor": cursor}
        replayed = [await again.next() for _ in range(5)]
        assert [json.loads(f["data"])["n"] for f in replayed] == list(range(5))
        assert all(f["cursor"] for f in replayed)
        complete = json.loads((await again.next())["data"])
        assert complete["complete"] is True
        await broadcast(db, "orders", "placed", {"n": 5})
        assert json.loads((await again.next())["data"]) == {"n": 5}
