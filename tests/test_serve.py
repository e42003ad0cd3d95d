"""`make run`'s path: `pgcast serve` with no DATABASE_URL starts the embedded PostgreSQL,
serves, broadcasts a row inserted with `pgcast psql`, stops cleanly and keeps its data."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp

from tests.conftest import Client, Endpoint
from tests.test_cli import PGCAST, cli_env

STARTUP_TIMEOUT = 60.0


async def start_serving(env: dict[str, str]) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        *PGCAST, "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    async with asyncio.timeout(STARTUP_TIMEOUT):
        while True:
            line = (await process.stderr.readline()).decode()
            assert line, "pgcast serve exited before serving"
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
