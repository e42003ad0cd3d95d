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

from server.db import with_database
from server.embedded import bundled_psql, embedded_database
from server.eventlog import current_position, database_identity
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
