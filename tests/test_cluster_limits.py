"""Limits and counts hold across pgcast processes: three separate `pgcast serve` commands on
three ports against one PostgreSQL behave as one server would, and so does `--workers 3`."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from server.keys import HUB, POOL
from server.retention import prune_once
from tests.cluster_support import (
    ServeProcess,
    close_all,
    close_sdk,
    eventually,
    pgcast_processes,
    signed_in_everywhere,
    start_pgcast,
)
from tests.conftest import (
    Client,
    RunningServer,
    Socket,
    count_rows,
    server_config,
    start_server,
)
from tests.pusher_support import RawPusher
from tests.test_faults import PostgresOfOurOwn, own_postgres, wait_for_readiness

__all__ = ["own_postgres"]  # a fixture, used by name


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


# --- sockets per user and per address --------------------------------------------------------

PUSHER_OVER_CAPACITY = 4100
SLOT_FREED_TIMEOUT = 10.0


async def refused_upgrade(client: Client) -> dict[str, Any]:
    """What `/ws` answers a client over its socket limit: the JSON error, before any upgrade
    (asked as a plain GET, so the body can be read)."""
    async with client.http.get(
        client.server.ws_url.replace("ws://", "http://"), headers={"Origin": client.server.origin}
    ) as response:
        assert response.status == 429, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def expect_pusher_refused(process: ServeProcess, http: aiohttp.ClientSession) -> str:
    socket, first = await process.raw_pusher(http)
    assert first["event"] == "pusher:error", first
    assert first["data"]["code"] == PUSHER_OVER_CAPACITY
    assert (await socket.expect_close())[0] == PUSHER_OVER_CAPACITY
    message: str = first["data"]["message"]
    return message


async def connects_again(client: Client) -> Socket:
    """A socket, once a slot freed elsewhere is seen here (the close is not announced)."""
    opened: list[Socket] = []

    async def try_once() -> bool:
        try:
            opened.append(await client.connect())
        except aiohttp.WSServerHandshakeError as refused:
            if refused.status != 429:
                raise
            return False
        return True

    await eventually(try_once, SLOT_FREED_TIMEOUT, "a closed socket's slot freed")
    return opened[0]


async def test_sockets_per_user_count_every_process_of_either_protocol(
    database_url: str, tmp_path: Path
) -> None:
    async with pgcast_processes(
        database_url,
        tmp_path,
        PGCAST_RATE_SOCKETS_PER_USER="3",
        PGCAST_RATE_SOCKETS_PER_IP="0",
    ) as ps:
        alice, _ = await signed_in_everywhere(ps, "alice@example.com", "Alice")
        [bob], _ = await signed_in_everywhere(ps[:1], "bob@example.com", "Bob")
        pusher_sockets: list[RawPusher] = []
        try:
            on_a, on_b = await alice[0].connect(), await alice[1].connect()
            on_c, established = await ps[2].raw_pusher(alice[2].http)
            pusher_sockets.append(on_c)
            assert established["event"] == "pusher:connection_established"
            for client in alice:
                body = await refused_upgrade(client)
                assert body["error"]["code"] == "too_many_sockets"
                assert "3 open sockets per user" in body["error"]["message"]
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await alice[2].connect()
            assert refused.value.status == 429
            assert "3 open sockets per user" in await expect_pusher_refused(ps[1], alice[1].http)
            # Per user: Bob is unaffected.
            await (await bob.connect()).close()
            # Closing one on A frees a slot on C; closing the Pusher one, one on B.
            await on_a.close()
            again_on_c = await connects_again(alice[2])
            await on_c.close()
            again_on_b = await connects_again(alice[1])
            for socket in (on_b, again_on_c, again_on_b):
                await socket.close()
        finally:
            await asyncio.gather(*(s.close() for s in pusher_sockets))
            await close_all([*alice, bob])


async def test_sockets_opened_at_once_on_three_processes_stop_at_the_limit(
    database_url: str, tmp_path: Path, db: psycopg.AsyncConnection[Any]
) -> None:
    limit = 4
    async with pgcast_processes(
        database_url,
        tmp_path,
        PGCAST_RATE_SOCKETS_PER_USER=str(limit),
        PGCAST_RATE_SOCKETS_PER_IP="0",
    ) as ps:
        alice, _ = await signed_in_everywhere(ps, "alice@example.com", "Alice")
        try:
            # Every process is asked for the whole limit's worth at once.
            outcomes = await asyncio.gather(
                *(client.connect() for client in alice for _ in range(limit)),
                return_exceptions=True,
            )
            opened = [o for o in outcomes if isinstance(o, Socket)]
            refused = [o for o in outcomes if isinstance(o, aiohttp.WSServerHandshakeError)]
            assert (len(opened), len(refused)) == (limit, 2 * limit), outcomes
            assert {error.status for error in refused} == {429}
            assert await count_rows(db, "pgcast_sockets") == limit
            for socket in opened:
                await socket.close()
        finally:
            await close_all(alice)


async def test_sockets_per_address_count_every_process_anonymous_pusher_ones_too(
    database_url: str, tmp_path: Path
) -> None:
    async with pgcast_processes(
        database_url,
        tmp_path,
        PGCAST_RATE_SOCKETS_PER_USER="0",
        PGCAST_RATE_SOCKETS_PER_IP="4",
        PGCAST_PUSHER_PUBLIC_CHANNELS="open",
    ) as ps:
        alice, _ = await signed_in_everywhere(ps, "alice@example.com", "Alice")
        bob, _ = await signed_in_everywhere(ps, "bob@example.com", "Bob")
        async with aiohttp.ClientSession() as anonymous:
            pusher_sockets: list[RawPusher] = []
            try:
                natives = [await alice[0].connect(), await bob[2].connect()]
                for process in ps[1:]:
                    socket, established = await process.raw_pusher(anonymous)
                    assert established["event"] == "pusher:connection_established"
                    pusher_sockets.append(socket)
                # Four from 127.0.0.1, over three processes and two protocols: no fifth.
                message = await expect_pusher_refused(ps[0], anonymous)
                assert "4 open sockets per address" in message
                body = await refused_upgrade(bob[1])
                assert body["error"]["code"] == "too_many_sockets"
                assert "4 open sockets per address" in body["error"]["message"]
                await pusher_sockets.pop(0).close()
                natives.append(await connects_again(alice[0]))
                for socket in natives:
                    await socket.close()
            finally:
                await asyncio.gather(*(s.close() for s in pusher_sockets))
                await close_all([*alice, *bob])


# --- Pusher channel counts -------------------------------------------------------------------


async def test_pusher_channels_and_subscription_counts_are_the_same_on_every_process(
    database_url: str, tmp_path: Path
) -> None:
    async with pgcast_processes(database_url, tmp_path) as ps:
        alice, _ = await signed_in_everywhere(ps, "alice@example.com", "Alice")
        sdks = [process.sdk() for process in ps]
        pusher_sockets: list[RawPusher] = []

        async def everywhere(method: str, *args: Any) -> Any:
            answers = [await asyncio.to_thread(getattr(sdk, method), *args) for sdk in sdks]
            assert answers[1:] == answers[:1] * 2, answers
            return answers[0]

        try:
            native_a = await alice[0].connect(channels=["news", "orders.1"])
            native_c = await alice[2].connect(channels=["news"])
            for _ in range(2):
                socket, _ = await ps[1].raw_pusher(alice[1].http)
                pusher_sockets.append(socket)
                subscribed = await socket.subscribe("news")
                assert subscribed["event"] == "pusher_internal:subscription_succeeded"
            subscribed = await pusher_sockets[0].subscribe("orders.1")
            assert subscribed["event"] == "pusher_internal:subscription_succeeded"

            assert await everywhere("channels_info") == {"channels": {"news": {}, "orders.1": {}}}
            assert await everywhere("channels_info", "orders", ["subscription_count"]) == {
                "channels": {"orders.1": {"subscription_count": 2}}
            }
            assert await everywhere("channel_info", "news", ["subscription_count"]) == {
                "occupied": True,
                "subscription_count": 4,
            }
            assert await everywhere("channel_info", "nobody-here") == {"occupied": False}

            # An unsubscribe and a close on one process show on the others.
            await pusher_sockets[0].send("pusher:unsubscribe", {"channel": "orders.1"})
            await native_a.close()

            async def orders_empty() -> bool:
                answers = [
                    await asyncio.to_thread(sdk.channel_info, "orders.1", ["subscription_count"])
                    for sdk in sdks
                ]
                return all(a == {"occupied": False, "subscription_count": 0} for a in answers)

            await eventually(orders_empty, SLOT_FREED_TIMEOUT, "orders.1 left on every process")
            assert await everywhere("channels_info", None, ["subscription_count"]) == {
                "channels": {"news": {"subscription_count": 3}}
            }
            await native_c.close()
        finally:
            for sdk in sdks:
                close_sdk(sdk)
            await asyncio.gather(*(s.close() for s in pusher_sockets))
            await close_all(alice)


# --- pgcast serve --workers 3 ----------------------------------------------------------------


async def test_workers_share_the_limits_as_separate_processes_do(
    database_url: str, tmp_path: Path
) -> None:
    served = await start_pgcast(
        database_url,
        tmp_path,
        "--workers",
        "3",
        serving=3,
        PGCAST_RATE_POSTS_PER_MINUTE="4",
        PGCAST_RATE_SOCKETS_PER_USER="3",
    )
    alice = await served.fresh_client()
    try:
        await alice.sign_in("alice@example.com", "Alice")
        # Each on a connection of its own: the kernel spreads them over the three workers.
        statuses = [(await post(alice, f"m{n}"))[0] for n in range(12)]
        assert sorted(statuses) == [201] * 4 + [429] * 8
        sockets = [await alice.connect() for _ in range(3)]
        for _ in range(6):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await alice.connect()
            assert refused.value.status == 429
        for socket in sockets:
            await socket.close()
    finally:
        await alice.close()
        assert await served.stop() == 0


# --- a process that dies, a database that goes away -----------------------------------------

# A killed process's rows are gone once another process notices (within the presence
# timeout); the test allows its default and a margin for a busy machine.
DEAD_PROCESS_TIMEOUT = 10.0 + 10.0


async def test_a_killed_process_frees_its_sockets_slots_on_the_others(
    database_url: str, tmp_path: Path, db: psycopg.AsyncConnection[Any]
) -> None:
    async with pgcast_processes(
        database_url, tmp_path, PGCAST_RATE_SOCKETS_PER_USER="2", PGCAST_RATE_SOCKETS_PER_IP="0"
    ) as ps:
        alice, _ = await signed_in_everywhere(ps, "alice@example.com", "Alice")
        try:
            on_a, on_b = await alice[0].connect(), await alice[1].connect()
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await alice[2].connect()
            assert refused.value.status == 429
            await ps[1].kill()
            # Its socket is gone with it (the client sees its connection drop)...
            await on_b.expect_close()
            # ...and so is its slot, on the processes still running.
            opened: list[Socket] = []

            async def slot_freed() -> bool:
                try:
                    opened.append(await alice[2].connect())
                except aiohttp.WSServerHandshakeError as refused:
                    if refused.status != 429:
                        raise
                    return False
                return True

            await eventually(slot_freed, DEAD_PROCESS_TIMEOUT, "the killed process's slot freed")
            cursor = await db.execute("SELECT count(*) FROM pgcast_sockets")
            assert await cursor.fetchone() == (2,)
            for socket in (on_a, *opened):
                await socket.close()
        finally:
            await close_all(alice)


async def test_a_process_taken_for_dead_writes_its_sockets_again(
    server: RunningServer, client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    sockets = [await alice.connect(channels=["news"]), await alice.connect()]
    cursor = await db.execute("SELECT socket_id FROM pgcast_sockets ORDER BY socket_id")
    rows = await cursor.fetchall()
    assert sorted(socket.socket_id for socket in sockets) == [row[0] for row in rows]
    # What another process's sweep does to a process it takes for dead.
    await db.execute("DELETE FROM pgcast_processes")
    assert await count_rows(db, "pgcast_sockets") == 0

    async def written_again() -> bool:
        cursor = await db.execute("SELECT socket_id, channels FROM pgcast_sockets ORDER BY 1")
        return sorted(await cursor.fetchall()) == sorted(
            [(sockets[0].socket_id, ["news"]), (sockets[1].socket_id, ["messages"])]
        )

    await eventually(written_again, 10.0, "the sockets' rows written again")
    for socket in sockets:
        await socket.close()


async def test_a_socket_closed_while_the_database_is_away_frees_its_slot_once_it_is_back(
    own_postgres: tuple[PostgresOfOurOwn, str], tmp_path: Path, unused_tcp_port: int
) -> None:
    postgres, conninfo = own_postgres
    server = await start_server(
        server_config(conninfo, tmp_path, unused_tcp_port, PGCAST_RATE_SOCKETS_PER_USER="1")
    )
    alice = Client(server.endpoint)
    try:
        await alice.sign_in("alice@example.com", "Alice")
        socket = await alice.connect()
        await asyncio.to_thread(postgres.pg_ctl, "-m", "fast", "stop")
        await wait_for_readiness(server.url, 503)
        # Its row cannot be deleted now.
        await socket.close()
        hub = server.app[HUB]

        async def socket_gone() -> bool:
            return len(hub) == 0

        await eventually(socket_gone, 10.0, "the closed socket left the hub")
        socket_dir = psycopg.conninfo.conninfo_to_dict(conninfo)["host"]
        await asyncio.to_thread(
            postgres.pg_ctl,
            "-l",
            str(postgres.data_dir / "pgdata" / "log"),
            "-o",
            f'-h "" -k {socket_dir}',
            "start",
        )
        opened: list[Socket] = []

        async def slot_freed() -> bool:
            try:
                opened.append(await alice.connect())
            except aiohttp.WSServerHandshakeError as refused:
                # 503 while the pool finds the database again, 429 while the row stays.
                if refused.status not in (429, 503):
                    raise
                return False
            return True

        await eventually(slot_freed, 30.0, "the slot of a socket closed during the outage")
        await opened[0].close()
    finally:
        await alice.close()
        await server.runner.cleanup()
