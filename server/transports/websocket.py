"""The aiohttp WebSocket plumbing every protocol shares: writing frames the codecs encoded
(once per event), a writer task for a socket with a backlog, carrying out the closes the
hub asks for, and closing every socket on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Self

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from server.core.hub import Connection, DirectWriter
from server.metrics import Metrics

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30.0
GOING_AWAY = 1001
# How long a closing socket's peer gets to take what is still unsent and the close frame,
# whoever closes it and why; then its connection is dropped (RST) and its buffers freed.
CLOSE_TIMEOUT_SECONDS = 2.0
# SO_LINGER on, with no time: closing the socket resets the connection and discards what the
# kernel still holds for a peer that stopped reading, instead of trying to deliver it.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class BoundedWebSocket(web.WebSocketResponse):
    """A WebSocketResponse whose every close ends with the connection gone within
    CLOSE_TIMEOUT_SECONDS, whatever the peer does.

    aiohttp's own `close` waits without a bound for a peer that stopped reading to take the
    close frame, and only ever closes the transport gracefully, which waits for that peer
    too. Overriding `close` covers every caller: pgcast's closes, aiohttp's own (an oversized
    or malformed frame, the peer's close frame, `write_eof` after the handler returns) and
    shutdown.
    """

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        # The request and stream aiohttp keeps from `prepare` (WebSocketResponse never lets
        # them go). Attributes of our own would grow every socket's instance dict, which
        # aiohttp's fill to the brim: over a kilobyte per idle socket.
        request, stream = self._req, self._payload_writer
        transport = None if request is None else request.transport
        if transport is not None:
            # With no high-water mark, draining waits until everything, the close frame
            # too, has reached the kernel, not just until the buffer is below the mark.
            transport.set_write_buffer_limits(high=0)
        task = asyncio.current_task()
        cancelled_before = 0 if task is None else task.cancelling()
        closed = True
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                closed = await super().close(code=code, message=message, drain=drain)
                if stream is not None:
                    await stream.drain()
        except (TimeoutError, ConnectionError):
            pass
        except asyncio.CancelledError:
            if task is None or task.cancelling() > cancelled_before:
                raise
            # Not this task's cancellation: aiohttp shares one drain future between every
            # writer of a connection, and a writer cancelled while it waited cancelled it
            # for all. The close failed; the connection is dropped below.
        finally:
            # `closed` is False when the socket was closed before: if that close is still
            # under way (the transport still open), it is bounded on its own.
            if transport is not None and (closed or transport.is_closing()):
                _drop_unless_sent(transport)
        return closed


def _drop_unless_sent(transport: asyncio.Transport) -> None:
    """Drop a connection unless it was closed with nothing left to send: its peer had its
    chance to take what is left."""
    if transport.is_closing() and not transport.get_write_buffer_size():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
    transport.abort()


class WireWriter(DirectWriter):
    """Writes frames encoded once per event (server/wire.py) straight to the connection:
    everything a socket has queued goes out in one system call, with aiohttp's own flow
    control (`drain` waits while the kernel's send buffer is full)."""

    __slots__ = ("_fd", "_stream", "_transport", "_ws")

    def __init__(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        stream: AbstractStreamWriter,
    ) -> None:
        self._ws = ws
        self._stream = stream
        # Taken once: the hub writes to every socket on every broadcast. A connection that
        # is lost keeps this transport object, closing.
        self._transport = transport = request.transport
        self._fd = _plain_socket_of(transport)

    def _open_transport(self) -> asyncio.Transport | None:
        transport = self._transport
        # Once aiohttp has sent a close frame no data frame may follow it (RFC 6455 5.5.1).
        if self._ws.closed or transport is None or transport.is_closing():
            return None
        return transport

    async def write(self, frames: Sequence[bytes]) -> None:
        transport = self._open_transport()
        if transport is None:
            raise ConnectionResetError("socket closed")
        transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        if transport.get_write_buffer_size():
            # Shielded: aiohttp shares one drain future between every writer of a
            # connection, `ws.close()` among them. Cancelling this task (to close the
            # socket) while it waited here would cancel that future for all of them.
            await asyncio.shield(self._stream.drain())

    def write_now(self, frames: bytes) -> bool:
        """The hub's fast path: write at once unless earlier bytes still wait for the kernel
        (then the socket's own task writes them in order, waiting for the peer to read)."""
        return not self.write_each((self,), frames)

    @classmethod
    def write_each(cls, writers: Sequence[Self], frames: bytes) -> list[int]:
        """`write_now` to every writer in one loop: a broadcast to a channel's sockets calls
        no Python function per socket, only the transport's methods and the system call
        (bench/profile.md)."""
        refused: list[int] = []
        size = len(frames)
        write = os.write
        for position, writer in enumerate(writers):
            transport = writer._transport
            # Once aiohttp has sent a close frame no data frame may follow it (RFC 6455
            # 5.5.1); bytes still in the transport's buffer must go out first. `_closed`
            # is what aiohttp's `closed` property returns: read as an attribute, it costs no
            # Python call per socket (bench/profile.md; tests/test_wire_writer.py checks it).
            if (
                writer._ws._closed
                or transport is None
                or transport.is_closing()
                or transport.get_write_buffer_size()
            ):
                refused.append(position)
                continue
            # Straight to the socket: uvloop's `write` does its buffer's bookkeeping around
            # the same system call, about half a microsecond per socket (bench/profile.md).
            # The transport is open, so the descriptor is still this connection's.
            fd = writer._fd
            sent = 0
            if fd >= 0:
                try:
                    sent = write(fd, frames)
                except OSError:
                    # The kernel's buffer is full, or the connection broke: the transport
                    # writes the frames later, or finds the break and closes.
                    sent = 0
            if sent < size:
                transport.write(frames[sent:] if sent else frames)
        return refused


def _plain_socket_of(transport: asyncio.Transport | None) -> int:
    """The descriptor of a transport's socket when bytes written to it go to the peer as
    they are (no TLS); -1 otherwise."""
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return -1
    sock = transport.get_extra_info("socket")
    return -1 if sock is None else int(sock.fileno())


class BacklogWriter:
    """Writes what a live socket has queued, in a task started only when it has a backlog.

    Live frames normally go straight from the hub to the connection (`write_now`); they are
    queued only while earlier bytes still wait for the kernel. An idle socket then holds no
    task of its own, and a lagging one holds one until it has caught up.
    """

    __slots__ = ("_connection", "_metrics", "_task", "_wire")

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
    ws: web.WebSocketResponse, code: int, reason: str, stop_delivery: Callable[[], None]
) -> None:
    """Carry out a close the hub asked for (slow consumer, signed out, forbidden, a refused
    cursor).

    Delivery may be stuck waiting for a peer that stopped reading, so it is stopped first;
    BoundedWebSocket drops the connection if even the close frame cannot be sent in time.
    """
    stop_delivery()
    await ws.close(code=code, message=reason.encode())


async def close_all_sockets(sockets: set[web.WebSocketResponse]) -> None:
    """On shutdown: tell every client we are going away (1001), all at once; each close
    takes CLOSE_TIMEOUT_SECONDS at most (BoundedWebSocket)."""
    await asyncio.gather(
        *(ws.close(code=GOING_AWAY, message=b"server shutting down") for ws in set(sockets)),
        return_exceptions=True,
    )
