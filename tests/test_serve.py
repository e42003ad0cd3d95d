"""`make run`'s path: `pgcast serve` with no DATABASE_URL starts the embedded PostgreSQL,
serves, broadcasts a row inserted with `pgcast psql`, stops cleanly and keeps its data."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import psycopg

from tests.conftest import Client, Endpoint
from tests.test_cli import PGCAST, cli_env

STARTUP_TIMEOUT = 60.0


async def start_serving(env: dict[str, str]) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        *PGCAST, "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    seen: list[str] = []
    async with asyncio.timeout(STARTUP_TIMEOUT):
        while True:
            line = (await process.stderr.readline()).decode()
            assert line, "pgcast serve exited before serving:\n" + "".join(seen[-20:])
            seen.append(line)
            if "pgcast serving" in line:
                break
    # The listening socket is bound right after that line; the first request may race it.
    return process


async def stop_serving(process: asyncio.subprocess.Process) -> int:
    process.send_signal(signal.SIGTERM)
    assert process.stderr is not None
    await asyncio.wait_for(process.stderr.read(), 30)
    return await asyncio.wait_for(process.wait(), 30)


async def wait_until_ready(url: str) -> None:
    async with aiohttp.ClientSession() as http, asyncio.timeout(STARTUP_TIMEOUT):
        while True:
            try:
                async with http.get(url + "/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)


async def test_serve_on_embedded_postgres_broadcasts_psql_inserts_and_keeps_data(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    env = cli_env(None, tmp_path / "data", PGCAST_PORT=str(unused_tcp_port))
    url = f"http://127.0.0.1:{unused_tcp_port}"
    process = await start_serving(env)
    try:
        await wait_until_ready(url)
        async with aiohttp.ClientSession() as probe, probe.get(url + "/api/config") as response:
            assert (await response.json())["auth"] == {"workos": False, "dev_login": True}
        alice = Client(Endpoint(url))
        try:
            me = await alice.sign_in("alice@example.com", "Alice")
            socket = await alice.connect()
            insert = await asyncio.create_subprocess_exec(
                *PGCAST,
                "psql",
                "-c",
                f"INSERT INTO messages (user_id, content) VALUES ({me['user']['id']}, "
                "'Maintenance at 22:00');",
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
            )
            assert await insert.wait() == 0
            frame = await socket.next_frame()
            assert frame["data"]["message"]["content"] == "Maintenance at 22:00"
            await socket.close()
        finally:
            await alice.close()
    finally:
        exit_code = await stop_serving(process)
    assert exit_code == 0
    assert not (tmp_path / "data" / "pgdata" / "postmaster.pid").exists()

    process = await start_serving(env)
    try:
        await wait_until_ready(url)
        alice = Client(Endpoint(url))
        try:
            await alice.sign_in("alice@example.com", "Alice")
            async with alice.http.get(url + "/api/messages") as response:
                contents = [m["content"] for m in (await response.json())["messages"]]
            assert contents == ["Maintenance at 22:00"]
        finally:
            await alice.close()
    finally:
        assert await stop_serving(process) == 0


async def test_two_workers_share_one_port_and_each_listens(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    env = cli_env(database_url, tmp_path, PGCAST_PORT=str(unused_tcp_port))
    url = f"http://127.0.0.1:{unused_tcp_port}"
    process = await asyncio.create_subprocess_exec(
        *PGCAST, "serve", "--workers", "2", env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            served = 0
            while served < 2:
                line = (await process.stderr.readline()).decode()
                assert line, "a worker exited before serving"
                served += "pgcast serving" in line
        await wait_until_ready(url)
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
            async with asyncio.timeout(STARTUP_TIMEOUT):
                while True:
                    cursor = await db.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND application_name = 'pgcast-listener'"
                    )
                    row = await cursor.fetchone()
                    if row is not None and row[0] == 2:
                        break
                    await asyncio.sleep(0.05)
            alice = Client(Endpoint(url))
            try:
                me = await alice.sign_in("alice@example.com", "Alice")
                sockets = [await alice.connect() for _ in range(6)]
                await db.execute(
                    "INSERT INTO messages (user_id, content) VALUES (%s, 'to every worker')",
                    [me["user"]["id"]],
                )
                for socket in sockets:
                    frame = await socket.next_frame()
                    assert frame["data"]["message"]["content"] == "to every worker"
            finally:
                await alice.close()
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.stderr.read(), 30)
        assert await asyncio.wait_for(process.wait(), 30) == 0
