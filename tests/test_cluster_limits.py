"""Limits and counts hold across pgcast processes: three separate `pgcast serve` commands on
three ports against one PostgreSQL behave as one server would, and so does `--workers 3`."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from server.keys import POOL
from server.retention import prune_once
from tests.cluster_support import (
    close_all,
    close_sdk,
    pgcast_processes,
    signed_in_everywhere,
)
from tests.conftest import Client, count_rows, server_config, start_server


async def post(client: Client, content: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with client.http.post(
        client.server.url + "/api/messages",
        json={"content": content},
        headers={"Origin": client.server.origin},
    ) as response:
        return response.status, await response.json(), dict(response.headers)


async def test_posts_per_minute_count_every_process(
    database_url: str, tmp_path: Path, db: psycopg.AsyncConnection[Any]
) -> None:
    async with pgcast_processes(database_url, tmp_path, PGCAST_RATE_POSTS_PER_MINUTE="5") as ps:
        alice, _ = await signed_in_everywhere(ps, "alice@example.com", "Alice")
        bob, _ = await signed_in_everywhere(ps[:1], "bob@example.com", "Bob")
        try:
            for n, client in enumerate([alice[0], alice[1], alice[2], alice[0], alice[1]]):
                status, body, _ = await post(client, f"m{n}")
                assert status == 201, body
            for client in alice:
                status, body, headers = await post(client, "one too many")
                assert status == 429, body
                assert body["error"]["code"] == "rate_limited"
                assert 1 <= int(headers["Retry-After"]) <= 60
            # Per user: Bob is unaffected.
            assert (await post(bob[0], "hi"))[0] == 201
            assert await count_rows(db, "messages") == 6
        finally:
            await close_all(alice + bob)


async def test_concurrent_posts_on_three_processes_let_exactly_the_limit_through(
    database_url: str, tmp_path: Path, db: psycopg.AsyncConnection[Any]
) -> None:
    limit = 6
    async with pgcast_processes(
        database_url, tmp_path, PGCAST_RATE_POSTS_PER_MINUTE=str(limit)
    ) as ps:
        alice, _ = await signed_in_everywhere(ps, "alice@example.com", "Alice")
        try:
            # Every process gets the whole limit's worth at once.
            outcomes = await asyncio.gather(
                *(post(client, f"{n}") for client in alice for n in range(limit))
            )
            statuses = sorted(status for status, _, _ in outcomes)
            assert statuses == [201] * limit + [429] * (2 * limit)
            assert await count_rows(db, "messages") == limit
        finally:
            await close_all(alice)


async def test_the_post_window_moves_and_old_posts_are_pruned(
    database_url: str, tmp_path: Path, unused_tcp_port: int, db: psycopg.AsyncConnection[Any]
) -> None:
    server = await start_server(
        server_config(database_url, tmp_path, unused_tcp_port, PGCAST_RATE_POSTS_PER_MINUTE="3")
    )
    alice = Client(server.endpoint)
    try:
        me = (await alice.sign_in("alice@example.com", "Alice"))["user"]["id"]
        for n in range(3):
            assert (await post(alice, f"m{n}"))[0] == 201
        # As if the first of the three had been posted 50 s ago: it leaves the window in 10.
        await db.execute(
            "UPDATE pgcast_post_rates SET recent[1] = recent[1] - interval '50 seconds'"
        )
        status, _, headers = await post(alice, "too soon")
        assert status == 429
        assert 1 <= int(headers["Retry-After"]) <= 10
        # A minute on, the window is empty again, and the stored times do not pile up.
        await db.execute(
            "UPDATE pgcast_post_rates SET recent = ARRAY(SELECT t - interval '61 seconds' "
            "FROM unnest(recent) AS t)"
        )
        assert (await post(alice, "later"))[0] == 201
        cursor = await db.execute(
            "SELECT cardinality(recent) FROM pgcast_post_rates WHERE user_id = %s", [me]
        )
        assert await cursor.fetchone() == (1,)
        # A user who stopped posting keeps no row past retention's next run.
        await db.execute("UPDATE pgcast_post_rates SET recent = ARRAY[now() - interval '2 min']")
        await prune_once(server.app[POOL], timedelta(days=7))
        assert await count_rows(db, "pgcast_post_rates") == 0
    finally:
        await alice.close()
        await server.runner.cleanup()


# --- revocations ---------------------------------------------------------------------------

SIGNED_OUT = 4401
FORBIDDEN = 4403
PUSHER_UNAUTHORIZED = 4009
PUSHER_RECONNECT = 4200


async def test_terminate_connections_on_one_process_closes_the_users_sockets_on_the_others(
    database_url: str, tmp_path: Path
) -> None:
    async with pgcast_processes(database_url, tmp_path) as ps:
        alice, me = await signed_in_everywhere(ps, "alice@example.com", "Alice")
        [bob], _ = await signed_in_everywhere(ps[2:], "bob@example.com", "Bob")
        sdk = ps[0].sdk()
        try:
            on_b, on_c = await alice[1].connect(), await alice[2].connect()
            pusher_on_b, _ = await ps[1].raw_pusher(alice[1].http)
            bystander = await bob.connect()
            assert await asyncio.to_thread(sdk.terminate_user_connections, str(me)) == {}
            assert (await on_b.expect_close(5.0))[0] == SIGNED_OUT
            assert (await on_c.expect_close(5.0))[0] == SIGNED_OUT
            error = await pusher_on_b.next_event("pusher:error", 5.0)
            assert error["data"]["code"] == PUSHER_UNAUTHORIZED
            assert (await pusher_on_b.expect_close(5.0))[0] == PUSHER_UNAUTHORIZED
            # Bob's socket stays open, and Alice may connect again anywhere.
            assert (await post(bob, "still here"))[0] == 201
            assert (await bystander.next_frame())["data"]["message"]["content"] == "still here"
            again = await alice[2].connect()
            await again.close()
            await bystander.close()
        finally:
            close_sdk(sdk)
            await close_all([*alice, bob])


async def test_a_revoked_membership_closes_its_subscriptions_on_all_three_processes(
    database_url: str, tmp_path: Path, db: psycopg.AsyncConnection[Any]
) -> None:
    async with pgcast_processes(database_url, tmp_path) as ps:
        alice, me = await signed_in_everywhere(ps, "alice@example.com", "Alice")
        try:
            await db.execute(
                "INSERT INTO channel_members (channel, user_id) VALUES ('private-team.ops', %s)",
                [me],
            )
            sockets = [await client.connect(channels=["private-team.ops"]) for client in alice]
            await db.execute("DELETE FROM channel_members WHERE user_id = %s", [me])
            for socket in sockets:
                code, reason = await socket.expect_close(5.0)
                assert (code, "private-team.ops" in reason) == (FORBIDDEN, True)
        finally:
            await close_all(alice)
