"""A database restored into another PostgreSQL cluster: its events carry the old cluster's
transaction ids. Each event must still be delivered once, and old cursors refused."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from server.core.cursor import Cursor
from server.db import with_database
from server.embedded import bundled_psql, embedded_database
from server.migrate import migrate
from server.pg.eventlog import current_position, database_identity
from tests.conftest import Client, create_user, server_config, start_server
from tests.test_cli import cli_env, run_cli
from tests.test_websocket import refused_cursor

OLD_EVENTS = 1200


@pytest.fixture
def second_cluster(tmp_path: Path) -> Iterator[str]:
    """A PostgreSQL cluster of this test's own (its own initdb, system identifier and xid
    counter); yields a conninfo for an administrator."""
    with embedded_database(tmp_path / "second") as conninfo:
        yield conninfo


async def xmax(conninfo: str) -> int:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        cursor = await conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def burn_transaction_ids(conninfo: str, count: int) -> None:
    """Move the cluster's transaction counter `count` ids on, one transaction each."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(
            sql.SQL(
                "DO $$ BEGIN FOR i IN 1..{} LOOP PERFORM pg_current_xact_id(); COMMIT; "
                "END LOOP; END $$"
            ).format(sql.Literal(count))
        )


def run_tool(name: str, *args: str) -> None:
    subprocess.run(
        [str(bundled_psql().parent / name), *args], check=True, capture_output=True, timeout=120
    )


async def contents(socket: Any, count: int) -> list[str]:
    return [(await socket.next_frame())["data"]["message"]["content"] for _ in range(count)]


async def test_a_database_restored_into_another_cluster_sends_each_new_event_once_and_refuses_old_cursors(  # noqa: E501
    database_url: str,
    second_cluster: str,
    tmp_path: Path,
    unused_tcp_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The source cluster's counter runs well ahead of the second one's, so the restored
    # events carry transaction ids the second cluster has not reached yet.
    lead = await xmax(second_cluster) + 5000 - await xmax(database_url)
    if lead > 0:
        await burn_transaction_ids(database_url, lead)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as source:
        user_id = await create_user(source)
        old_cursor = (await current_position(source, await database_identity(source))).encode()
        await source.execute(
            "INSERT INTO messages (user_id, content) "
            "SELECT %s, 'old ' || n FROM generate_series(1, %s) AS n",
            [user_id, OLD_EVENTS],
        )
        for n in range(5):
            await source.execute(
                "INSERT INTO messages (user_id, content) VALUES (%s, %s)", [user_id, f"older {n}"]
            )
        cursor = await source.execute(
            "SELECT oid FROM pg_database WHERE datname = current_database()"
        )
        row = await cursor.fetchone()
        assert row is not None
        source_oid = row[0]
    assert await xmax(database_url) > await xmax(second_cluster) + 5000

    dump = tmp_path / "pgcast.dump"
    await asyncio.to_thread(run_tool, "pg_dump", "--format=custom", f"--file={dump}", database_url)
    async with await psycopg.AsyncConnection.connect(second_cluster, autocommit=True) as admin:
        # A fresh cluster may well give the database the oid it had: make sure it does.
        await admin.execute(
            sql.SQL("CREATE DATABASE restored OID {}").format(sql.Literal(source_oid))
        )
    restored = with_database(second_cluster, "restored")
    await asyncio.to_thread(
        run_tool, "pg_restore", "--no-owner", "--no-privileges", f"--dbname={restored}", str(dump)
    )

    # Started on the restored database as `pgcast serve --no-migrate` would be.
    with caplog.at_level(logging.WARNING):
        server = await start_server(server_config(restored, tmp_path, unused_tcp_port))
    alice = Client(server.endpoint)
    try:
        await alice.sign_in("alice@example.com", "Alice")
        sockets = [await alice.connect(), await alice.connect()]
        async with await psycopg.AsyncConnection.connect(restored, autocommit=True) as db:
            new = [f"new {n}" for n in range(20)]
            for text in [*new, "last"]:
                await db.execute(
                    "INSERT INTO messages (user_id, content) VALUES (%s, %s)", [user_id, text]
                )
            # Each new message exactly once, in order, and not one old event in between.
            for socket in sockets:
                assert await contents(socket, len(new) + 1) == [*new, "last"]

            # Cursors of this cluster resume; those of the old one are refused.
            await sockets[0].close()
            resumed = await alice.connect(after=sockets[0].cursor)
            await db.execute(
                "INSERT INTO messages (user_id, content) VALUES (%s, 'resumed')", [user_id]
            )
            assert await contents(resumed, 1) == ["resumed"]
            assert await contents(sockets[1], 1) == ["resumed"]
        # Refused for where it comes from, not only while this counter is behind it.
        behind = Cursor.decode(old_cursor).next.xmax - await xmax(restored)
        if behind > 0:
            await burn_transaction_ids(restored, behind + 10)
        assert await refused_cursor(alice, old_cursor) == "cursor is from another database"
        result = await asyncio.to_thread(
            run_cli, "tail", "--after", old_cursor, env=cli_env(restored, tmp_path)
        )
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            "pgcast: --after: cursor is from another database"
        ]
        # Whoever runs it is told what happened to the log.
        assert "another PostgreSQL cluster" in caplog.text
    finally:
        await alice.close()
        await server.runner.cleanup()


async def instance_id(conn: psycopg.AsyncConnection[Any]) -> str:
    cursor = await conn.execute("SELECT instance_id::text FROM pgcast_instance")
    row = await cursor.fetchone()
    assert row is not None
    return str(row[0])


async def insert_future_event(conn: psycopg.AsyncConnection[Any], user_id: int) -> None:
    await conn.execute(
        "INSERT INTO broadcasts (tx, channel, event, data) "
        "SELECT (pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 1000000)::text::xid8, "
        "'messages', 'new-message', jsonb_build_object('message', jsonb_build_object("
        "'id', 1, 'user_id', %s::bigint, 'content', 'by hand'))",
        [user_id],
    )


async def test_migrate_moves_events_written_with_a_future_transaction_id_into_history(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
        user_id = await create_user(db)
        await insert_future_event(db, user_id)
        before = await instance_id(db)

        with caplog.at_level(logging.WARNING, logger="server.migrate"):
            await asyncio.to_thread(migrate, database_url)

        assert "1 event(s) had a transaction id this cluster has not issued yet" in caplog.text
        cursor = await db.execute("SELECT tx::text FROM broadcasts")
        assert await cursor.fetchall() == [("2",)]
        # Same cluster: no cursor was ever sent that event, so cursors stay good.
        assert await instance_id(db) == before


async def test_without_the_system_identifier_the_counter_still_tells_another_cluster(
    second_cluster: str,
) -> None:
    # Some administrators revoke pg_control_system() from PUBLIC; pgcast's role may then not
    # call it. (On PostgreSQL 15 and 18 every role may by default.)
    await asyncio.to_thread(migrate, second_cluster)
    async with await psycopg.AsyncConnection.connect(second_cluster, autocommit=True) as db:
        await db.execute("CREATE ROLE pgcast_app")
        await db.execute(
            "GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO pgcast_app"
        )
        await db.execute("REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
        await db.execute("SET ROLE pgcast_app")
        cursor = await db.execute("SELECT has_function_privilege('pg_control_system()', 'execute')")
        assert await cursor.fetchone() == (False,)
        user_id = await create_user(db)
        original = await instance_id(db)

        # The identifier was recorded when it could be read: an event from the future is
        # one written by hand, moved aside, and cursors stay.
        await insert_future_event(db, user_id)
        cursor = await db.execute("SELECT pgcast_adopt_event_log()")
        assert "moved into history" in str(await cursor.fetchone())
        assert await instance_id(db) == original

        # Never recorded, and not readable: events ahead of the counter mean another cluster.
        await db.execute("RESET ROLE")
        await db.execute("UPDATE pgcast_instance SET system_identifier = NULL")
        await db.execute("SET ROLE pgcast_app")
        await insert_future_event(db, user_id)
        cursor = await db.execute("SELECT pgcast_adopt_event_log()")
        assert "another PostgreSQL cluster" in str(await cursor.fetchone())
        assert await instance_id(db) != original

        # A counter lower than the one last recorded means another cluster too.
        renewed = await instance_id(db)
        await db.execute("RESET ROLE")
        await db.execute(
            "UPDATE pgcast_instance SET checked_xmax = "
            "(pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 1000)::text::xid8"
        )
        await db.execute("SET ROLE pgcast_app")
        cursor = await db.execute("SELECT pgcast_adopt_event_log()")
        assert "another PostgreSQL cluster" in str(await cursor.fetchone())
        assert await instance_id(db) != renewed
        cursor = await db.execute("SELECT system_identifier FROM pgcast_instance")
        assert await cursor.fetchone() == (None,)
