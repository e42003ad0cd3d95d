"""The aiohttp WebSocket plumbing every protocol shares: writing frames the codecs encoded
(once per event), a writer task for a socket with a backlog, carrying out the closes the
hub asks for, and closing every socket on shutdown."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Sequence

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from server.core.hub import Connection
from server.metrics import Metrics

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30.0
# Unsent bytes left behind by a finished socket mean its peer stopped reading.
ABANDONED_WRITE_BUFFER_BYTES = 64 * 1024
CLOSE_TIMEOUT_SECONDS = 2.0
GOING_AWAY = 1001


class WireWriter:
    """Writes frames encoded once per event (server/wire.py) straight to the connection:
    everything a socket has queued goes out in one system call, with aiohttp's own flow
    control (`drain` waits while the kernel's send buffer is full)."""

    def __init__(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        stream: AbstractStreamWriter,
    ) -> None:
        self._request = request
        self._ws = ws
        self._stream = stream

    def _open_transport(self) -> asyncio.Transport | None:
        transport = self._request.transport
        # Once aiohttp has sent a close frame no data frame may follow it (RFC 6455 5.5.1).
        if self._ws.closed or transport is None or transport.is_closing():
            return None
        return transport

    async def write(self, frames: Sequence[bytes]) -> None:
        transport = self._open_transport()
        if transport is None:
            raise ConnectionResetError("socket closed")
        transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        await self._stream.drain()

    def write_now(self, frames: list[bytes]) -> bool:
        """The hub's fast path: write at once unless earlier bytes still wait for the kernel
        (then the socket's own task writes them in order, waiting for the peer to read)."""
        transport = self._open_transport()
        if transport is None or transport.get_write_buffer_size():
            return False
        transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        return True


class BacklogWriter:
    """Writes what a live socket has queued, in a task started only when it has a backlog.

    Live frames normally go straight from the hub to the connection (`write_now`); they are
    queued only while earlier bytes still wait for the kernel. An idle socket then holds no
    task of its own, and a lagging one holds one until it has caught up.
    """

    def __init__(self, wire: WireWriter, connection: Connection, metrics: Metrics) -> None:
        self._wire = wire
        self._connection = connection
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write_backlog())

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def tasks(self) -> list[asyncio.Task[None]]:
        return [] if self._task is None else [self._task]

    async def _write_backlog(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frames, woke_at = self._connection.take_queued()
            if not frames:
                return
            if woke_at is not None:
                self._metrics.notify_to_send_seconds.observe(loop.time() - woke_at)
            try:
                await self._wire.write(frames)
            except ConnectionError:
                # The socket is gone; its handler is finishing and unsubscribes it.
                return


async def close_as_asked(
    request: web.Request,
    ws: web.WebSocketResponse,
    code: int,
    reason: str,
    stop_delivery: Callable[[], None],
) -> None:
    """Carry out a close the hub asked for (slow consumer, signed out, forbidden).

    Delivery may be stuck waiting for a peer that stopped reading, so it is stopped
    first; if even the close frame cannot be sent in time, the connection is dropped.
    """
    stop_delivery()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
            await ws.close(code=code, message=reason.encode())
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()


def drop_if_abandoned(request: web.Request) -> None:
    # A peer that stopped reading (the heartbeat gave up on it, say) would otherwise keep
    # its connection and buffers until it reads again, which may be never.
    transport = request.transport
    if transport is not None and transport.get_write_buffer_size() > ABANDONED_WRITE_BUFFER_BYTES:
        transport.abort()


async def close_all_sockets(sockets: weakref.WeakSet[web.WebSocketResponse]) -> None:
    """On shutdown: tell every client we are going away (1001), all at once."""
    await asyncio.gather(
        *(ws.close(code=GOING_AWAY, message=b"server shutting down") for ws in set(sockets)),
        return_exceptions=True,
    )
