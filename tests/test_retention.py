"""Retention: old events are pruned, recent ones stay replayable, and a cursor that may need
a pruned event is refused with 4400 rather than silently missing it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg

from server.core.cursor import Cursor
from server.keys import POOL
from server.retention import prune_once
from tests.conftest import RunningServer, count_rows, create_user
from tests.test_websocket import refused_cursor


async def test_prune_drops_old_events_keeps_recent_ones_and_refuses_older_cursors(
    client_factory: Any, server: RunningServer, db: psycopg.AsyncConnection[Any]
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    user_id = await create_user(db)
    before_old = (await alice.connect()).cursor
    await db.execute(
        "INSERT INTO messages (user_id, content) SELECT %s, 'old ' || n "
        "FROM generate_series(1, 3) AS n",
        [user_id],
    )
    await db.execute("UPDATE broadcasts SET recorded_at = now() - interval '8 days'")
    socket = await alice.connect()
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'recent')", [user_id])
    assert (await socket.next_frame())["data"]["message"]["content"] == "recent"
    await socket.close()

    await prune_once(server.app[POOL], timedelta(days=7))

    cursor = await db.execute("SELECT data #>> '{message,content}' FROM broadcasts ORDER BY id")
    assert await cursor.fetchall() == [("recent",)]
    cursor = await db.execute(
        "SELECT pruned_through BETWEEN now() - interval '8 days 1 minute' "
        "AND now() - interval '8 days' + interval '1 minute' FROM pgcast_instance"
    )
    assert await cursor.fetchone() == (True,)
    # Messages themselves are never pruned.
    cursor = await db.execute("SELECT count(*) FROM messages")
    assert await cursor.fetchone() == (4,)

    # A cursor from after the pruned events still resumes...
    resumed = await alice.connect(after=socket.cursor)
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'next')", [user_id])
    assert (await resumed.next_frame())["data"]["message"]["content"] == "next"
    # ...one from before them is refused.
    assert "retention" in await refused_cursor(alice, before_old)


async def test_a_cursor_that_needs_pruned_events_is_refused_whatever_time_it_claims(
    client_factory: Any, server: RunningServer, db: psycopg.AsyncConnection[Any]
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    user_id = await create_user(db)
    socket = await alice.connect()
    connected = Cursor.decode(socket.cursor)
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'old')", [user_id])
    assert (await socket.next_frame())["data"]["message"]["content"] == "old"
    await db.execute("UPDATE broadcasts SET recorded_at = now() - interval '8 days'")
    await prune_once(server.app[POOL], timedelta(days=7))

    # The time in a cursor is the client's to write; what it has seen is in its snapshots.
    century_us = 100 * 365 * 24 * 3600 * 1_000_000
    forged = replace(connected, taken_at_us=connected.taken_at_us + century_us)
    assert "retention" in await refused_cursor(alice, forged.encode())


async def test_a_pruned_event_written_by_hand_with_a_future_transaction_id_refuses_no_cursor(
    client_factory: Any, server: RunningServer, db: psycopg.AsyncConnection[Any]
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    user_id = await create_user(db)
    socket = await alice.connect()
    await socket.close()
    await db.execute(
        "INSERT INTO broadcasts (tx, channel, event, data, recorded_at) "
        "SELECT (pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 1000000)::text::xid8, "
        "'messages', 'new-message', jsonb_build_object('message', jsonb_build_object("
        "'id', 1, 'user_id', %s::bigint, 'content', 'by hand')), now() - interval '8 days'",
        [user_id],
    )
    await prune_once(server.app[POOL], timedelta(days=7))
    assert await count_rows(db, "broadcasts") == 0

    # No one was ever sent it, so no cursor misses it.
    resumed = await alice.connect(after=socket.cursor)
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'next')", [user_id])
    assert (await resumed.next_frame())["data"]["message"]["content"] == "next"
