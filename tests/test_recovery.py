"""While PostgreSQL is away requests fail fast with 503, once it is back they succeed within a
second or two, and health checks never take the connections users need."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp
import psycopg

from tests.conftest import Client, RunningServer
from tests.test_faults import PostgresOfOurOwn, own_postgres, own_server, wait_for_readiness

__all__ = ["own_postgres", "own_server"]  # fixtures, used by name

# The pool's own timeout is 5 s; a request while the database is known to be away must not
# wait anything like it.
FAST_503_BOUND = 2.0
# The outage lasts long enough for psycopg_pool's exponential reconnection backoff (1, 2, 4,
# 8, 16 s...) to outgrow it: without a fix, the pool comes back many seconds after PostgreSQL.
OUTAGE_SECONDS = 20.0
RECOVERY_BOUND = 3.0


async def timed_get(http: aiohttp.ClientSession, url: str) -> tuple[int, float, Any]:
    started = time.monotonic()
    async with http.get(url) as response:
        body = await response.json()
        return response.status, time.monotonic() - started, (response.headers, body)


async def test_requests_fail_fast_while_postgres_is_away_and_succeed_soon_after_it_returns(
    own_postgres: tuple[PostgresOfOurOwn, str], own_server: RunningServer
) -> None:
    postgres, conninfo = own_postgres
    alice = Client(own_server.endpoint)
    try:
        await alice.sign_in("alice@example.com", "Alice")
        status, _, _ = await timed_get(alice.http, own_server.url + "/api/me")
        assert status == 200

        await asyncio.to_thread(postgres.pg_ctl, "-m", "fast", "stop")
        await wait_for_readiness(own_server.url, 503)
        outage_started = time.monotonic()
        waits: list[float] = []
        # Requests keep coming through the whole outage, as they would in production.
        while time.monotonic() - outage_started < OUTAGE_SECONDS:
            status, elapsed, (headers, body) = await timed_get(
                alice.http, own_server.url + "/api/me"
            )
            assert status == 503
            assert body["error"]["code"] == "database_unavailable"
            assert headers["Retry-After"] == "1"
            waits.append(elapsed)
            await asyncio.sleep(0.2)
        print(f"503 while away: max {max(waits):.3f} s over {len(waits)} requests")
        assert max(waits) < FAST_503_BOUND, waits

        socket_dir = psycopg.conninfo.conninfo_to_dict(conninfo)["host"]
        await asyncio.to_thread(
            postgres.pg_ctl,
            "-l",
            str(postgres.data_dir / "pgdata" / "log"),
            "-o",
            f'-h "" -k {socket_dir}',
            "start",
        )
        back = time.monotonic()
        async with asyncio.timeout(30):
            while True:
                status, _, _ = await timed_get(alice.http, own_server.url + "/api/me")
                if status == 200:
                    break
                assert status == 503
                await asyncio.sleep(0.05)
        recovered_after = time.monotonic() - back
        print(f"first 200 after PostgreSQL was back: {recovered_after:.3f} s")
        assert recovered_after < RECOVERY_BOUND
        assert (await alice.post_message("back again")).status == 201
    finally:
        await alice.close()


async def sample_connections(database_url: str, stop: asyncio.Event, peaks: Counter[str]) -> None:
    """The most connections each application held at once on the test's database."""
    async with await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, application_name="sampler"
    ) as conn:
        while not stop.is_set():
            cursor = await conn.execute(
                "SELECT application_name, count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() GROUP BY application_name"
            )
            for name, count in await cursor.fetchall():
                peaks[name] = max(peaks[name], count)
            await asyncio.sleep(0.005)


async def test_a_flood_of_health_checks_uses_one_connection_and_signed_in_users_are_served(
    server: RunningServer, database_url: str
) -> None:
    alice = Client(server.endpoint)
    await alice.sign_in("alice@example.com", "Alice")
    peaks: Counter[str] = Counter()
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_connections(database_url, stop, peaks))
    flood_statuses: Counter[int] = Counter()
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as anonymous:

            async def check(path: str) -> None:
                async with anonymous.get(server.url + path) as response:
                    await response.read()
                    flood_statuses[response.status] += 1

            flood = [
                asyncio.create_task(check("/metrics" if n % 10 == 0 else "/readyz"))
                for n in range(2000)
            ]
            # A signed-in user in the middle of it.
            started = time.monotonic()
            response = await alice.post_message("served during the flood")
            assert response.status == 201
            async with alice.http.get(server.url + "/api/me") as me:
                assert me.status == 200
            print(f"signed-in post and read during the flood: {time.monotonic() - started:.3f} s")
            await asyncio.gather(*flood)
    finally:
        stop.set()
        await sampler
        await alice.close()
    assert flood_statuses == Counter({200: 2000})
    print(f"connections at most, by application: {dict(peaks)}")
    assert peaks["pgcast-health"] <= 1
    # The pool holds one idle connection; the signed-in user's requests may take a second.
    assert peaks["pgcast"] <= 2
