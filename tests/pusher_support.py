"""Real Pusher clients for the tests: Laravel Echo over pusher-js under Node
(tests/node/driver.mjs), one process per client, and a raw protocol socket for what no
well-behaved client sends."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest

from server.config import Config
from tests.conftest import FRAME_TIMEOUT, Client, RunningServer

NODE_DIR = Path(__file__).resolve().parent / "node"
Record = dict[str, Any]


def node_available() -> None:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "pusher-js").is_dir():
        pytest.fail("run `npm ci` in tests/node (make test does) to get pusher-js and laravel-echo")


class Served(Protocol):
    """A pgcast to point clients at: a server in the test's process, or a `pgcast serve`."""

    @property
    def url(self) -> str: ...

    @property
    def config(self) -> Config: ...


class EchoClient:
    """One Laravel Echo client in a Node process of its own."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.seen: list[Record] = []
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        self.socket_id = ""

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            record = json.loads(line)
            if record.get("type") == "state" and record.get("current") == "connected":
                self.socket_id = record["socket_id"]
            self.seen.append(record)
            self._arrived.set()

    def send(self, op: str, **fields: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())

    async def wait_for(
        self, match: Callable[[Record], bool], timeout: float = FRAME_TIMEOUT, start: int = 0
    ) -> Record:
        """The first record from `start` on that matches, waiting for it to arrive."""
        async with asyncio.timeout(timeout):
            position = start
            while True:
                while position < len(self.seen):
                    record = self.seen[position]
                    position += 1
                    if match(record):
                        return record
                if self._reader.done():
                    raise AssertionError(f"the Node client ended; it saw {self.seen[-5:]}")
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_count(
        self, match: Callable[[Record], bool], count: int, timeout: float = FRAME_TIMEOUT
    ) -> list[Record]:
        async with asyncio.timeout(timeout):
            while True:
                found = [record for record in self.seen if match(record)]
                if len(found) >= count:
                    return found
                if self._reader.done():
                    raise AssertionError(f"the Node client ended; it saw {self.seen[-5:]}")
                self._arrived.clear()
                await self._arrived.wait()

    async def connected(self, timeout: float = FRAME_TIMEOUT) -> str:
        await self.wait_for(
            lambda r: r.get("type") == "state" and r["current"] == "connected", timeout
        )
        return self.socket_id

    async def settle(self) -> None:
        """Wait until the client has handled everything sent to it so far."""
        marker = os.urandom(4).hex()
        self.send("ping", id=marker)
        await self.wait_for(lambda r: r.get("type") == "pong" and r["id"] == marker)

    async def signed_in(self, timeout: float = FRAME_TIMEOUT) -> Record:
        """Wait until pusher-js has signed in and subscribed its #server-to-user channel."""
        async with asyncio.timeout(timeout):
            while True:
                start = len(self.seen)
                self.send("userState")
                state = await self.wait_for(lambda r: r.get("type") == "user_state", start=start)
                if state["subscribed"]:
                    return state
                await asyncio.sleep(0.05)

    def events(self, channel: str | None = None, event: str | None = None) -> list[Record]:
        return [
            record
            for record in self.seen
            if record.get("type") == "event"
            and (channel is None or record["channel"] == channel)
            and (event is None or record["event"] == event)
        ]

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ConnectionError):
                self.send("exit")
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


async def start_echo(
    server: Served,
    cookie: str = "",
    resume: bool = False,
    signing_secret: str = "",
) -> EchoClient:
    node_available()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PGCAST_URL": server.url,
        "PUSHER_KEY": server.config.pusher.key,
        "COOKIE": cookie,
        "RESUME": "1" if resume else "0",
        "SIGNING_SECRET": signing_secret,
        "PUSHER_DEBUG": os.environ.get("PUSHER_DEBUG", ""),
    }
    process = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "driver.mjs"),
        cwd=NODE_DIR,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=16 * 1024 * 1024,
    )
    client = EchoClient(process)
    await client.wait_for(lambda r: r.get("type") == "ready")
    return client


async def broadcast(db: Any, channel: str, event: str, data: Any) -> None:
    """What any SQL client does to broadcast: one row of `broadcasts`."""
    await db.execute(
        "INSERT INTO broadcasts (channel, event, data) VALUES (%s, %s, %s)",
        [channel, event, json.dumps(data)],
    )


def signed(server: RunningServer, text: str) -> str:
    """What a backend holding the app secret signs (Pusher's reference, computed here
    rather than with pgcast's own helpers)."""
    pusher = server.config.pusher
    digest = hmac.new(pusher.secret.value.encode(), text.encode(), hashlib.sha256).hexdigest()
    return f"{pusher.key}:{digest}"


def cookie_of(client: Client) -> str:
    """The Cookie header a browser signed in as `client` would send."""
    return "; ".join(f"{morsel.key}={morsel.value}" for morsel in client.http.cookie_jar)


@contextlib.asynccontextmanager
async def echo_clients(server: RunningServer) -> AsyncIterator[Callable[..., Any]]:
    """Start Echo clients with `await start(...)`; all of them are closed afterwards."""
    started: list[EchoClient] = []

    async def start(**options: Any) -> EchoClient:
        client = await start_echo(server, **options)
        started.append(client)
        return client

    try:
        yield start
    finally:
        await asyncio.gather(*(client.close() for client in started))


class RawPusher:
    """A bare protocol-7 socket: frames as sent and received, nothing interpreted."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.socket_id = ""

    async def next(self, timeout: float = FRAME_TIMEOUT) -> Record:
        message = await self.ws.receive(timeout=timeout)
        assert message.type == aiohttp.WSMsgType.TEXT, (message.type, message.data, message.extra)
        frame: Record = json.loads(message.data)
        return frame

    async def next_event(self, event: str, timeout: float = FRAME_TIMEOUT) -> Record:
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next(timeout)
                if frame["event"] == event:
                    return frame

    async def send(self, event: str, data: Any = None, channel: str | None = None) -> None:
        frame: Record = {"event": event, "data": {} if data is None else data}
        if channel is not None:
            frame["channel"] = channel
        await self.ws.send_str(json.dumps(frame))

    async def subscribe(self, channel: str, **fields: Any) -> Record:
        await self.send("pusher:subscribe", {"channel": channel, **fields})
        return await self.next()

    async def expect_close(self, timeout: float = FRAME_TIMEOUT) -> tuple[int | None, str]:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.ws.receive()
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    code = (
                        message.data
                        if message.type == aiohttp.WSMsgType.CLOSE
                        else self.ws.close_code
                    )
                    return code, str(message.extra or "")

    async def close(self) -> None:
        await self.ws.close()


def app_url(
    server: RunningServer,
    key: str | None = None,
    query: str = "protocol=7&client=js&version=8.6.0&flash=false",
) -> str:
    return (
        server.url.replace("http://", "ws://") + f"/app/{key or server.config.pusher.key}?{query}"
    )


async def raw_pusher(
    http: aiohttp.ClientSession, server: RunningServer, headers: dict[str, str] | None = None
) -> RawPusher:
    ws = await http.ws_connect(app_url(server), headers=headers or {"Origin": server.origin})
    socket = RawPusher(ws)
    established = await socket.next()
    assert established["event"] == "pusher:connection_established", established
    socket.socket_id = json.loads(established["data"])["socket_id"]
    return socket
