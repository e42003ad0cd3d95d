"""A socket the server closes is gone within a bound, whatever its peer does: stalled readers
closed with 1013, 4401, 1008, 1009 or by the heartbeat, and every socket on shutdown."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import signal
import socket
import statistics
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from aiohttp import web
from yarl import URL

from server.app import create_app
from server.config import Config
from server.keys import HUB, METRICS, SOCKET_HEARTBEAT_SECONDS, SOCKETS
from server.transports.native.handler import MAX_CLIENT_FRAME_BYTES
from server.transports.websocket import CLOSE_TIMEOUT_SECONDS
from tests.conftest import (
    FRAME_TIMEOUT,
    Client,
    Endpoint,
    RunningServer,
    Socket,
    create_user,
    server_config,
    start_server,
)
from tests.test_cli import cli_env
from tests.test_serve import start_serving, wait_until_ready

# The smallest backlog PGCAST_SOCKET_BACKLOG_BYTES allows, so stalled sockets pass it soon.
MIN_BACKLOG_BYTES = 64 * 1024
STALLED_READERS = 100
HEALTHY_READERS = 4
# Linux doubles it and keeps a floor of a few KB: the kernel holds little for a stalled peer.
STALLED_RCVBUF = 4096
MESSAGE_BYTES = 10_000
MESSAGES_PER_STATEMENT = 5
# The close is given CLOSE_TIMEOUT_SECONDS; the rest is room for a busy two-CPU machine.
GONE_WITHIN = CLOSE_TIMEOUT_SECONDS + 3.0
SAMPLE_INTERVAL = 0.05
# The README's promise for shutdown, and what a process gets to exit in past it.
SHUTDOWN_SECONDS = 10.0

# Short enough for a test to see a peer that stopped answering pings closed, and longer than
# filling a stalled reader's buffers takes.
SHORT_HEARTBEAT_SECONDS = 2.0


async def start_server_with_heartbeat(config: Config, heartbeat: float) -> RunningServer:
    app = create_app(config)
    app[SOCKET_HEARTBEAT_SECONDS] = heartbeat
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    await web.TCPSite(runner, config.host, config.port).start()
    return RunningServer(config, app, runner)


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked, unfragmented frame as a client sends it (RFC 6455 section 5.2)."""
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def send_upgrade(client: Client, rcvbuf: int | None = None) -> socket.socket:
    """Connect a raw TCP socket and send a WebSocket upgrade request with `client`'s cookie."""
    url = URL(client.server.url)
    cookie = client.http.cookie_jar.filter_cookies(url)["pgcast_session"]
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # Set before connecting, so the window the client announces stays this small.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(raw, (url.host, url.port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(
        raw,
        (
            f"GET /ws HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: {client.server.origin}\r\n"
            f"Cookie: pgcast_session={cookie.value}\r\n\r\n"
        ).encode(),
    )
    return raw


async def read_until(raw: socket.socket, marker: bytes) -> bytes:
    """Read from a raw socket until `marker` has arrived."""
    loop = asyncio.get_running_loop()
    received = b""
    async with asyncio.timeout(FRAME_TIMEOUT):
        while marker not in received:
            chunk = await loop.sock_recv(raw, 4096)
            assert chunk, received
            received += chunk
    return received


async def open_stalled_reader(client: Client) -> socket.socket:
    """A WebSocket client that completes the upgrade, reads the `connected` frame, and then
    never reads again (nor answers a ping)."""
    raw = await send_upgrade(client, STALLED_RCVBUF)
    # The server subscribes the socket before it sends `connected`.
    received = await read_until(raw, b'"connected"')
    assert received.startswith(b"HTTP/1.1 101"), received
    return raw


async def sees_end_of_connection(raw: socket.socket) -> None:
    """Read what the kernel still holds for this client until the server's FIN or RST."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            chunk = await loop.sock_recv(raw, 1 << 16)
        except ConnectionResetError:
            return
        if not chunk:
            return


async def eventually(condition: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    """Poll a condition that has no event of its own until it holds or `timeout` passes."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(SAMPLE_INTERVAL)
    return True


def stalled_transports(server: RunningServer) -> int:
    """Server connections still holding bytes their peer has not taken."""
    assert server.runner.server is not None
    return sum(
        1
        for handler in server.runner.server.connections
        if handler.transport is not None and handler.transport.get_write_buffer_size()
    )


async def fill_buffers_of_stalled_reader(
    db: psycopg.AsyncConnection[Any], user_id: int, steady: Socket
) -> None:
    """Broadcast far more than the kernel (4 MB at most, tcp_wmem) and aiohttp hold for a
    stalled client, and less than its backlog bound (8 MB by default): it stays open, its
    buffers full. Returns once `steady`, a client that reads, got all of it.

    The first statement is written to the stalled socket at once; what follows queues
    behind it, and the socket's backlog writer then waits for the stalled peer, as it does
    for a client that stops reading a live feed."""
    for messages in (600, MESSAGES_PER_STATEMENT):
        await db.execute(
            "INSERT INTO messages (user_id, content) "
            "SELECT %s, n || ':' || repeat('x', %s) FROM generate_series(1, %s) n",
            [user_id, MESSAGE_BYTES, messages],
        )
        for _ in range(messages):
            await steady.next_frame()


async def sign_out(client: Client) -> None:
    async with client.http.post(
        client.server.url + "/auth/logout",
        headers={"Origin": client.server.origin},
        allow_redirects=False,
    ) as response:
        assert response.status == 303


async def test_stalled_readers_closed_with_1013_are_gone_within_the_bound_and_others_keep_up(
    database_url: str, tmp_path: Path, unused_tcp_port: int, db: psycopg.AsyncConnection[Any]
) -> None:
    server = await start_server(
        server_config(
            database_url,
            tmp_path,
            unused_tcp_port,
            PGCAST_SOCKET_BACKLOG_BYTES=str(MIN_BACKLOG_BYTES),
            # The stalled user holds every slot it may: a new socket shows they were released.
            PGCAST_RATE_SOCKETS_PER_USER=str(STALLED_READERS),
        )
    )
    hub, registry = server.app[HUB], server.app[METRICS].registry
    staller, readers = Client(server.endpoint), Client(server.endpoint)
    stalled: list[socket.socket] = []
    sampling: asyncio.Task[None] | None = None
    try:
        await staller.sign_in("staller@example.com", "Staller")
        await readers.sign_in("reader@example.com", "Reader")
        healthy = [await readers.connect() for _ in range(HEALTHY_READERS)]
        stalled = [await open_stalled_reader(staller) for _ in range(STALLED_READERS)]
        assert len(hub) == HEALTHY_READERS + STALLED_READERS
        user_id = await create_user(db)
        loop = asyncio.get_running_loop()

        def closes_counted() -> int:
            return int(registry.get_sample_value("pgcast_slow_sockets_closed_total") or 0)

        # When the k-th 1013 was counted, and when the k-th stalled socket left the hub: if
        # each socket is gone within the bound of its own close, so is the k-th departure.
        closed_at: list[float] = []
        gone_at: list[float] = []

        def take_sample() -> None:
            now = loop.time()
            closed_at.extend([now] * (closes_counted() - len(closed_at)))
            gone = HEALTHY_READERS + STALLED_READERS - len(hub)
            gone_at.extend([now] * (gone - len(gone_at)))

        async def sample() -> None:
            while True:
                take_sample()
                await asyncio.sleep(SAMPLE_INTERVAL)

        sampling = asyncio.create_task(sample())
        process = psutil.Process()
        rss_before = process.memory_info().rss
        latencies: list[float] = []
        statements = 0
        while closes_counted() < STALLED_READERS:
            assert statements < 200, f"only {closes_counted()} stalled sockets were closed"
            first = statements * MESSAGES_PER_STATEMENT
            inserted_at = loop.time()
            await db.execute(
                "INSERT INTO messages (user_id, content) "
                "SELECT %s, (%s + n) || ':' || repeat('x', %s) FROM generate_series(1, %s) n",
                [user_id, first, MESSAGE_BYTES, MESSAGES_PER_STATEMENT],
            )
            statements += 1
            for reader in healthy:
                for n in range(first + 1, first + MESSAGES_PER_STATEMENT + 1):
                    frame = await reader.next_frame()
                    latencies.append(loop.time() - inserted_at)
                    assert frame["data"]["message"]["content"].startswith(f"{n}:")

        rss_at_last_close = process.memory_info().rss

        async def settled() -> bool:
            return len(hub) == HEALTHY_READERS and not stalled_transports(server)

        assert await eventually(settled, GONE_WITHIN), (
            f"{GONE_WITHIN} s after the last 1013: {len(hub)} sockets subscribed, "
            f"{stalled_transports(server)} connections with unsent bytes"
        )
        sampling.cancel()
        take_sample()
        late = [
            round(gone - closed, 2)
            for closed, gone in zip(closed_at, gone_at, strict=True)
            if gone - closed > GONE_WITHIN
        ]
        assert not late, f"stalled sockets outlived their close by {late} s"

        async def released() -> bool:
            # A handler ends once its socket's row is deleted (a write to the database),
            # which may come a moment after the socket left the hub.
            gc.collect()
            return len(server.app[SOCKETS]) == HEALTHY_READERS

        assert await eventually(released, GONE_WITHIN), len(server.app[SOCKETS])
        async with asyncio.timeout(GONE_WITHIN):
            await asyncio.gather(*(sees_end_of_connection(raw) for raw in stalled))
        # Every socket-limit slot of the stalled user was given back.
        await (await staller.connect()).close()

        # The readers that kept up still get every message, at once.
        await db.execute(
            "INSERT INTO messages (user_id, content) VALUES (%s, 'after the stall')", [user_id]
        )
        for reader in healthy:
            frame = await reader.next_frame()
            assert frame["data"]["message"]["content"] == "after the stall"
        p99 = statistics.quantiles(latencies, n=100)[98]
        # The test process's RSS (server and clients together; the allocator keeps some).
        rss = [rss_before, rss_at_last_close, process.memory_info().rss]
        print(
            f"\n{STALLED_READERS} stalled readers closed after {statements} statements; "
            f"readers that kept up: p99 insert-to-receive {p99 * 1000:.1f} ms "
            f"over {len(latencies)} frames; RSS before, at the last close, after: "
            + ", ".join(f"{value / 2**20:.0f} MB" for value in rss)
        )
    finally:
        if sampling is not None:
            sampling.cancel()
        for raw in stalled:
            raw.close()
        await staller.close()
        await readers.close()
        await server.runner.cleanup()


async def test_shutdown_finishes_within_its_bound_while_a_client_has_stopped_reading(
    database_url: str, tmp_path: Path, unused_tcp_port: int, db: psycopg.AsyncConnection[Any]
) -> None:
    env = cli_env(database_url, tmp_path, PGCAST_PORT=str(unused_tcp_port))
    endpoint = Endpoint(f"http://127.0.0.1:{unused_tcp_port}")
    process = await start_serving(env)
    assert process.stderr is not None
    staller, reader = Client(endpoint), Client(endpoint)
    stalled: socket.socket | None = None
    try:
        await wait_until_ready(endpoint.url)
        await staller.sign_in("staller@example.com", "Staller")
        await reader.sign_in("reader@example.com", "Reader")
        stalled = await open_stalled_reader(staller)
        steady = await reader.connect()
        user_id = await create_user(db)
        await fill_buffers_of_stalled_reader(db, user_id, steady)

        loop = asyncio.get_running_loop()
        stopping_at = loop.time()
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(SHUTDOWN_SECONDS):
            code, _ = await steady.expect_close()
            await process.stderr.read()
            exit_code = await process.wait()
        print(f"\nshutdown with a stalled reader took {loop.time() - stopping_at:.2f} s")
        assert code == 1001
        assert exit_code == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if stalled is not None:
            stalled.close()
        await staller.close()
        await reader.close()


@pytest.mark.parametrize(
    "reason", ["4401 signed out", "1008 text frame", "1009 oversized", "heartbeat"]
)
async def test_a_stalled_reader_is_gone_within_the_bound_whatever_closes_it(
    database_url: str,
    tmp_path: Path,
    unused_tcp_port: int,
    db: psycopg.AsyncConnection[Any],
    reason: str,
) -> None:
    config = server_config(database_url, tmp_path, unused_tcp_port)
    heartbeat = SHORT_HEARTBEAT_SECONDS if reason == "heartbeat" else 60.0
    server = await start_server_with_heartbeat(config, heartbeat)
    hub = server.app[HUB]
    staller, reader = Client(server.endpoint), Client(server.endpoint)
    stalled: socket.socket | None = None
    still_served: asyncio.Task[dict[str, Any]] | None = None
    try:
        await staller.sign_in("staller@example.com", "Staller")
        await reader.sign_in("reader@example.com", "Reader")
        steady = await reader.connect()
        user_id = await create_user(db)
        # Opened last: the heartbeat counts from here.
        stalled = await open_stalled_reader(staller)
        await fill_buffers_of_stalled_reader(db, user_id, steady)

        async def aiohttp_holds_unsent_bytes() -> bool:
            return stalled_transports(server) == 1

        # The kernel's buffers for the stalled client are full, and aiohttp holds more.
        assert await eventually(aiohttp_holds_unsent_bytes, FRAME_TIMEOUT)
        assert len(hub) == 2
        # The steady client answers pings only while it reads.
        still_served = asyncio.create_task(steady.next_frame(timeout=30))

        loop = asyncio.get_running_loop()
        if reason == "4401 signed out":
            await sign_out(staller)
        elif reason == "1008 text frame":
            await loop.sock_sendall(stalled, client_frame(0x1, b'{"event": "subscribe"}'))
        elif reason == "1009 oversized":
            oversized = MAX_CLIENT_FRAME_BYTES * 4
            await loop.sock_sendall(stalled, client_frame(0x1, b"x" * oversized))
        closing_at = loop.time()
        # The heartbeat gives up on a peer after one ping interval and half of one more.
        bound = GONE_WITHIN + (heartbeat * 1.5 if reason == "heartbeat" else 0.0)

        async def only_the_steady_socket_left() -> bool:
            return len(hub) == 1 and not stalled_transports(server)

        assert await eventually(only_the_steady_socket_left, bound), (
            f"{reason}: {len(hub)} sockets subscribed, "
            f"{stalled_transports(server)} connections with unsent bytes after {bound} s"
        )
        async with asyncio.timeout(GONE_WITHIN):
            await sees_end_of_connection(stalled)
        print(f"\n{reason}: gone after {loop.time() - closing_at:.2f} s")
        await db.execute(
            "INSERT INTO messages (user_id, content) VALUES (%s, 'still served')", [user_id]
        )
        assert (await still_served)["data"]["message"]["content"] == "still served"
    finally:
        if still_served is not None:
            still_served.cancel()
        if stalled is not None:
            stalled.close()
        await staller.close()
        await reader.close()
        await server.runner.cleanup()


def frames_of(received: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The complete unmasked frames (opcode, payload) at the start of `received`; the rest."""
    frames: list[tuple[int, bytes]] = []
    while len(received) >= 2:
        length, start = received[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(received[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(received[2:10], "big"), 10
        if len(received) < start + length:
            break
        frames.append((received[0] & 0x0F, received[start : start + length]))
        received = received[start + length :]
    return frames, received


def server_frames(received: bytes) -> tuple[list[bytes], bytes]:
    """The payloads of the complete unmasked frames at the start of `received`; the rest."""
    frames, rest = frames_of(received)
    return [payload for _, payload in frames], rest


async def test_a_reader_that_stalls_and_comes_back_gets_every_frame_whole_and_in_order(
    server: RunningServer, client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    """Frames the kernel took only part of: the rest waits in the transport, later frames
    queue behind it, and the reader gets them all once it reads again."""
    client = client_factory()
    await client.sign_in("comeback@example.com", "Comeback")
    raw = await send_upgrade(client, STALLED_RCVBUF)
    try:
        received = await read_until(raw, b'"connected"')
        received = received[received.index(b"\r\n\r\n") + 4 :]
        user_id = await create_user(db)
        for first in (1, 301):
            await db.execute(
                "INSERT INTO messages (user_id, content) "
                "SELECT %s, n || ':' || repeat('x', %s) FROM generate_series(%s::int, %s::int) n",
                [user_id, MESSAGE_BYTES, first, first + 299],
            )

        async def has_backlog() -> bool:
            return stalled_transports(server) > 0

        assert await eventually(has_backlog, FRAME_TIMEOUT)
        contents: list[str] = []
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(FRAME_TIMEOUT * 3):
            while len(contents) < 600:
                chunk = await loop.sock_recv(raw, 1 << 16)
                assert chunk, f"closed after {len(contents)} frames"
                frames, received = server_frames(received + chunk)
                for frame in frames:
                    data = json.loads(frame)
                    if data["event"] == "new-message":
                        contents.append(data["data"]["message"]["content"])
        assert contents == [f"{n}:{'x' * MESSAGE_BYTES}" for n in range(1, 601)]
    finally:
        raw.close()
