"""A statement's notification carries its events, signed: live delivery hands them to the
sockets without reading the event log, and reads it whenever a notification cannot be taken
as it is. Either way every event arrives once, in commit order, with the cursor a replay
agrees with."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Client, RunningServer, create_user, server_config, start_server
from tests.test_observability import scrape


async def reads(server: RunningServer) -> float:
    return (await scrape(server))["pgcast_event_log_reads_total"]


async def contents(socket: Any, count: int) -> list[str]:
    return [frame["data"]["message"]["content"] for frame in await socket.frames(count)]


async def live_socket(client_factory: Any) -> Any:
    client = client_factory()
    await client.sign_in("reader@example.com", "Reader")
    return await client.connect()


async def delivering(
    server: RunningServer, client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> tuple[Any, int, float]:
    """A socket that has had a first message, its author, and the reads counted so far."""
    socket = await live_socket(client_factory)
    user_id = await create_user(db)
    await insert(db, user_id, "first")
    assert await contents(socket, 1) == ["first"]
    return socket, user_id, await reads(server)


async def insert(db: psycopg.AsyncConnection[Any], user_id: int, content: str) -> None:
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, %s)", [user_id, content])


async def test_one_statement_at_a_time_reaches_sockets_without_a_read(
    server: RunningServer, client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    socket, user_id, before = await delivering(server, client_factory, db)

    for n in range(20):
        await insert(db, user_id, f"m{n}")
    assert await contents(socket, 20) == [f"m{n}" for n in range(20)]
    assert await reads(server) == before


async def test_a_statement_too_large_to_carry_is_read_from_the_log(
    server: RunningServer, client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    socket, user_id, before = await delivering(server, client_factory, db)

    # One row past NOTIFY's 8000 bytes, then 65 rows in one statement (64 are carried).
    await insert(db, user_id, "x" * 9000)
    await db.execute(
        "INSERT INTO messages (user_id, content) "
        "SELECT %s, 'row ' || n FROM generate_series(1, 65) AS n",
        [user_id],
    )
    await insert(db, user_id, "small")
    assert await contents(socket, 67) == ["x" * 9000] + [f"row {n}" for n in range(1, 66)] + [
        "small"
    ]
    assert await reads(server) >= before + 2


async def test_each_statement_of_a_transaction_arrives_once_and_a_resume_agrees(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    client = client_factory()
    await client.sign_in("reader@example.com", "Reader")
    socket = await client.connect()
    user_id = await create_user(db)
    async with db.transaction():
        await insert(db, user_id, "one")
        # Too large to carry between two that are: the read it asks for has the whole
        # transaction, and the notification after it brings nothing new.
        await insert(db, user_id, "two " + "y" * 9000)
        await insert(db, user_id, "three")
    async with db.transaction():
        await insert(db, user_id, "four")
        await insert(db, user_id, "five")
    frames = await socket.frames(5)
    got = [frame["data"]["message"]["content"] for frame in frames]
    assert got == ["one", "two " + "y" * 9000, "three", "four", "five"]

    # From each frame's cursor, a resume sends exactly what came after it.
    for n, frame in enumerate(frames):
        resumed = await client.connect(after=frame["cursor"])
        await insert(db, user_id, f"marker {n}")
        rest = [f["data"]["message"]["content"] for f in await resumed.frames(5)]
        assert rest == got[n + 1 :] + [f"marker {m}" for m in range(n + 1)]
        await resumed.close()


async def test_forged_and_replayed_notifications_deliver_nothing(
    server: RunningServer,
    client_factory: Any,
    db: psycopg.AsyncConnection[Any],
    database_url: str,
) -> None:
    socket = await live_socket(client_factory)
    user_id = await create_user(db)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as spy:
        await spy.execute("LISTEN pgcast_events")
        await insert(db, user_id, "genuine")
        assert await contents(socket, 1) == ["genuine"]
        observed = await asyncio.wait_for(anext(spy.notifies()), timeout=10)
    signed = observed.payload
    assert len(signed) > 64
    # The next transaction's broadcast, as the trigger would write it.
    tx, taken_at_us, rows = json.loads(signed[64:])
    forged_body = json.dumps(
        [
            tx + 1,
            taken_at_us,
            [[rows[0][0] + 1, *rows[0][1:3], rows[0][3].replace("genuine", "forged!"), None]],
        ]
    )
    before = await reads(server)
    for payload in [
        signed,  # replayed: its transaction is delivered already
        "0" * 64 + forged_body,  # a body of the right shape, not signed with the key
        signed[:64] + forged_body,  # a real signature over another body
        "not json at all",
        "",
    ]:
        await db.execute("SELECT pg_notify('pgcast_events', %s)", [payload])
    await insert(db, user_id, "after")
    assert await contents(socket, 1) == ["after"]
    # Each forged notification sent the feed to the log, which had nothing new.
    assert await reads(server) > before


async def test_concurrent_writers_arrive_once_live_and_in_a_replay(
    client_factory: Any, db: psycopg.AsyncConnection[Any], database_url: str
) -> None:
    client = client_factory()
    await client.sign_in("reader@example.com", "Reader")
    live = await client.connect()
    start = live.cursor
    user_id = await create_user(db)

    async def writer(name: str) -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            for n in range(25):
                async with conn.transaction():
                    await insert(conn, user_id, f"{name}-{n}")
                    if n % 5 == 0:
                        await insert(conn, user_id, f"{name}-{n}-again")

    await asyncio.gather(*(writer(f"w{k}") for k in range(4)))
    total = 4 * (25 + 5)
    got = await contents(live, total)
    assert sorted(got) == sorted(
        f"w{k}-{n}{suffix}"
        for k in range(4)
        for n in range(25)
        for suffix in ([""] if n % 5 else ["", "-again"])
    )
    replayed = await contents(await client.connect(after=start), total)
    # Commit order between the writers depends on the run; each writer's own order holds live
    # and in the replay, which orders a batch of concurrent transactions by id instead.
    assert sorted(replayed) == sorted(got)
    for sequence in (got, replayed):
        for k in range(4):
            mine = [c for c in sequence if c.startswith(f"w{k}-")]
            assert mine == sorted(mine, key=lambda c: (int(c.split("-")[1]), c.endswith("again")))


async def test_a_server_whose_role_may_not_read_the_key_reads_every_notification(
    database_url: str,
    tmp_path: Path,
    unused_tcp_port: int,
    db: psycopg.AsyncConnection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    role = f"pgcast_keyless_{os.getpid()}_{unused_tcp_port}"
    try:
        await db.execute(f"CREATE ROLE {role} LOGIN")
    except psycopg.errors.InsufficientPrivilege:
        pytest.skip("DATABASE_URL's role may not create roles (CREATEROLE)")
    try:
        await db.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
        )
        await db.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
        await db.execute(f"REVOKE ALL ON pgcast_notify_key FROM {role}")
        url = psycopg.conninfo.make_conninfo(database_url, user=role)
        server = await start_server(server_config(url, tmp_path, unused_tcp_port))
        reader = Client(server.endpoint)
        try:
            socket, user_id, before = await delivering(server, lambda: reader, db)
            for n in range(3):
                await insert(db, user_id, f"m{n}")
            assert await contents(socket, 3) == ["m0", "m1", "m2"]
            # Signed notifications it cannot check send it to the log (a read may carry several).
            assert await reads(server) > before
            assert "permission denied for table pgcast_notify_key" in caplog.text
        finally:
            await reader.close()
            await server.runner.cleanup()
    finally:
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role]
        )
        await db.execute(f"DROP OWNED BY {role}")
        await db.execute(f"DROP ROLE {role}")


async def test_notifications_within_a_batch_window_wait_and_are_read_together_at_its_end(
    database_url: str, tmp_path: Path, unused_tcp_port: int, db: psycopg.AsyncConnection[Any]
) -> None:
    config = server_config(database_url, tmp_path, unused_tcp_port, PGCAST_BATCH_WINDOW_MS="1000")
    server = await start_server(config)
    reader = Client(server.endpoint)
    try:
        socket, user_id, reads_before = await delivering(server, lambda: reader, db)
        woken = (await scrape(server))["pgcast_listener_wakeups_total"]
        for n in range(20):
            await insert(db, user_id, f"m{n}")
        assert await contents(socket, 20) == [f"m{n}" for n in range(20)]
        # The first of them woke the process within the window "first" opened, or opened
        # one of its own; the rest waited in the socket until the window's end. Writes that
        # outlast a window cost the next one two wake-ups more.
        assert (await scrape(server))["pgcast_listener_wakeups_total"] - woken <= 4
        assert await reads(server) == reads_before
    finally:
        await reader.close()
        await server.runner.cleanup()
