"""Nothing lost, nothing repeated: concurrent writers, odd rows, the moment of subscription,
a killed server, and a slow consumer."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import socket
from pathlib import Path
from typing import Any

import psycopg
from yarl import URL

from tests.conftest import Client, Socket, create_user, server_config, start_server


async def contents(socket: Socket, count: int) -> list[str]:
    return [(await socket.next_frame())["data"]["message"]["content"] for _ in range(count)]


async def test_rows_the_api_would_refuse_are_still_delivered_and_the_listener_survives(
    client_factory: Any, db: psycopg.AsyncConnection[Any], database_url: str
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    socket = await alice.connect()
    user_id = await create_user(db)
    megabyte = "x" * 1_000_000

    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, '')", [user_id])
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, %s)", [user_id, megabyte])
    async with await psycopg.AsyncConnection.connect(database_url) as conn, conn.transaction():
        doomed = await create_user(conn, "doomed@example.com", "Doomed")
        await conn.execute(
            "INSERT INTO messages (user_id, content) VALUES (%s, 'orphan')", [doomed]
        )
        await conn.execute("DELETE FROM users WHERE id = %s", [doomed])
    # A hand-written row on the channel, in no shape the triggers write, and one on a
    # channel nobody listens to: delivered as written and not at all, and nothing stalls.
    await db.execute(
        "INSERT INTO broadcasts (channel, event, data) "
        """VALUES ('messages', 'maintenance', '{"note": "by hand"}'), ('elsewhere', 'x', '{}')"""
    )
    await db.execute("NOTIFY pgcast_events")
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'after')", [user_id])

    empty, big, orphan, orphan_deleted = await socket.frames(4)
    assert empty["data"]["message"]["content"] == ""
    assert big["data"]["message"]["content"] == megabyte
    assert orphan["data"]["message"]["content"] == "orphan"
    # The author as they were when the message was written, in the same transaction.
    assert orphan["data"]["message"]["user"]["name"] == "Doomed"
    assert orphan_deleted["event"] == "message-deleted"
    assert orphan_deleted["data"]["id"] == orphan["data"]["message"]["id"]
    by_hand = await socket.next_frame()
    assert (by_hand["event"], by_hand["data"]) == ("maintenance", {"note": "by hand"})
    assert (await socket.next_frame())["data"]["message"]["content"] == "after"


async def test_a_message_committed_right_after_connected_is_never_missed(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    user_id = await create_user(db)
    for attempt in range(40):
        socket = await alice.connect()
        await db.execute(
            "INSERT INTO messages (user_id, content) VALUES (%s, %s)", [user_id, f"n{attempt}"]
        )
        assert (await socket.next_frame())["data"]["message"]["content"] == f"n{attempt}"
        await socket.close()


async def test_concurrent_writers_committing_out_of_order_with_clients_resuming_at_random(
    client_factory: Any, db: psycopg.AsyncConnection[Any], database_url: str
) -> None:
    user_id = await create_user(db)
    writers, per_writer = 6, 25
    expected = {f"w{w}-{n}" for w in range(writers) for n in range(per_writer)}
    rng = random.Random(20261125)

    async def writer(w: int) -> None:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            for n in range(per_writer):
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO messages (user_id, content) VALUES (%s, %s)",
                        [user_id, f"w{w}-{n}"],
                    )
                    # Hold the transaction open a random while: ids and commits interleave.
                    await asyncio.sleep(rng.uniform(0, 0.01))

    async def reader(client: Client, socket: Socket) -> list[str]:
        received: list[str] = []
        cursor = socket.cursor
        while len(received) < len(expected):
            frame = await socket.next_frame()
            received.append(frame["data"]["message"]["content"])
            cursor = frame["cursor"]
            if rng.random() < 0.05:
                await socket.close()
                socket = await client.connect(after=cursor)
        await socket.close()
        return received

    readers = []
    for index in range(4):
        client = client_factory()
        await client.sign_in(f"reader{index}@example.com", f"Reader {index}")
        # Connected before the first write: every message is owed to every reader.
        readers.append(asyncio.create_task(reader(client, await client.connect())))
    await asyncio.gather(*(writer(w) for w in range(writers)))
    results = await asyncio.gather(*readers)

    for received in results:
        assert len(received) == len(expected), "a message was lost or repeated"
        assert set(received) == expected
        for w in range(writers):
            # One writer's transactions commit one after another: they arrive in that order.
            mine = [c for c in received if c.startswith(f"w{w}-")]
            assert mine == [f"w{w}-{n}" for n in range(per_writer)]


async def open_stalled_socket(client: Client) -> tuple[asyncio.StreamWriter, str]:
    """A WebSocket client that reads the `connected` frame and then never reads again."""
    cookie = client.http.cookie_jar.filter_cookies(URL(client.server.url))["pgcast_session"]
    url = URL(client.server.url)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, (url.host, url.port))
    reader, writer = await asyncio.open_connection(sock=raw)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: {client.server.origin}\r\n"
            f"Cookie: pgcast_session={cookie.value}\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    opcode_and_length = await asyncio.wait_for(reader.readexactly(2), 10)
    length = opcode_and_length[1] & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    connected = json.loads(await reader.readexactly(length))
    return writer, connected["data"]["cursor"]


async def test_a_stalled_socket_is_closed_with_1013_others_get_everything_and_it_resumes(
    database_url: str, tmp_path: Path, unused_tcp_port: int, db: psycopg.AsyncConnection[Any]
) -> None:
    backlog = 256 * 1024
    server = await start_server(
        server_config(
            database_url, tmp_path, unused_tcp_port, PGCAST_SOCKET_BACKLOG_BYTES=str(backlog)
        )
    )
    alice = Client(server.endpoint)
    stalled: asyncio.StreamWriter | None = None
    try:
        await alice.sign_in("alice@example.com", "Alice")
        active = [await alice.connect() for _ in range(3)]
        stalled, stalled_cursor = await open_stalled_socket(alice)
        user_id = await create_user(db)
        per_statement, statements = 10, 0

        async def stalled_was_closed() -> bool:
            async with alice.http.get(server.url + "/metrics") as response:
                return "pgcast_slow_sockets_closed_total 1.0" in await response.text()

        # Each statement is well under the bound, so sockets that keep reading never near it;
        # the stalled one piles up until it passes the bound.
        while not await stalled_was_closed():
            assert statements < 500, "the stalled socket was never closed"
            await db.execute(
                "INSERT INTO messages (user_id, content) "
                "SELECT %s, (%s + n) || ':' || repeat('x', 10000) "
                "FROM generate_series(1, %s) AS n",
                [user_id, statements * per_statement, per_statement],
            )
            statements += 1
            for socket_ in active:
                got = [int(c.split(":")[0]) for c in await contents(socket_, per_statement)]
                first = (statements - 1) * per_statement + 1
                assert got == list(range(first, first + per_statement))

        total = statements * per_statement
        resumed = await alice.connect(after=stalled_cursor)
        numbers = [int(c.split(":")[0]) for c in await contents(resumed, total)]
        assert numbers == list(range(1, total + 1))
    finally:
        if stalled is not None:
            stalled.close()
            await stalled.wait_closed()
        await alice.close()
        await server.runner.cleanup()


async def test_a_long_transaction_arrives_once_also_to_clients_that_resumed_while_it_was_open(
    client_factory: Any, db: psycopg.AsyncConnection[Any], database_url: str
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    steady, resumer = await alice.connect(), await alice.connect()
    user_id = await create_user(db)

    async with await psycopg.AsyncConnection.connect(database_url) as held:
        await held.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'held')", [user_id])
        async with await psycopg.AsyncConnection.connect(database_url) as idle:
            await idle.execute("SELECT 1")  # idle in transaction, unrelated
            for n in range(30):
                await db.execute(
                    "INSERT INTO messages (user_id, content) VALUES (%s, %s)", [user_id, f"m{n}"]
                )
            assert await contents(steady, 30) == [f"m{n}" for n in range(30)]
            assert await contents(resumer, 15) == [f"m{n}" for n in range(15)]
            await resumer.close()
            resumed = await alice.connect(after=resumer.cursor)
            assert await contents(resumed, 15) == [f"m{n}" for n in range(15, 30)]
            await held.commit()
            await idle.rollback()

    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'after')", [user_id])
    for socket_ in (steady, resumed):
        assert await contents(socket_, 2) == ["held", "after"]
