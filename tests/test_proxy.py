"""deploy/haproxy.cfg, run by a real HAProxy in front of three real pgcast processes on one
database, as compose.yaml runs it: it routes HTTP, /ws and /app/{key} to every replica,
spreads sockets without stickiness, and when a replica stops (close 1001), the client
resumes its cursor through the proxy on another replica and loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from server.keys import CONFIG, HUB
from tests.conftest import (
    FRAME_TIMEOUT,
    Client,
    Endpoint,
    RunningServer,
    create_user,
    server_config,
    start_server,
)
from tests.pgbouncer import stop_process
from tests.test_compose import ROOT, haproxy_binary

REPLICAS = 3
STARTUP_TIMEOUT = 20.0


def local_haproxy_config(listen_port: int, server_ports: list[int]) -> str:
    """deploy/haproxy.cfg with the two things only compose provides replaced: the address
    it listens on, and Docker's DNS name for the replicas (here, loopback ports)."""
    config = (ROOT / "deploy" / "haproxy.cfg").read_text()
    replaced: list[str] = []

    def sub(pattern: str, replacement: str) -> None:
        nonlocal config
        config, count = re.subn(pattern, replacement, config, flags=re.M)
        assert count == 1, pattern
        replaced.append(pattern)

    sub(r"^resolvers docker\n(?:[ \t]+.*\n)+", "")
    sub(r" resolvers docker resolve-prefer ipv4 init-addr none$", "")
    sub(r"^(\s*)bind :8080$", rf"\g<1>bind 127.0.0.1:{listen_port}")
    servers = "".join(
        f"    server app{n} 127.0.0.1:{port}\n" for n, port in enumerate(server_ports, 1)
    )
    sub(r"^\s*server-template app \d+ app:8080\n", servers)
    return config


@contextlib.contextmanager
def running_haproxy(config: str, directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    path = directory / "haproxy.cfg"
    path.write_text(config)
    with (directory / "haproxy.log").open("wb") as log:
        process = subprocess.Popen(
            [haproxy_binary(), "-db", "-f", str(path)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        stop_process(process)


async def wait_until_served(url: str, process: subprocess.Popen[bytes]) -> None:
    # HAProxy says nothing when it is ready: ask it, within a deadline.
    async with aiohttp.ClientSession() as http, asyncio.timeout(STARTUP_TIMEOUT):
        while True:
            assert process.poll() is None, "haproxy exited"
            try:
                async with http.get(url + "/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)


@pytest.fixture
async def replicas_behind_haproxy(
    database_url: str, tmp_path: Path, unused_tcp_port_factory: Any
) -> AsyncIterator[tuple[str, list[RunningServer]]]:
    proxy_port = unused_tcp_port_factory()
    proxy_url = f"http://127.0.0.1:{proxy_port}"
    ports = [unused_tcp_port_factory() for _ in range(REPLICAS)]
    # One data directory, as compose.yaml's shared volume: the same Pusher credentials and
    # session key in every replica.
    servers = [
        await start_server(
            server_config(database_url, tmp_path / "data", port, PGCAST_PUBLIC_URL=proxy_url)
        )
        for port in ports
    ]
    try:
        with running_haproxy(local_haproxy_config(proxy_port, ports), tmp_path) as process:
            await wait_until_served(proxy_url, process)
            yield proxy_url, servers
    finally:
        for server in servers:
            await server.runner.cleanup()


def holding(servers: list[RunningServer]) -> list[int]:
    return [len(server.app[HUB]) for server in servers]


async def test_haproxy_routes_http_ws_and_pusher_to_any_replica_and_a_stopped_one_is_resumed(
    replicas_behind_haproxy: tuple[str, list[RunningServer]], db: psycopg.AsyncConnection[Any]
) -> None:
    proxy_url, servers = replicas_behind_haproxy
    user_id = await create_user(db)
    alice = Client(Endpoint(proxy_url))
    try:
        # HTTP: signed in through the proxy, the session is known to every replica.
        await alice.sign_in("alice@example.com", "Alice")
        for _ in range(2 * REPLICAS):
            async with alice.http.get(proxy_url + "/api/me") as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["user"]["name"] == "Alice"

        # /ws: one socket per replica (least connections), nothing sticky.
        sockets = [await alice.connect()]
        first_holder = holding(servers).index(1)
        for expected in ([1, 1, 0], [1, 1, 1]):
            sockets.append(await alice.connect())
            assert sorted(holding(servers), reverse=True) == expected

        # /app/{key}: the Pusher protocol through the same proxy.
        key = servers[0].app[CONFIG].pusher.key
        pusher = await alice.http.ws_connect(
            f"{proxy_url.replace('http', 'ws')}/app/{key}?protocol=7&client=js&version=8.4.0",
            headers={"Origin": proxy_url},
        )
        established = json.loads(await pusher.receive_str(timeout=FRAME_TIMEOUT))
        assert established["event"] == "pusher:connection_established"
        await pusher.send_str(
            json.dumps({"event": "pusher:subscribe", "data": {"channel": "messages"}})
        )
        subscribed = json.loads(await pusher.receive_str(timeout=FRAME_TIMEOUT))
        assert subscribed["event"] == "pusher_internal:subscription_succeeded"

        await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'one')", [user_id])
        for socket in sockets:
            assert (await socket.next_frame())["data"]["message"]["content"] == "one"
        frame = json.loads(await pusher.receive_str(timeout=FRAME_TIMEOUT))
        assert frame["event"] == "new-message"
        assert json.loads(frame["data"])["message"]["content"] == "one"
        await pusher.close()

        # A rolling restart: the replica holding the first socket stops. Its client sees
        # 1001, and reconnects through the proxy with its cursor to whichever replica is up.
        # (Out of the fixture's list: it stops the others.)
        stopping = asyncio.create_task(servers.pop(first_holder).runner.cleanup())
        stopped_socket = sockets[0]
        code, _ = await stopped_socket.expect_close()
        assert code == 1001
        await stopping
        for text in ("two", "three"):
            await db.execute(
                "INSERT INTO messages (user_id, content) VALUES (%s, %s)", [user_id, text]
            )
        resumed = await alice.connect(after=stopped_socket.cursor)
        assert [f["data"]["message"]["content"] for f in await resumed.frames(2)] == [
            "two",
            "three",
        ]
        live = [s for s in sockets if s is not stopped_socket]
        for socket in live:
            assert [f["data"]["message"]["content"] for f in await socket.frames(2)] == [
                "two",
                "three",
            ]
        await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'four')", [user_id])
        for socket in [resumed, *live]:
            assert (await socket.next_frame())["data"]["message"]["content"] == "four"
        for socket in [resumed, *live]:
            await socket.close()
    finally:
        await alice.close()
