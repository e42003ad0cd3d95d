"""`pgcast send --to` and `pgcast notify`: rows like any other, from the command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import count_rows, create_user
from tests.test_cli import cli_env, run_cli


async def cli(database_url: str, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    result = await asyncio.to_thread(run_cli, *args, env=cli_env(database_url, tmp_path))
    return result.returncode, result.stdout, result.stderr


async def test_send_to_writes_a_direct_message_that_reaches_both_people(
    database_url: str, tmp_path: Path, db: psycopg.AsyncConnection[Any], client_factory: Any
) -> None:
    alice = client_factory()
    me = await alice.sign_in("alice@example.com", "Alice")
    socket = await alice.connect(channels=[f"private-user.{me['user']['id']}"])
    await create_user(db, "bob@example.com", "Bob")

    code, out, err = await cli(
        database_url,
        tmp_path,
        "send",
        "psst",
        "--as",
        "bob@example.com",
        "--to",
        "alice@example.com",
    )
    assert (code, err) == (0, "")
    printed = json.loads(out)["direct_message"]
    assert (printed["content"], printed["sender"]["name"], printed["recipient"]["name"]) == (
        "psst",
        "Bob",
        "Alice",
    )
    frame = await socket.next_frame()
    assert (frame["event"], frame["data"]["direct_message"]) == ("new-direct-message", printed)
    cursor = await db.execute("SELECT application_name FROM broadcast_audit")
    assert {row[0] for row in await cursor.fetchall()} == {"pgcast-cli"}


async def test_notify_inserts_a_notification_for_that_user_only(
    database_url: str, tmp_path: Path, db: psycopg.AsyncConnection[Any], client_factory: Any
) -> None:
    alice = client_factory()
    me = await alice.sign_in("alice@example.com", "Alice")
    socket = await alice.connect(channels=[f"private-user.{me['user']['id']}"])
    code, out, err = await cli(
        database_url,
        tmp_path,
        "notify",
        "alice@example.com",
        "--type",
        "invoice-paid",
        "--data",
        '{"amount": 12}',
    )
    assert (code, err) == (0, "")
    printed = json.loads(out)["notification"]
    assert (printed["type"], printed["data"], printed["read_at"]) == (
        "invoice-paid",
        {"amount": 12},
        None,
    )
    frame = await socket.next_frame()
    assert frame["event"] == "Illuminate\\Notifications\\Events\\BroadcastNotificationCreated"
    assert frame["data"] == {"amount": 12, "id": printed["id"], "type": "invoice-paid"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("send", "x", "--as", "a@example.com", "--to", "nobody@example.com"), "no user"),
        (("send", "x", "--as", "a@example.com", "--to", "a@example.com"), "themselves"),
        (("send", "bell\x07", "--as", "a@example.com", "--to", "b@example.com"), "control"),
        (("notify", "nobody@example.com", "--type", "t"), "no user"),
        (("notify", "a@example.com", "--type", "t", "--data", "{nope"), "not valid JSON"),
        (("notify", "a@example.com", "--type", "t", "--data", "[1]"), "JSON object"),
        (("notify", "a@example.com", "--type", " "), "--type must be"),
        (("notify", "a@example.com", "--type", "a\x1bb"), "--type must be"),
    ],
)
async def test_bad_private_writes_exit_1_with_one_line_and_write_nothing(
    database_url: str,
    tmp_path: Path,
    db: psycopg.AsyncConnection[Any],
    args: tuple[str, ...],
    message: str,
) -> None:
    await create_user(db, "a@example.com", "A")
    await create_user(db, "b@example.com", "B")
    code, out, err = await cli(database_url, tmp_path, *args)
    assert code == 1
    assert out == ""
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert await count_rows(db, "direct_messages") == 0
    assert await count_rows(db, "notifications") == 0


async def test_notify_without_its_type_is_bad_usage(database_url: str, tmp_path: Path) -> None:
    code, _, err = await cli(database_url, tmp_path, "notify", "a@example.com")
    assert code == 2
    assert "--type" in err
