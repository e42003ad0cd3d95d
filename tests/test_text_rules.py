"""One rule for what a message may contain, in the API and in `pgcast send` alike: text, line
breaks and tabs, and no other control character."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import count_rows, create_user
from tests.test_cli import PGCAST, cli_env


async def send(text: bytes, env: dict[str, str]) -> tuple[int | None, str]:
    process = await asyncio.create_subprocess_exec(
        *(os.fsencode(part) for part in PGCAST),
        b"send",
        text,
        b"--as",
        b"dba@example.com",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, stderr.decode()


CONTROLS = ["\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b[31mred", "\x7f", "\x80", "\x85", "\x9b"]


@pytest.mark.parametrize("control", CONTROLS)
async def test_a_control_character_in_a_message_is_422(
    client_factory: Any, db: psycopg.AsyncConnection[Any], control: str
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    async with alice.http.post(
        alice.server.url + "/api/messages",
        json={"content": f"ding {control} dong"},
        headers={"Origin": alice.server.origin},
    ) as response:
        assert response.status == 422
        error = (await response.json())["error"]
    assert error["code"] == "content_invalid"
    assert f"U+{ord(control[0]):04X}" in error["message"]
    assert await count_rows(db, "messages") == 0


async def test_line_breaks_and_tabs_are_kept(client_factory: Any) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    socket = await alice.connect()
    text = "first line\nsecond\tcolumn\r\nthird line"
    assert (await alice.post_message(text)).status == 201
    assert (await socket.next_frame())["data"]["message"]["content"] == text


@pytest.mark.parametrize("name", ["Eve\x1b[2J", "Eve\nMallory", "E\x85ve"])
async def test_a_control_character_in_a_dev_login_name_is_422(
    client_factory: Any, db: psycopg.AsyncConnection[Any], name: str
) -> None:
    client = client_factory()
    async with client.http.post(
        client.server.url + "/auth/dev-login",
        json={"email": "eve@example.com", "name": name},
        headers={"Origin": client.server.origin},
    ) as response:
        assert response.status == 422
        error = (await response.json())["error"]
    assert error["code"] == "invalid_name"
    assert "control character" in error["message"]
    assert await count_rows(db, "users") == 0


@pytest.mark.parametrize("control", ["\x07", "\x1b[31mred", "\x7f", "\x9b"])
async def test_pgcast_send_refuses_the_same_characters_with_one_line(
    database_url: str, db: psycopg.AsyncConnection[Any], tmp_path: Path, control: str
) -> None:
    await create_user(db, "dba@example.com")
    returncode, stderr = await send(f"ding {control}".encode(), cli_env(database_url, tmp_path))
    assert returncode == 1
    assert stderr.strip() == (
        f"pgcast: The message contains the control character U+{ord(control[0]):04X}, "
        "which cannot be shown."
    )
    assert await count_rows(db, "messages") == 0


async def test_pgcast_send_refuses_bytes_that_are_not_utf8_with_one_line(
    database_url: str, db: psycopg.AsyncConnection[Any], tmp_path: Path
) -> None:
    await create_user(db, "dba@example.com")
    # What a shell passes for a file in another encoding: Python sees lone surrogates.
    returncode, stderr = await send(b"caf\xe9", cli_env(database_url, tmp_path))
    assert returncode == 1, stderr
    assert stderr.strip().splitlines() == [
        "pgcast: The message contains a lone surrogate (U+D800 to U+DFFF) "
        "or bytes that are not UTF-8."
    ]
    assert await count_rows(db, "messages") == 0
