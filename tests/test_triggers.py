"""The broadcast triggers in SQL alone: which rows a statement turns into broadcasts, in which
order, and the NOTIFY it sends, through both ways a table can name its mapping function."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest

BROADCASTING_TABLES = ("messages", "direct_messages", "notifications")

# The same mapping twice: under the name pgcast_broadcasts_of (the planned path) for
# twins_planned, under a name of its own (named in the trigger) for twins_named.
TWIN_MAPPING = """
CREATE FUNCTION {name}(t {table}, operation text)
RETURNS TABLE (channel text, event text, data jsonb) LANGUAGE sql STABLE AS $$
    SELECT 'twins.' || (t.id % 2), 'twin-' || lower(operation),
           jsonb_build_object('id', t.id, 'label', t.label)
    FROM (VALUES (1), (2)) AS copies (n)
    WHERE copies.n = 1 OR t.id % 3 = 0
$$
"""

# Every kind of statement: one row, many rows, an UPDATE that moves ids (deleted, then new
# or updated in id order), statements that match nothing, a DELETE of several rows.
TWIN_STATEMENTS = (
    "INSERT INTO {table} (id, label) VALUES (1, 'one')",
    "INSERT INTO {table} (id, label) SELECT n, 'n' || n FROM generate_series(7, 2, -1) n",
    "UPDATE {table} SET label = label || '!' WHERE id IN (2, 3)",
    "UPDATE {table} SET id = CASE WHEN id = 4 THEN 40 WHEN id = 5 THEN 6 "
    "WHEN id = 6 THEN 5 ELSE id END, label = 'moved' WHERE id IN (4, 5, 6)",
    "UPDATE {table} SET label = 'none' WHERE false",
    "DELETE FROM {table} WHERE false",
    "INSERT INTO {table} (id, label) SELECT 1, 'x' WHERE false",
    "DELETE FROM {table} WHERE id > 2",
    "DELETE FROM {table}",
)


async def rows(conn: psycopg.AsyncConnection[Any], query: str, *args: Any) -> list[Any]:
    cursor = await conn.execute(query, list(args))
    return await cursor.fetchall()


async def broadcasts_since(
    db: psycopg.AsyncConnection[Any], after_id: int
) -> list[tuple[str, str, Any]]:
    found = await rows(
        db, "SELECT channel, event, data FROM broadcasts WHERE id > %s ORDER BY id", after_id
    )
    return [(channel, event, data) for channel, event, data in found]


async def last_broadcast_id(db: psycopg.AsyncConnection[Any]) -> int:
    found = await rows(db, "SELECT coalesce(max(id), 0) FROM broadcasts")
    return int(found[0][0])


async def wakes(database_url: str, db: psycopg.AsyncConnection[Any], statement: str) -> list[str]:
    """The notifications on pgcast_events that `statement` sends, in order: a NOTIFY sent
    after it on another channel marks the end, so no wait hopes for nothing to arrive."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute("LISTEN pgcast_events")
        await listener.execute("LISTEN pgcast_test_end")
        await db.execute(statement)
        await db.execute("NOTIFY pgcast_test_end")
        seen: list[str] = []

        async def collect() -> None:
            async for notify in listener.notifies():
                if notify.channel == "pgcast_test_end":
                    return
                seen.append(notify.channel)

        await asyncio.wait_for(collect(), timeout=10)
        return seen


async def test_pgcasts_own_tables_broadcast_through_the_planned_path(
    db: psycopg.AsyncConnection[Any],
) -> None:
    # No argument: the trigger's statements are static SQL calling pgcast_broadcasts_of(row,
    # operation), planned once per session, not once per statement.
    triggers = await rows(
        db,
        "SELECT c.relname, t.tgname, t.tgnargs, p.proname FROM pg_trigger t "
        "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid "
        "WHERE t.tgname LIKE '%%\\_broadcast\\_%%' ORDER BY c.relname, t.tgname",
    )
    assert triggers == [
        (table, f"{table}_broadcast_{op}", 0, "pgcast_broadcast_rows")
        for table in sorted(BROADCASTING_TABLES)
        for op in ("delete", "insert", "update")
    ]
    for table in BROADCASTING_TABLES:
        mapping = f"pgcast_broadcasts_of({table},text)"
        assert await rows(db, "SELECT to_regprocedure(%s)::text", mapping) == [(mapping,)]


async def test_both_paths_broadcast_the_same_rows_in_the_same_order(
    database_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    for table, name in (("twins_planned", "pgcast_broadcasts_of"), ("twins_named", "twin_map")):
        # No primary key, so one UPDATE can swap two ids; a dropped column, so the mapping
        # sees the columns the table has, not the ones it once had.
        await db.execute(
            f"CREATE TABLE {table} (gone int, id bigint NOT NULL, label text NOT NULL)"
        )
        await db.execute(f"ALTER TABLE {table} DROP COLUMN gone")
        await db.execute(TWIN_MAPPING.format(name=name, table=table))
    await db.execute("SELECT pgcast_broadcast_table('twins_planned')")
    await db.execute("SELECT pgcast_broadcast_table('twins_named', 'twin_map')")

    results: dict[str, list[Any]] = {}
    for table in ("twins_planned", "twins_named"):
        results[table] = []
        for statement in TWIN_STATEMENTS:
            before = await last_broadcast_id(db)
            woken = await wakes(database_url, db, statement.format(table=table))
            results[table].append((statement, await broadcasts_since(db, before), woken))
    assert results["twins_planned"] == results["twins_named"]

    by_statement = {s: (b, w) for s, b, w in results["twins_planned"]}
    moved = by_statement[TWIN_STATEMENTS[3]][0]
    # 4 left (deleted), 40 appeared (new), 5 and 6 swapped (updated), each in id order.
    assert [(e, d["id"]) for _, e, d in moved] == [
        ("twin-delete", 4),
        ("twin-update", 5),
        ("twin-update", 6),
        ("twin-update", 6),
        ("twin-insert", 40),
    ]
    for statement in TWIN_STATEMENTS[4:7]:
        assert by_statement[statement] == ([], []), statement
    inserted = by_statement[TWIN_STATEMENTS[1]]
    assert [d["id"] for _, _, d in inserted[0]] == [2, 3, 3, 4, 5, 6, 6, 7]
    assert inserted[1] == ["pgcast_events"]


async def test_a_dbas_table_with_its_pgcast_broadcasts_of_broadcasts_after_one_call(
    db: psycopg.AsyncConnection[Any],
) -> None:
    await db.execute("CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL)")
    await db.execute(
        """
        CREATE FUNCTION pgcast_broadcasts_of(o orders, operation text)
        RETURNS TABLE (channel text, event text, data jsonb) LANGUAGE sql STABLE AS $$
            SELECT 'orders', 'order-' || lower(operation),
                   jsonb_build_object('id', o.id, 'status', o.status)
        $$
        """
    )
    await db.execute("SELECT pgcast_broadcast_table('orders')")
    # Idempotent, like the rest of db/triggers.sql.
    await db.execute("SELECT pgcast_broadcast_table('orders')")
    before = await last_broadcast_id(db)
    await db.execute("INSERT INTO orders VALUES (1, 'new')")
    await db.execute("UPDATE orders SET status = 'shipped'")
    await db.execute("DELETE FROM orders")
    assert await broadcasts_since(db, before) == [
        ("orders", "order-insert", {"id": 1, "status": "new"}),
        ("orders", "order-update", {"id": 1, "status": "shipped"}),
        ("orders", "order-delete", {"id": 1, "status": "shipped"}),
    ]
    # A bad channel from the mapping is refused as for any other writer, and nothing is kept.
    await db.execute(
        """
        CREATE OR REPLACE FUNCTION pgcast_broadcasts_of(o orders, operation text)
        RETURNS TABLE (channel text, event text, data jsonb) LANGUAGE sql STABLE AS $$
            SELECT 'orders ' || o.id, 'order-' || lower(operation), '{}'::jsonb
        $$
        """
    )
    with pytest.raises(psycopg.errors.CheckViolation, match="broadcasts_channel_name_rule"):
        await db.execute("INSERT INTO orders VALUES (2, 'new')")
    assert await rows(db, "SELECT count(*) FROM orders") == [(0,)]


async def test_one_call_without_a_pgcast_broadcasts_of_says_what_is_missing(
    db: psycopg.AsyncConnection[Any],
) -> None:
    await db.execute("CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL)")
    with pytest.raises(psycopg.errors.UndefinedFunction) as raised:
        await db.execute("SELECT pgcast_broadcast_table('orders')")
    message = raised.value.diag.message_primary
    assert message is not None
    assert "pgcast_broadcasts_of(orders, text)" in message
    assert await rows(db, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders'::regclass") == [
        (0,)
    ]


# The rule as migration 0005 wrote it: the channel names it accepts are the contract.
FIRST_CHANNEL_RULE = "^[-a-zA-Z0-9_=@,.;]{1,164}$"


@pytest.mark.parametrize(
    "channel",
    [
        "a",
        "c" * 164,
        "c" * 165,
        "",
        "-_=@,.;azAZ09",
        "private-user.42",
        "presence-room",
        "has space",
        "tab\there",
        "line\nbreak",
        "é",
        "caf\u00e9",
        "slash/no",
        "colon:no",
        "star*",
        "ü" * 10,
    ],
)
async def test_the_channel_rule_accepts_exactly_the_names_it_always_did(
    db: psycopg.AsyncConnection[Any], channel: str
) -> None:
    accepted = (await rows(db, "SELECT %s ~ %s", channel, FIRST_CHANNEL_RULE))[0][0]
    insert = (
        "INSERT INTO broadcasts (channel, event, data) VALUES (%s, 'e', %s)",
        [channel, json.dumps({})],
    )
    if accepted:
        await db.execute(*insert)
        assert await rows(db, "SELECT count(*) FROM broadcasts WHERE channel = %s", channel) == [
            (1,)
        ]
    else:
        with pytest.raises(psycopg.errors.CheckViolation, match="broadcasts_channel_name_rule"):
            await db.execute(*insert)
