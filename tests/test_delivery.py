"""Rows written by any SQL client reach every socket: whole, in commit order, exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from tests.conftest import Client, RunningServer, create_user


async def two_sockets(client_factory: Any) -> tuple[Client, Any, Any]:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    bob = client_factory()
    await bob.sign_in("bob@example.com", "Bob")
    return alice, await alice.connect(), await bob.connect()


async def test_row_inserted_with_sql_reaches_every_socket_with_its_user(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    _, first, second = await two_sockets(client_factory)
    user_id = await create_user(db, "ops@example.com", "Ops Team")

    await db.execute(
        "INSERT INTO messages (user_id, content) VALUES (%s, 'Maintenance at 22:00')", [user_id]
    )

    for socket in (first, second):
        frame = await socket.next_frame()
        assert frame["event"] == "new-message"
        assert frame["channel"] == "messages"
        message = frame["data"]["message"]
        assert message["content"] == "Maintenance at 22:00"
        assert message["user_id"] == user_id
        assert message["user"] == {"id": user_id, "name": "Ops Team", "avatar_url": None}
        assert message["created_at"].endswith("Z")
        assert frame["cursor"]


async def test_message_of_20000_characters_arrives_whole(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    _, first, second = await two_sockets(client_factory)
    user_id = await create_user(db)
    content = "".join(chr(0x41 + i % 26) for i in range(19_999)) + "é"

    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, %s)", [user_id, content])

    for socket in (first, second):
        frame = await socket.next_frame()
        assert frame["data"]["message"]["content"] == content


async def test_a_1000_row_insert_arrives_complete_and_in_order(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    _, first, second = await two_sockets(client_factory)
    user_id = await create_user(db)

    await db.execute(
        "INSERT INTO messages (user_id, content) "
        "SELECT %s, 'row ' || n FROM generate_series(1, 1000) AS n",
        [user_id],
    )

    for socket in (first, second):
        frames = await socket.frames(1000)
        assert [f["data"]["message"]["content"] for f in frames] == [
            f"row {n}" for n in range(1, 1001)
        ]


async def test_update_and_delete_by_sql_reach_the_sockets(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    _, first, second = await two_sockets(client_factory)
    user_id = await create_user(db)
    cursor = await db.execute(
        "INSERT INTO messages (user_id, content) VALUES (%s, 'draft') RETURNING id", [user_id]
    )
    row = await cursor.fetchone()
    assert row is not None
    message_id = row[0]

    await db.execute("UPDATE messages SET content = 'final' WHERE id = %s", [message_id])
    await db.execute("DELETE FROM messages WHERE id = %s", [message_id])

    for socket in (first, second):
        created, updated, deleted = await socket.frames(3)
        assert created["event"] == "new-message"
        assert updated["event"] == "message-updated"
        assert updated["data"]["message"]["content"] == "final"
        assert updated["data"]["message"]["updated_at"] >= created["data"]["message"]["updated_at"]
        assert deleted == {
            "event": "message-deleted",
            "channel": "messages",
            "data": {"id": message_id},
            "cursor": deleted["cursor"],
        }


async def test_resume_after_disconnect_gets_exactly_what_was_missed(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    socket = await alice.connect()
    user_id = await create_user(db)
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'seen')", [user_id])
    assert (await socket.next_frame())["data"]["message"]["content"] == "seen"
    await socket.close()

    for text in ("missed 1", "missed 2", "missed 3"):
        await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, %s)", [user_id, text])

    resumed = await alice.connect(after=socket.cursor)
    frames = await resumed.frames(3)
    assert [f["data"]["message"]["content"] for f in frames] == ["missed 1", "missed 2", "missed 3"]
    # Then live, with nothing repeated at the seam.
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'live')", [user_id])
    assert (await resumed.next_frame())["data"]["message"]["content"] == "live"


async def test_resume_gets_a_transaction_that_committed_out_of_id_order_exactly_once(
    client_factory: Any, db: psycopg.AsyncConnection[Any], database_url: str
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    socket = await alice.connect()
    user_id = await create_user(db)

    async with await psycopg.AsyncConnection.connect(database_url) as writer_a:
        # A takes the lower id and stays open.
        await writer_a.execute(
            "INSERT INTO messages (user_id, content) VALUES (%s, 'A')", [user_id]
        )
        # B takes a higher id, commits, and is delivered at once despite A being open.
        await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'B')", [user_id])
        frame_b = await socket.next_frame()
        assert frame_b["data"]["message"]["content"] == "B"
        await socket.close()
        await writer_a.commit()

    resumed = await alice.connect(after=frame_b["cursor"])
    frame_a = await resumed.next_frame()
    assert frame_a["data"]["message"]["content"] == "A"
    assert frame_a["data"]["message"]["id"] < frame_b["data"]["message"]["id"]
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'C')", [user_id])
    assert (await resumed.next_frame())["data"]["message"]["content"] == "C"


async def test_an_unrelated_open_transaction_does_not_delay_delivery(
    client_factory: Any, db: psycopg.AsyncConnection[Any], database_url: str
) -> None:
    _, first, _ = await two_sockets(client_factory)
    user_id = await create_user(db)
    await db.execute("CREATE TABLE dba_scratch (note text)")

    async with await psycopg.AsyncConnection.connect(database_url) as forgotten:
        await forgotten.execute("INSERT INTO dba_scratch VALUES ('left open')")
        await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'urgent')", [user_id])
        frame = await first.next_frame()
        assert frame["data"]["message"]["content"] == "urgent"
        await forgotten.rollback()


async def test_killing_the_listen_connection_loses_and_repeats_nothing(
    client_factory: Any, db: psycopg.AsyncConnection[Any], server: RunningServer
) -> None:
    _, first, second = await two_sockets(client_factory)
    user_id = await create_user(db)

    async def insert_steadily() -> None:
        for n in range(200):
            await db.execute(
                "INSERT INTO messages (user_id, content) VALUES (%s, %s)", [user_id, f"m{n}"]
            )
            if n % 10 == 0:
                await asyncio.sleep(0)

    async def kill_listener_repeatedly() -> int:
        killed = 0
        async with await psycopg.AsyncConnection.connect(
            server.config.database_url or "", autocommit=True
        ) as admin:
            for _ in range(5):
                cursor = await admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    # The LISTEN connection and the one that reads the event log.
                    "WHERE application_name LIKE 'pgcast-listener%' "
                    "AND datname = current_database()"
                )
                row = await cursor.fetchone()
                killed += int(row[0]) if row else 0
                await asyncio.sleep(0.02)
        return killed

    _, killed = await asyncio.gather(insert_steadily(), kill_listener_repeatedly())
    assert killed >= 1

    for socket in (first, second):
        frames = await socket.frames(200)
        assert [f["data"]["message"]["content"] for f in frames] == [f"m{n}" for n in range(200)]
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'after')", [user_id])
    assert (await first.next_frame())["data"]["message"]["content"] == "after"


async def test_a_replay_longer_than_one_page_arrives_complete_and_in_order(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    socket = await alice.connect()
    await socket.close()
    user_id = await create_user(db)
    await db.execute(
        "INSERT INTO messages (user_id, content) "
        "SELECT %s, 'r' || n FROM generate_series(1, 450) AS n",
        [user_id],
    )
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'r451')", [user_id])

    resumed = await alice.connect(after=socket.cursor)
    frames = await resumed.frames(451)
    assert [f["data"]["message"]["content"] for f in frames] == [f"r{n}" for n in range(1, 452)]
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'live')", [user_id])
    assert (await resumed.next_frame())["data"]["message"]["content"] == "live"
