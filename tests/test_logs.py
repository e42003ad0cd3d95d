"""Log records: one line each, as text or JSON, at the level the operator chose."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.config import ConfigError
from server.logs import configure_logging, log_settings
from tests.test_cli import PGCAST, cli_env
from tests.test_serve import read_lines_until, wait_until_ready


def emit(env: dict[str, str], build: Any) -> str:
    """Configure logging from `env` onto a buffer, log with `build(logger)`, return the text."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(log_settings(env), stream=stream)
        build(logging.getLogger("pgcast.test"))
    finally:
        root.handlers[:], root.level = saved
    return stream.getvalue()


def failing(logger: logging.Logger) -> None:
    logger.warning("first line\nsecond line\r\x1b[31mred\u2028after")
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logger.exception("it failed")


def test_text_records_stay_on_one_line_with_newlines_escaped() -> None:
    lines = emit({}, failing).splitlines()
    assert len(lines) == 2, lines
    assert lines[0].endswith(
        "WARNING pgcast.test: first line\\nsecond line\\r\\x1b[31mred\\u2028after"
    )
    assert "ERROR pgcast.test: it failed\\nTraceback (most recent call last):\\n" in lines[1]
    assert lines[1].endswith("ValueError: bad\\nvalue")


def test_json_records_are_one_object_per_line() -> None:
    lines = emit({"PGCAST_LOG_FORMAT": "json"}, failing).splitlines()
    assert len(lines) == 2, lines
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "WARNING"
    assert first["logger"] == "pgcast.test"
    assert first["message"] == "first line\nsecond line\r\x1b[31mred\u2028after"
    assert first["time"].endswith("Z")
    assert second["message"] == "it failed"
    assert second["exception"].startswith("Traceback (most recent call last):\n")
    assert second["exception"].endswith("ValueError: bad\nvalue")


def test_json_records_carry_extra_fields() -> None:
    text = emit(
        {"PGCAST_LOG_FORMAT": "JSON"},
        lambda logger: logger.info("hello %s", "there", extra={"sign_in": "WorkOS"}),
    )
    record = json.loads(text)
    assert record["message"] == "hello there"
    assert record["sign_in"] == "WorkOS"


def test_log_level_filters_records() -> None:
    def both(logger: logging.Logger) -> None:
        logger.info("an info line")
        logger.warning("a warning line")

    assert "an info line" in emit({}, both)
    quiet = emit({"PGCAST_LOG_LEVEL": "warning"}, both)
    assert "an info line" not in quiet
    assert "a warning line" in quiet
    assert "an info line" in emit({"PGCAST_LOG_LEVEL": "DEBUG"}, both)


@pytest.mark.parametrize(
    ("name", "value"), [("PGCAST_LOG_LEVEL", "loud"), ("PGCAST_LOG_FORMAT", "xml")]
)
def test_bad_log_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}={value!r} must be one of "):
        log_settings({name: value})


async def serve_and_collect(env: dict[str, str], url: str, path: str) -> list[str]:
    """Start `pgcast serve`, request `path`, stop it, return every stderr line."""
    process = await asyncio.create_subprocess_exec(
        *PGCAST, "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    seen: list[str] = []
    try:
        if env.get("PGCAST_LOG_LEVEL", "info") == "info":
            await read_lines_until(process, "pgcast serving", seen)
        await wait_until_ready(url)
        async with aiohttp.ClientSession() as http, http.get(url + path) as response:
            assert response.status == 404
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.stderr is not None
        rest = await asyncio.wait_for(process.stderr.read(), 30)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    return seen + rest.decode().splitlines(keepends=True)


async def test_serve_logs_one_json_object_per_line_with_how_users_sign_in(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}"
    env = cli_env(
        database_url, tmp_path, PGCAST_PORT=str(unused_tcp_port), PGCAST_LOG_FORMAT="json"
    )
    lines = await serve_and_collect(env, url, "/no%0Asuch%0Dpage")
    records = [json.loads(line) for line in lines]
    serving = next(r for r in records if r["message"].startswith("pgcast serving"))
    assert serving["level"] == "INFO"
    assert serving["sign_in"] == "dev login"
    assert "sign-in: dev login" in serving["message"]
    access = [r for r in records if r["logger"] == "aiohttp.access" and "/no" in r["message"]]
    assert len(access) == 1
    assert "/no\nsuch\rpage" in access[0]["message"]
    assert records[-1]["message"] == "pgcast stopped"


@pytest.mark.parametrize(("setting", "loop"), [(None, "uvloop"), ("asyncio", "asyncio")])
async def test_serve_runs_on_uvloop_unless_told_otherwise_and_says_which(
    database_url: str, tmp_path: Path, unused_tcp_port: int, setting: str | None, loop: str
) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}"
    extra = {} if setting is None else {"PGCAST_EVENT_LOOP": setting}
    env = cli_env(
        database_url,
        tmp_path,
        PGCAST_PORT=str(unused_tcp_port),
        PGCAST_LOG_FORMAT="json",
        **extra,
    )
    records = [json.loads(line) for line in await serve_and_collect(env, url, "/nothing")]
    serving = next(r for r in records if r["message"].startswith("pgcast serving"))
    assert serving["event_loop"] == loop


async def test_serve_logs_one_text_line_per_record(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}"
    env = cli_env(database_url, tmp_path, PGCAST_PORT=str(unused_tcp_port))
    lines = await serve_and_collect(env, url, "/no%0A2026-01-01 00:00:00,000 ERROR forged")
    record_start = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")
    assert all(record_start.match(line) for line in lines), lines
    assert not any(line.startswith("2026-01-01 00:00:00,000 ERROR forged") for line in lines)
    assert any("/no\\n2026-01-01 00:00:00,000 ERROR forged" in line for line in lines)


async def test_serve_without_a_sign_in_method_warns(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}"
    env = cli_env(
        database_url,
        tmp_path,
        PGCAST_PORT=str(unused_tcp_port),
        PGCAST_LOG_FORMAT="json",
        PGCAST_DEV_LOGIN="0",
    )
    records = [json.loads(line) for line in await serve_and_collect(env, url, "/nothing")]
    serving = next(r for r in records if r["message"].startswith("pgcast serving"))
    assert serving["level"] == "WARNING"
    assert serving["sign_in"] == "none"
    assert "nobody can sign in" in serving["message"]


async def test_serve_names_workos_as_the_sign_in(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}"
    env = cli_env(
        database_url,
        tmp_path,
        PGCAST_PORT=str(unused_tcp_port),
        PGCAST_LOG_FORMAT="json",
        PGCAST_LOG_LEVEL="warning",
        WORKOS_API_KEY="sk_test_not_used",
        WORKOS_CLIENT_ID="client_not_used",
    )
    records = [json.loads(line) for line in await serve_and_collect(env, url, "/nothing")]
    # At WARNING, the start-up line and the access log are not shown.
    assert [r for r in records if r["level"] == "INFO"] == []
    env["PGCAST_LOG_LEVEL"] = "info"
    records = [json.loads(line) for line in await serve_and_collect(env, url, "/nothing")]
    serving = next(r for r in records if r["message"].startswith("pgcast serving"))
    assert serving["sign_in"] == "WorkOS"
