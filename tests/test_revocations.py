"""A socket lives no longer than its session: signed out, expired, deleted, or its user
deleted, also while the listener was away."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg import sql

from server.keys import LISTENER
from tests.conftest import RunningServer, Socket, create_user

SIGNED_OUT = 4401


async def signed_in_socket(client_factory: Any, email: str) -> tuple[int, Socket]:
    client = client_factory()
    me = await client.sign_in(email, email.split("@")[0].title())
    return int(me["user"]["id"]), await client.connect()


async def test_deleting_a_session_row_closes_its_sockets(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice_id, alice = await signed_in_socket(client_factory, "alice@example.com")
    _, bob = await signed_in_socket(client_factory, "bob@example.com")

    await db.execute("DELETE FROM user_sessions WHERE user_id = %s", [alice_id])

    assert await alice.expect_close() == (SIGNED_OUT, "signed out")
    writer = await create_user(db)
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'still here')", [writer])
    assert (await bob.next_frame())["data"]["message"]["content"] == "still here"


async def test_a_socket_closes_by_itself_when_its_session_expires(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice = client_factory()
    me = await alice.sign_in("alice@example.com", "Alice")
    await db.execute(
        "UPDATE user_sessions SET expires_at = now() + interval '1.5 seconds' WHERE user_id = %s",
        [me["user"]["id"]],
    )
    socket = await alice.connect()

    assert await socket.expect_close() == (SIGNED_OUT, "session expired")


async def test_moving_a_session_expiry_into_the_past_closes_its_sockets(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice_id, alice = await signed_in_socket(client_factory, "alice@example.com")

    await db.execute(
        "UPDATE user_sessions SET expires_at = now() - interval '1 minute' WHERE user_id = %s",
        [alice_id],
    )

    code, _ = await alice.expect_close()
    assert code == SIGNED_OUT


async def test_revocations_made_while_the_listener_was_away_close_their_sockets(
    client_factory: Any,
    db: psycopg.AsyncConnection[Any],
    server: RunningServer,
    postgres_conninfo: str,
) -> None:
    alice_id, alice = await signed_in_socket(client_factory, "alice@example.com")
    bob_id, bob = await signed_in_socket(client_factory, "bob@example.com")
    _, carol = await signed_in_socket(client_factory, "carol@example.com")
    listener = server.app[LISTENER]
    cursor = await db.execute("SELECT current_database()")
    row = await cursor.fetchone()
    assert row is not None
    database = sql.Identifier(row[0])

    # The listener cannot come back until the revocations are made: their NOTIFYs reach
    # nobody in this process. (A database cannot be closed from a session inside it.)
    admin = await psycopg.AsyncConnection.connect(postgres_conninfo, autocommit=True)
    await admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(database))
    try:
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'pgcast-listener' AND datname = current_database()"
        )
        async with asyncio.timeout(10):
            while listener.listening:  # noqa: ASYNC110 (no event says the connection dropped)
                await asyncio.sleep(0.01)
        await db.execute(
            "UPDATE user_sessions SET revoked_at = now() WHERE user_id = %s", [alice_id]
        )
        await db.execute("DELETE FROM users WHERE id = %s", [bob_id])
        assert not listener.listening
    finally:
        await admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(database))
        await admin.close()

    assert await alice.expect_close() == (SIGNED_OUT, "signed out")
    assert await bob.expect_close() == (SIGNED_OUT, "account deleted")
    writer = await create_user(db)
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'still here')", [writer])
    assert (await carol.next_frame())["data"]["message"]["content"] == "still here"
