"""`make run`'s path: `pgcast serve` with no DATABASE_URL starts the embedded PostgreSQL,
serves, broadcasts a row inserted with `pgcast psql`, stops cleanly and keeps its data."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
from pathlib import Path

import aiohttp
import psycopg

from tests.conftest import Client, Endpoint
from tests.test_cli import PGCAST, cli_env, run_cli

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
    # That line comes once the socket listens: requests may follow at once.
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


async def read_lines_until(
    process: asyncio.subprocess.Process, marker: str, seen: list[str], timeout: float = 30
) -> str:
    """Read stderr lines into `seen` until one contains `marker`; return that line."""
    assert process.stderr is not None
    async with asyncio.timeout(timeout):
        while True:
            line = (await process.stderr.readline()).decode()
            assert line, f"stderr ended before {marker!r}:\n" + "".join(seen[-20:])
            seen.append(line)
            if marker in line:
                return line


def test_port_in_use_exits_1_with_one_line(database_url: str, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        for extra in ((), ("--workers", "2")):
            result = run_cli(
                "serve", *extra, env=cli_env(database_url, tmp_path, PGCAST_PORT=str(port))
            )
            assert result.returncode == 1, result.stderr
            assert result.stderr.strip().splitlines() == [
                f"pgcast: cannot listen on 127.0.0.1:{port}: address already in use"
                " (choose another with --port or PGCAST_PORT)"
            ]


async def test_port_zero_serves_on_the_port_it_names(database_url: str, tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        *PGCAST,
        "serve",
        env=cli_env(database_url, tmp_path, PGCAST_PORT="0"),
        stderr=asyncio.subprocess.PIPE,
    )
    seen: list[str] = []
    try:
        line = await read_lines_until(process, "pgcast serving", seen)
        match = re.search(r"pgcast serving (http://127\.0\.0\.1:(\d+))", line)
        assert match is not None, line
        url, port = match.group(1), int(match.group(2))
        assert port != 0
        # Bound before that line: the first request needs no retry.
        async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as response:
            assert response.status == 200
        await wait_until_ready(url)
        alice = Client(Endpoint(url))
        try:
            await alice.sign_in("alice@example.com", "Alice")
        finally:
            await alice.close()
    finally:
        assert await stop_serving(process) == 0


async def test_sigterm_logs_shutting_down_then_stopped(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    env = cli_env(database_url, tmp_path, PGCAST_PORT=str(unused_tcp_port))
    process = await start_serving(env)
    process.send_signal(signal.SIGTERM)
    assert process.stderr is not None
    rest = (await asyncio.wait_for(process.stderr.read(), 30)).decode()
    assert await asyncio.wait_for(process.wait(), 30) == 0
    messages = [line.split(": ", 1)[-1] for line in rest.splitlines()]
    assert "pgcast shutting down" in messages
    assert messages[-1] == "pgcast stopped"
    assert "Traceback" not in rest


async def test_second_signal_during_shutdown_stops_at_once(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    for second in (signal.SIGTERM, signal.SIGINT):
        env = cli_env(database_url, tmp_path, PGCAST_PORT=str(unused_tcp_port))
        url = f"http://127.0.0.1:{unused_tcp_port}"
        process = await start_serving(env)
        seen: list[str] = []
        await wait_until_ready(url)
        # A request whose body never finishes keeps shutdown waiting for in-flight requests.
        reader, writer = await asyncio.open_connection("127.0.0.1", unused_tcp_port)
        writer.write(
            b"POST /auth/dev-login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Origin: {url}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 1000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        await writer.drain()
        continued = await asyncio.wait_for(reader.readline(), 10)
        assert continued.startswith(b"HTTP/1.1 100"), continued
        writer.write(b'{"email": ')
        await writer.drain()
        try:
            process.send_signal(signal.SIGTERM)
            await read_lines_until(process, "pgcast shutting down", seen)
            assert process.returncode is None
            process.send_signal(second)
            assert process.stderr is not None
            rest = (await asyncio.wait_for(process.stderr.read(), 5)).decode()
            code = await asyncio.wait_for(process.wait(), 5)
        finally:
            writer.close()
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert code == 1, rest
        assert "Traceback" not in rest, rest
        assert f"{second.name} during shutdown: stopping at once" in rest, rest
