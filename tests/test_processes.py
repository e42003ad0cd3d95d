"""The process registry (pgcast_processes): a row per running process, its listener backend
recorded, dead processes swept by the live ones, a swept live process registered again."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from server.keys import PROCESS
from tests.conftest import RunningServer, server_config, start_server
from tests.test_cli import cli_env, run_cli

# heartbeat (3 - 0.6) / 6 = 0.4 s, stale threshold 1.2 s.
FAST = {"PGCAST_PRESENCE_TIMEOUT": "3", "PGCAST_PRESENCE_GRACE": "0.6"}


@pytest.fixture
async def fast_server(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> AsyncIterator[RunningServer]:
    running = await start_server(server_config(database_url, tmp_path, unused_tcp_port, **FAST))
    yield running
    await running.runner.cleanup()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> float:
    """Poll `check` until true (there is no event for a row changing); the seconds it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def process_row(db: psycopg.AsyncConnection[Any], process_id: str) -> tuple[Any, ...] | None:
    cursor = await db.execute(
        "SELECT host, pid, port, listener_pid, listener_started_at, seen_at"
        " FROM pgcast_processes WHERE id = %s",
        [process_id],
    )
    return await cursor.fetchone()


async def test_a_server_registers_with_its_listener_backend_and_deregisters_on_shutdown(
    database_url: str, tmp_path: Path, unused_tcp_port: int, db: psycopg.AsyncConnection[Any]
) -> None:
    running = await start_server(server_config(database_url, tmp_path, unused_tcp_port, **FAST))
    process_id = running.app[PROCESS].id
    try:
        row = await process_row(db, process_id)
        assert row is not None
        host, pid, port, listener_pid, listener_started_at, seen_at = row
        assert (host, pid, port) == (socket.gethostname(), os.getpid(), unused_tcp_port)
        cursor = await db.execute(
            "SELECT application_name, backend_start FROM pg_stat_activity WHERE pid = %s",
            [listener_pid],
        )
        assert await cursor.fetchone() == ("pgcast-listener", listener_started_at)

        async def beaten() -> bool:
            again = await process_row(db, process_id)
            return again is not None and again[5] > seen_at

        await eventually(beaten)
    finally:
        await running.runner.cleanup()
    assert await process_row(db, process_id) is None


async def test_a_reconnected_listener_is_recorded_again(
    fast_server: RunningServer, db: psycopg.AsyncConnection[Any]
) -> None:
    process_id = fast_server.app[PROCESS].id
    row = await process_row(db, process_id)
    assert row is not None
    await db.execute("SELECT pg_terminate_backend(%s)", [row[3]])

    async def recorded_anew() -> bool:
        again = await process_row(db, process_id)
        return again is not None and again[3] != row[3]

    await eventually(recorded_anew)


async def test_a_process_whose_listener_backend_is_gone_is_swept(
    fast_server: RunningServer, database_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    # A stand-in for a killed process: its "listener" connection closes, nothing else.
    conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    cursor = await conn.execute(
        "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    )
    backend = await cursor.fetchone()
    assert backend is not None
    # Its heartbeat is never stale: only the listener can tell it is gone.
    cursor = await db.execute(
        "INSERT INTO pgcast_processes"
        " (host, pid, port, listener_pid, listener_started_at, seen_at)"
        " VALUES ('elsewhere', 1, 1, %s, %s, now() + interval '1 hour') RETURNING id::text",
        backend,
    )
    inserted = await cursor.fetchone()
    assert inserted is not None
    # Alive while its listener is: after two more heartbeats (each followed by a sweep) of
    # the server, it is still there.
    for _ in range(2):
        before = await process_row(db, fast_server.app[PROCESS].id)
        assert before is not None

        async def beaten(seen_at: Any = before[5]) -> bool:
            row = await process_row(db, fast_server.app[PROCESS].id)
            return row is not None and row[5] > seen_at

        await eventually(beaten)
    assert await process_row(db, inserted[0]) is not None
    await conn.close()

    async def gone() -> bool:
        return await process_row(db, inserted[0]) is None

    print(f"swept {await eventually(gone):.2f} s after its listener closed")
    assert await process_row(db, fast_server.app[PROCESS].id) is not None


async def test_a_process_whose_heartbeat_stopped_is_swept(
    fast_server: RunningServer, db: psycopg.AsyncConnection[Any]
) -> None:
    # A lost machine: its listener backend may linger for a long time; its heartbeat stops.
    cursor = await db.execute(
        "INSERT INTO pgcast_processes (host, pid, listener_pid, listener_started_at)"
        " SELECT 'lost', 1, pid, backend_start FROM pg_stat_activity"
        " WHERE pid = pg_backend_pid() RETURNING id::text"
    )
    inserted = await cursor.fetchone()
    assert inserted is not None

    async def gone() -> bool:
        return await process_row(db, inserted[0]) is None

    print(f"swept {await eventually(gone):.2f} s after its last heartbeat")


async def test_a_live_process_whose_row_was_removed_registers_again_under_its_id(
    fast_server: RunningServer, db: psycopg.AsyncConnection[Any]
) -> None:
    process_id = fast_server.app[PROCESS].id
    await db.execute("DELETE FROM pgcast_processes WHERE id = %s", [process_id])

    async def back() -> bool:
        return await process_row(db, process_id) is not None

    await eventually(back)
    assert fast_server.app[PROCESS].id == process_id


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"PGCAST_PRESENCE_TIMEOUT": "soon"},
            "PGCAST_PRESENCE_TIMEOUT='soon' is not a number of seconds",
        ),
        (
            {"PGCAST_PRESENCE_TIMEOUT": "0"},
            "PGCAST_PRESENCE_TIMEOUT='0' must be more than zero seconds",
        ),
        (
            {"PGCAST_PRESENCE_TIMEOUT": "nan"},
            "PGCAST_PRESENCE_TIMEOUT='nan' must be more than zero seconds",
        ),
        (
            {"PGCAST_PRESENCE_GRACE": "-1"},
            "PGCAST_PRESENCE_GRACE='-1' must be zero or more seconds",
        ),
        (
            {"PGCAST_PRESENCE_TIMEOUT": "7200"},
            "PGCAST_PRESENCE_TIMEOUT='7200' is more than 3600 seconds",
        ),
        (
            {"PGCAST_PRESENCE_GRACE": "10"},
            "PGCAST_PRESENCE_GRACE=10 must be at least 0.6 s shorter than"
            " PGCAST_PRESENCE_TIMEOUT=10",
        ),
        (
            {"PGCAST_PRESENCE_TIMEOUT": "2", "PGCAST_PRESENCE_GRACE": "1.5"},
            "PGCAST_PRESENCE_GRACE=1.5 must be at least 0.6 s shorter than"
            " PGCAST_PRESENCE_TIMEOUT=2",
        ),
    ],
)
def test_bad_presence_settings_exit_1_with_one_line(
    database_url: str, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = run_cli("migrate", env=cli_env(database_url, tmp_path, **env))
    assert result.returncode == 1
    assert result.stderr.strip() == f"pgcast: {message}"


def test_presence_settings_give_heartbeats_that_keep_the_timeout(tmp_path: Path) -> None:
    config = server_config("postgresql:///unused", tmp_path, 0)
    assert (config.presence_timeout, config.presence_grace) == (10.0, 3.0)
    worst = config.stale_seconds + 2 * config.heartbeat_seconds + config.presence_grace
    assert worst < config.presence_timeout


async def test_what_fails_to_be_written_back_after_registering_again_is_tried_again(
    fast_server: RunningServer, db: psycopg.AsyncConnection[Any]
) -> None:
    calls: list[float] = []
    done = asyncio.Event()

    async def write_back() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            # As the database going away mid-write would.
            raise psycopg.OperationalError("connection lost")
        done.set()

    fast_server.app[PROCESS].when_registered_again(write_back)
    await db.execute("DELETE FROM pgcast_processes WHERE id = %s", [fast_server.app[PROCESS].id])
    await asyncio.wait_for(done.wait(), 10)
    assert len(calls) == 2
