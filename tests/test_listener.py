"""The LISTEN connection routes each NOTIFY channel to its handler, whatever a handler does."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
import pytest

from server.background import running
from server.pg.listener import Listener


def collecting(listener: Listener, expected: int) -> tuple[list[str], asyncio.Event, asyncio.Event]:
    """The payloads `listener` routes on pgcast_test_fine; an event set once `expected` are
    in, and one set when LISTEN is in place."""
    received: list[str] = []
    all_in, listened = asyncio.Event(), asyncio.Event()

    def got(payload: str) -> None:
        received.append(payload)
        if len(received) == expected:
            all_in.set()

    listener.route("pgcast_test_fine", got)
    listener.when_listening(listened.set)
    return received, all_in, listened


async def test_a_handler_that_raises_is_logged_and_the_listener_goes_on(
    database_url: str, db: psycopg.AsyncConnection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    listener = Listener(database_url)
    received: asyncio.Queue[str] = asyncio.Queue()
    listened = asyncio.Event()

    def broken(payload: str) -> None:
        raise ValueError(f"cannot use {payload!r}")

    listener.route("pgcast_test_broken", broken)
    listener.route("pgcast_test_fine", received.put_nowait)
    listener.when_listening(listened.set)
    with caplog.at_level(logging.ERROR, logger="server.pg.listener"):
        async with running(listener.run(), "listener"):
            await asyncio.wait_for(listened.wait(), 10)
            await db.execute("SELECT pg_notify('pgcast_test_broken', 'bad')")
            await db.execute("SELECT pg_notify('pgcast_test_unrouted', 'ignored')")
            await db.execute("SELECT pg_notify('pgcast_test_fine', 'good')")
            assert await asyncio.wait_for(received.get(), 10) == "good"
    assert "handling pgcast_test_broken failed" in caplog.text
    assert "cannot use 'bad'" in caplog.text


async def test_every_reconnect_is_announced_so_missed_work_is_caught_up(
    database_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    listener = Listener(database_url)
    connections: asyncio.Queue[None] = asyncio.Queue()
    listener.route("pgcast_test_fine", lambda _payload: None)
    listener.when_listening(lambda: connections.put_nowait(None))
    async with running(listener.run(), "listener"):
        await asyncio.wait_for(connections.get(), 10)
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'pgcast-listener' AND datname = current_database()"
        )
        await asyncio.wait_for(connections.get(), 10)
    assert listener.reconnects == 1


async def test_notifications_arriving_together_are_each_routed_in_order_and_intact(
    database_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    listener = Listener(database_url)
    payloads = [f"{n} ünïcødé ✓ \\ \"'" for n in range(500)]
    received, all_in, listened = collecting(listener, len(payloads))
    async with running(listener.run(), "listener"):
        await asyncio.wait_for(listened.wait(), 10)
        # One transaction: PostgreSQL delivers its notifications together, on commit.
        async with db.transaction():
            for payload in payloads:
                await db.execute("SELECT pg_notify('pgcast_test_fine', %s)", [payload])
        await asyncio.wait_for(all_in.wait(), 10)
    assert received == payloads


async def test_notifications_sent_while_held_wait_and_are_routed_in_order_on_release(
    database_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    listener = Listener(database_url)
    payloads = [f"held {n}" for n in range(5)]
    received, all_in, listened = collecting(listener, len(payloads))
    async with running(listener.run(), "listener"):
        await asyncio.wait_for(listened.wait(), 10)
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as spy:
            await spy.execute("LISTEN pgcast_test_fine")
            listener.hold()
            for payload in payloads:
                await db.execute("SELECT pg_notify('pgcast_test_fine', %s)", [payload])
            # Sent to every listener: once the spy has them all, so does the held socket.
            async for _ in spy.notifies(timeout=10, stop_after=len(payloads)):
                pass
        assert received == []
        woken = listener.wakeups
        listener.release()
        await asyncio.wait_for(all_in.wait(), 10)
        assert received == payloads
        assert listener.wakeups - woken <= 1


async def test_a_connection_lost_while_held_is_found_on_release_and_replaced(
    database_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    listener = Listener(database_url)
    connections: asyncio.Queue[None] = asyncio.Queue()
    received: asyncio.Queue[str] = asyncio.Queue()
    listener.route("pgcast_test_fine", received.put_nowait)
    listener.when_listening(lambda: connections.put_nowait(None))
    async with running(listener.run(), "listener"):
        await asyncio.wait_for(connections.get(), 10)
        backend = listener.backend
        assert backend is not None
        listener.hold()
        # Returns once the backend has exited: its socket is closed by the time of release.
        await db.execute("SELECT pg_terminate_backend(%s, 10000)", [backend.pid])
        listener.release()
        await asyncio.wait_for(connections.get(), 10)
        await db.execute("SELECT pg_notify('pgcast_test_fine', 'after')")
        assert await asyncio.wait_for(received.get(), 10) == "after"
    assert listener.reconnects == 1
