"""Shared fixtures: a real PostgreSQL, a migrated template, a fresh database per test,
and a real pgcast server on a loopback port."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import psycopg
import pytest
import uvloop
from aiohttp import web
from psycopg import sql

from server.app import create_app
from server.config import Config, event_loop, load_config
from server.db import with_database
from server.embedded import embedded_database
from server.migrate import migrate

FRAME_TIMEOUT = 10.0


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every test's event loop is the one `pgcast serve` runs on: uvloop, unless
    PGCAST_EVENT_LOOP=asyncio (then the suite runs on asyncio's own)."""
    if event_loop(os.environ) == "asyncio":
        return {"asyncio": asyncio.new_event_loop}
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def postgres_conninfo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DATABASE_URL when set (its role needs CREATEDB), else the embedded PostgreSQL."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    with embedded_database(tmp_path_factory.mktemp("embedded")) as conninfo:
        yield conninfo


def _admin(conninfo: str) -> psycopg.Connection[Any]:
    return psycopg.connect(conninfo, autocommit=True)


@pytest.fixture(scope="session")
def template_database(postgres_conninfo: str) -> Iterator[str]:
    name = f"pgcast_template_{os.getpid()}"
    with _admin(postgres_conninfo) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrate(with_database(postgres_conninfo, name))
    yield name
    with _admin(postgres_conninfo) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def create_database_from(postgres_conninfo: str, template: str) -> str:
    name = f"pgcast_test_{uuid.uuid4().hex[:12]}"
    with _admin(postgres_conninfo) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    return name


def drop_database(postgres_conninfo: str, name: str) -> None:
    with _admin(postgres_conninfo) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database_url(postgres_conninfo: str, template_database: str) -> Iterator[str]:
    """A freshly migrated database of this test's own."""
    name = create_database_from(postgres_conninfo, template_database)
    yield with_database(postgres_conninfo, name)
    drop_database(postgres_conninfo, name)


def server_config(database_url: str, data_dir: Path, port: int, **extra: str) -> Config:
    env = {
        "DATABASE_URL": database_url,
        "PGCAST_DATA_DIR": str(data_dir),
        "PGCAST_HOST": "127.0.0.1",
        "PGCAST_PORT": str(port),
        # Tests open and close many sockets quickly; limits are tested where they are set.
        "PGCAST_RATE_POSTS_PER_MINUTE": "0",
        "PGCAST_RATE_SOCKETS_PER_USER": "0",
        "PGCAST_RATE_SOCKETS_PER_IP": "0",
        **extra,
    }
    return load_config(env)


@dataclass(frozen=True)
class Endpoint:
    """Where a pgcast server answers, as a browser sees it."""

    url: str

    @property
    def origin(self) -> str:
        return self.url

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"


@dataclass
class RunningServer:
    config: Config
    app: web.Application
    runner: web.AppRunner

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.config.public_url)

    @property
    def url(self) -> str:
        return self.endpoint.url

    @property
    def origin(self) -> str:
        return self.endpoint.origin

    @property
    def ws_url(self) -> str:
        return self.endpoint.ws_url


async def start_server(config: Config) -> RunningServer:
    app = create_app(config)
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    return RunningServer(config, app, runner)


@pytest.fixture
async def server(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> AsyncIterator[RunningServer]:
    running = await start_server(server_config(database_url, tmp_path, unused_tcp_port))
    yield running
    await running.runner.cleanup()


class Client:
    """A signed-in (or not) browser-like client: cookie jar, same-origin headers, sockets."""

    def __init__(self, server: Endpoint) -> None:
        self.server = server
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        await self.http.close()

    async def sign_in(self, email: str, name: str) -> dict[str, Any]:
        async with self.http.post(
            self.server.url + "/auth/dev-login",
            json={"email": email, "name": name},
            headers={"Origin": self.server.origin},
        ) as response:
            assert response.status == 200, await response.text()
            body: dict[str, Any] = await response.json()
            return body

    async def post_message(
        self, content: object, socket_id: str | None = None
    ) -> aiohttp.ClientResponse:
        headers = {"Origin": self.server.origin}
        if socket_id is not None:
            headers["X-Socket-ID"] = socket_id
        async with self.http.post(
            self.server.url + "/api/messages", json={"content": content}, headers=headers
        ) as response:
            await response.read()
            return response

    def socket_url(self, after: str | None = None, channels: Sequence[str] | None = None) -> str:
        query: list[tuple[str, str]] = []
        if channels is not None:
            query.append(("channels", ",".join(channels)))
        if after is not None:
            query.append(("after", after))
        return self.server.ws_url + ("?" + urlencode(query) if query else "")

    async def connect(
        self, after: str | None = None, channels: Sequence[str] | None = None
    ) -> Socket:
        ws = await self.http.ws_connect(
            self.socket_url(after, channels), headers={"Origin": self.server.origin}
        )
        socket = Socket(ws)
        connected = await socket.next_frame()
        assert connected["event"] == "connected", connected
        socket.socket_id = connected["data"]["socket_id"]
        socket.cursor = connected["data"]["cursor"]
        if after is None:
            # A fresh socket is live once it has the member list of each presence channel;
            # a resumed one gets its replay first, which the test reads.
            for channel in channels or ():
                if channel.startswith("presence-"):
                    listed = await socket.next_frame()
                    assert (listed["event"], listed["channel"]) == ("presence", channel), listed
                    socket.members[channel] = listed["data"]["members"]
        return socket


class Socket:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.socket_id = ""
        self.cursor = ""
        # Presence channel -> the member list the socket was given when it went live.
        self.members: dict[str, list[dict[str, Any]]] = {}

    async def next_frame(self, timeout: float = FRAME_TIMEOUT) -> dict[str, Any]:
        message = await asyncio.wait_for(self.ws.receive(), timeout)
        assert message.type == aiohttp.WSMsgType.TEXT, (message.type, message.data, message.extra)
        frame: dict[str, Any] = json.loads(message.data)
        if "cursor" in frame:
            self.cursor = frame["cursor"]
        return frame

    async def frames(self, count: int, timeout: float = FRAME_TIMEOUT) -> list[dict[str, Any]]:
        return [await self.next_frame(timeout) for _ in range(count)]

    async def expect_close(self, timeout: float = FRAME_TIMEOUT) -> tuple[int | None, str]:
        message = await asyncio.wait_for(self.ws.receive(), timeout)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), (
            message.type,
            message.data,
        )
        code = message.data if message.type == aiohttp.WSMsgType.CLOSE else self.ws.close_code
        return code, str(message.extra or "")

    async def close(self) -> None:
        await self.ws.close()


@pytest.fixture
async def client_factory(server: RunningServer) -> AsyncIterator[Any]:
    clients: list[Client] = []

    def make() -> Client:
        client = Client(server.endpoint)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A plain SQL session, like a DBA's psql: autocommit, no pgcast code involved."""
    conn = await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, application_name="psql"
    )
    yield conn
    await conn.close()


async def create_user(
    conn: psycopg.AsyncConnection[Any], email: str = "dba@example.com", name: str = "DBA"
) -> int:
    cursor = await conn.execute(
        "INSERT INTO users (email, name) VALUES (%s, %s) RETURNING id", [email, name]
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def count_rows(conn: psycopg.AsyncConnection[Any], table: str) -> int:
    cursor = await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])
