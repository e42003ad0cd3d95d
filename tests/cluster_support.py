"""Several `pgcast serve` processes against one database, as separate commands on ports of
their own: what a deployment of more than one pgcast looks like to its clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pusher

from tests.conftest import Client, Endpoint
from tests.pusher_support import RawPusher, Record
from tests.test_cli import PGCAST, cli_env

STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
_SERVING = re.compile(r"pgcast serving (http://\S+) ")
# Every process of a test gets the same Pusher app, as a deployment's processes do.
PUSHER_APP_ID = "4242"
PUSHER_KEY = "cluster-key"
PUSHER_SECRET = "cluster-secret-0123456789"


@dataclass
class ServeProcess:
    """One `pgcast serve` child: where it answers, and what it logged."""

    process: asyncio.subprocess.Process
    endpoint: Endpoint
    lines: list[str] = field(default_factory=list)
    drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return self.endpoint.url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def client(self) -> Client:
        return Client(self.endpoint)

    async def fresh_client(self) -> Client:
        """A client making one TCP connection per request, as many clients would (so
        `--workers` spreads its requests over its processes)."""
        client = Client(self.endpoint)
        await client.http.close()
        client.http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(force_close=True),
        )
        return client

    def sdk(self) -> pusher.Pusher:
        """Pusher's own server SDK, pointed at this process."""
        return pusher.Pusher(
            app_id=PUSHER_APP_ID,
            key=PUSHER_KEY,
            secret=PUSHER_SECRET,
            ssl=False,
            host="127.0.0.1",
            port=self.port,
        )

    async def raw_pusher(self, http: aiohttp.ClientSession) -> tuple[RawPusher, Record]:
        """A bare protocol-7 socket on this process, with `http`'s cookies, and the first
        frame it got: `pusher:connection_established`, or the error it was refused with."""
        url = self.url.replace("http://", "ws://") + f"/app/{PUSHER_KEY}?protocol=7"
        socket = RawPusher(await http.ws_connect(url, headers={"Origin": self.endpoint.origin}))
        first = await socket.next()
        if first["event"] == "pusher:connection_established":
            socket.socket_id = json.loads(first["data"])["socket_id"]
        return socket, first

    def log_tail(self) -> str:
        return "".join(self.lines[-30:])

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        finally:
            await self._drained()

    async def kill(self) -> None:
        """SIGKILL: the process gets no chance to tidy up after itself."""
        if self.process.returncode is None:
            self.process.kill()
        await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        await self._drained()

    async def _drained(self) -> None:
        if self.drain is not None:
            await asyncio.wait_for(asyncio.gather(self.drain, return_exceptions=True), 5)


async def _keep_reading(stream: asyncio.StreamReader, lines: list[str]) -> None:
    # A full pipe would block the child's logging, and so the child.
    async for line in stream:
        lines.append(line.decode(errors="replace"))


async def start_pgcast(
    database_url: str, data_dir: Path, *args: str, serving: int = 1, **settings: str
) -> ServeProcess:
    """`pgcast serve --no-migrate ARGS` on a free port (PGCAST_PORT=0), once `serving`
    processes of it serve (one per worker with `--workers`)."""
    env = cli_env(
        database_url,
        data_dir,
        PGCAST_PORT="0",
        PGCAST_PUSHER_APP_ID=PUSHER_APP_ID,
        PGCAST_PUSHER_KEY=PUSHER_KEY,
        PGCAST_PUSHER_SECRET=PUSHER_SECRET,
        **settings,
    )
    process = await asyncio.create_subprocess_exec(
        *PGCAST, "serve", "--no-migrate", *args, env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    lines: list[str] = []
    urls: set[str] = set()
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while serving:
                line = (await process.stderr.readline()).decode(errors="replace")
                assert line, "pgcast serve exited before serving:\n" + "".join(lines[-20:])
                lines.append(line)
                found = _SERVING.search(line)
                if found is not None:
                    urls.add(found.group(1))
                    serving -= 1
    except BaseException:
        process.kill()
        await process.wait()
        raise
    [url] = urls
    served = ServeProcess(process, Endpoint(url), lines)
    served.drain = asyncio.create_task(_keep_reading(process.stderr, lines))
    return served


@contextlib.asynccontextmanager
async def pgcast_processes(
    database_url: str, data_dir: Path, count: int = 3, **settings: str
) -> AsyncIterator[list[ServeProcess]]:
    """`count` separate `pgcast serve` commands sharing one database and one data dir (so
    one session key and one set of Pusher credentials), each on a port of its own."""
    started = await asyncio.gather(
        *(start_pgcast(database_url, data_dir, **settings) for _ in range(count)),
        return_exceptions=True,
    )
    processes = [p for p in started if isinstance(p, ServeProcess)]
    try:
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        yield processes
    finally:
        await asyncio.gather(*(p.stop() for p in processes), return_exceptions=True)


async def signed_in_everywhere(
    processes: list[ServeProcess], email: str, name: str
) -> tuple[list[Client], int]:
    """One client per process, each signed in there as the same person (dev login upserts
    the user by e-mail), so each sends the Origin of the process it talks to; and the
    person's user id."""
    clients = [p.client() for p in processes]
    ids = {int((await client.sign_in(email, name))["user"]["id"]) for client in clients}
    [user_id] = ids
    return clients, user_id


async def eventually(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll `condition` until it holds (for state that announces no event to wait on)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.05)


async def close_all(clients: list[Client]) -> None:
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


def close_sdk(client: pusher.Pusher) -> None:
    # The requests backend keeps a session per client; close it, or its sockets leak.
    client._pusher_client.http.session.close()
    client._authentication_client.http.session.close()
