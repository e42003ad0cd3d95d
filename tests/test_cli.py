"""The `pgcast` command: what scripts and operators rely on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import create_user

ROOT = Path(__file__).resolve().parent.parent
# The console script `pip install` made, as users run it.
PGCAST = [str(Path(sys.executable).with_name("pgcast"))]


def cli_env(database_url: str | None, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGCAST_", "WORKOS_"))}
    env.pop("DATABASE_URL", None)
    # The console script imports `server` from this checkout, whichever one it was installed from.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    env["PGCAST_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PGCAST, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_send_to_unknown_user_exits_1_with_one_line(database_url: str, tmp_path: Path) -> None:
    result = run_cli(
        "send", "hello", "--as", "nobody@example.com", env=cli_env(database_url, tmp_path)
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "pgcast: no user with e-mail nobody@example.com; they must sign in once first"
    ]


def test_send_with_empty_text_exits_1(database_url: str, tmp_path: Path) -> None:
    result = run_cli("send", "  ", "--as", "a@example.com", env=cli_env(database_url, tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip() == "pgcast: The message is empty."


def test_bad_usage_exits_2(database_url: str, tmp_path: Path) -> None:
    assert run_cli("send", "hi", env=cli_env(database_url, tmp_path)).returncode == 2
    assert run_cli("frobnicate", env=cli_env(database_url, tmp_path)).returncode == 2
    assert run_cli("serve", "--workers", "0", env=cli_env(database_url, tmp_path)).returncode == 2


def test_bad_setting_exits_1_with_one_line(database_url: str, tmp_path: Path) -> None:
    env = cli_env(database_url, tmp_path, PGCAST_EVENT_RETENTION="forever")
    result = run_cli("migrate", env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "pgcast: PGCAST_EVENT_RETENTION='forever' is not a duration like 30m, 12h or 7d"
    )


def test_bad_batch_window_exits_1_with_one_line(database_url: str, tmp_path: Path) -> None:
    result = run_cli("migrate", env=cli_env(database_url, tmp_path, PGCAST_BATCH_WINDOW_MS="2000"))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "pgcast: PGCAST_BATCH_WINDOW_MS=2000 is out of range (0 to 1000)"
    )


def test_unknown_event_loop_exits_1_with_one_line(database_url: str, tmp_path: Path) -> None:
    result = run_cli("serve", env=cli_env(database_url, tmp_path, PGCAST_EVENT_LOOP="trio"))
    assert result.returncode == 1
    assert result.stderr.strip() == "pgcast: PGCAST_EVENT_LOOP must be uvloop or asyncio"


def test_dev_login_on_public_host_refuses_to_start(database_url: str, tmp_path: Path) -> None:
    env = cli_env(database_url, tmp_path, PGCAST_DEV_LOGIN="1", PGCAST_HOST="0.0.0.0")
    result = run_cli("serve", env=env)
    assert result.returncode == 1
    assert "not a loopback address" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_database_exits_1(tmp_path: Path) -> None:
    env = cli_env("postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=2", tmp_path)
    result = run_cli("migrate", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("pgcast: cannot reach the database:")
    assert len(result.stderr.strip().splitlines()) == 1


async def test_send_inserts_a_message_that_is_broadcast(
    client_factory: Any, db: psycopg.AsyncConnection[Any], database_url: str, tmp_path: Path
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    socket = await alice.connect()
    process = await asyncio.create_subprocess_exec(
        *PGCAST,
        "send",
        "deploy finished",
        "--as",
        "ALICE@example.com",
        env=cli_env(database_url, tmp_path),
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await process.communicate()
    assert process.returncode == 0
    printed = json.loads(stdout)
    frame = await socket.next_frame()
    assert frame["data"]["message"] == printed
    cursor = await db.execute("SELECT application_name, via_api FROM message_audit")
    assert await cursor.fetchall() == [("pgcast-cli", False)]


async def test_tail_prints_every_broadcast_and_resumes_after_a_cursor(
    db: psycopg.AsyncConnection[Any], database_url: str, tmp_path: Path
) -> None:
    user_id = await create_user(db)
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'before')", [user_id])

    async def tail(*extra: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *PGCAST,
            "tail",
            *extra,
            env=cli_env(database_url, tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def next_line(process: asyncio.subprocess.Process) -> dict[str, Any]:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        result: dict[str, Any] = json.loads(line)
        return result

    async def wait_for_listener() -> None:
        # tail is ready once its LISTEN connection shows up in pg_stat_activity.
        async with asyncio.timeout(20):
            while True:
                cursor = await db.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = 'pgcast-listener' AND datname = current_database()"
                )
                row = await cursor.fetchone()
                if row and row[0]:
                    return
                await asyncio.sleep(0.05)

    first = await tail()
    try:
        await wait_for_listener()
        await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'one')", [user_id])
        await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'two')", [user_id])
        one, two = await next_line(first), await next_line(first)
        assert [one["data"]["message"]["content"], two["data"]["message"]["content"]] == [
            "one",
            "two",
        ]
    finally:
        first.terminate()
        await first.wait()

    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'three')", [user_id])
    resumed = await tail("--after", one["cursor"])
    try:
        contents = [(await next_line(resumed))["data"]["message"]["content"] for _ in range(2)]
        assert contents == ["two", "three"]
    finally:
        resumed.terminate()
        await resumed.wait()


async def test_tail_into_a_reader_that_stops_ends_quietly(
    db: psycopg.AsyncConnection[Any], database_url: str, tmp_path: Path
) -> None:
    """`pgcast tail | head -1`: once the reader is gone, tail stops, with no traceback."""
    user_id = await create_user(db)
    read_end, write_end = os.pipe()
    process = await asyncio.create_subprocess_exec(
        *PGCAST,
        "tail",
        env=cli_env(database_url, tmp_path),
        stdout=write_end,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as reader:
            first_line = asyncio.create_task(asyncio.to_thread(reader.readline))
            # Until tail listens, what is written is not its to print: write until a line comes.
            async with asyncio.timeout(20):
                while not first_line.done():
                    await db.execute(
                        "INSERT INTO messages (user_id, content) VALUES (%s, 'x')", [user_id]
                    )
                    await asyncio.wait({first_line}, timeout=0.1)
            assert json.loads(await first_line)["event"] == "new-message"
        async with asyncio.timeout(20):
            while process.returncode is None:
                await db.execute(
                    "INSERT INTO messages (user_id, content) VALUES (%s, 'y')", [user_id]
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(process.wait()), 0.1)
        assert process.stderr is not None
        stderr = (await process.stderr.read()).decode()
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_tail_with_a_bad_cursor_exits_1(database_url: str, tmp_path: Path) -> None:
    result = run_cli("tail", "--after", "nonsense", env=cli_env(database_url, tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("pgcast: --after:")


def test_migrate_is_idempotent_and_safe_in_parallel(postgres_conninfo: str, tmp_path: Path) -> None:
    from tests.conftest import drop_database

    name = "pgcast_migrate_race"
    with psycopg.connect(postgres_conninfo, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        url = psycopg.conninfo.make_conninfo(postgres_conninfo, dbname=name)
        env = cli_env(url, tmp_path)
        racers = [
            subprocess.Popen([*PGCAST, "migrate"], env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        outputs = [racer.communicate(timeout=120)[0] for racer in racers]
        assert [racer.returncode for racer in racers] == [0, 0, 0, 0]
        migrations = len(list((ROOT / "db" / "migrations").glob("*.sql")))
        assert sorted(o.split()[1] for o in outputs) == ["0", "0", "0", str(migrations)]
        again = run_cli("migrate", env=env)
        assert again.returncode == 0
        assert again.stdout.startswith("applied 0 migration(s)")
    finally:
        drop_database(postgres_conninfo, name)


def test_psql_runs_sql_against_the_configured_database(database_url: str, tmp_path: Path) -> None:
    result = run_cli(
        "psql",
        "-X",
        "-A",
        "-t",
        "-c",
        "SELECT count(*) FROM message_audit",
        env=cli_env(database_url, tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_every_table_and_column_has_a_comment(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        missing = conn.execute(
            """
            SELECT c.relname || coalesce('.' || a.attname, '')
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
            LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE c.relkind IN ('r', 'v') AND c.relname NOT LIKE '\\_yoyo%%'
              AND c.relname NOT LIKE 'yoyo%%'
              AND (a.attname IS NULL AND obj_description(c.oid, 'pg_class') IS NULL
                   OR a.attname IS NOT NULL AND col_description(c.oid, a.attnum) IS NULL)
            """
        ).fetchall()
    assert missing == []


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    result = run_cli("--version", env=cli_env(None, tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"pgcast {version('pgcast')}"


def test_help_names_every_environment_variable_and_the_readme(tmp_path: Path) -> None:
    import re

    read = set()
    for module in ("config.py", "cli.py", "logs.py"):
        source = (ROOT / "server" / module).read_text()
        read |= set(re.findall(r'"((?:PGCAST|WORKOS)_[A-Z_]+|DATABASE_URL)"', source))
    assert "PGCAST_LOG_LEVEL" in read
    result = run_cli("--help", env=cli_env(None, tmp_path))
    assert result.returncode == 0, result.stderr
    missing = sorted(name for name in read if name not in result.stdout)
    assert missing == []
    assert "README.md" in result.stdout


def test_psql_passes_its_own_options_through_even_h(database_url: str, tmp_path: Path) -> None:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(database_url)
    host = str(params.get("host", "127.0.0.1"))
    result = run_cli(
        "psql",
        "-h",
        host,
        "-X",
        "-A",
        "-t",
        "-c",
        "SELECT 'reached ' || current_database()",
        env=cli_env(database_url, tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"reached {params['dbname']}"
    help_text = run_cli("psql", "--help", env=cli_env(database_url, tmp_path))
    assert "psql is the PostgreSQL interactive terminal" in help_text.stdout


def test_malformed_database_url_exits_1_with_one_line_and_no_password(tmp_path: Path) -> None:
    for url in (
        "not a url",
        "postgres://app:s3cret-pw@[::1/pgcast",
        "postgresql://app:s3cret-pw@db/pgcast?bogus=1",
        "postgresql://app:s3cret%zz@db/pgcast",
    ):
        for command in ("migrate", "serve"):
            result = run_cli(command, env=cli_env(url, tmp_path))
            assert result.returncode == 1, (url, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, (url, result.stderr)
            assert lines[0].startswith("pgcast: DATABASE_URL is not a valid"), lines
            assert "s3cret" not in result.stderr


def test_bad_log_settings_exit_1_with_one_line(tmp_path: Path) -> None:
    for name, value in (("PGCAST_LOG_LEVEL", "loud"), ("PGCAST_LOG_FORMAT", "xml")):
        result = run_cli("migrate", env=cli_env(None, tmp_path, **{name: value}))
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"pgcast: {name}={value!r} must be one of"), lines
