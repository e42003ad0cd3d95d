"""`GET /ws`: one socket per client; replay after its cursor, then live broadcasts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import struct
from collections.abc import Callable, Sequence

import psycopg
from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

from server.auth import Principal, is_same_origin, require_user
from server.cursor import Cursor, CursorError
from server.errors import ApiError
from server.eventlog import PageRows, current_position, read_rows, resumable_position
from server.hub import SIGNED_OUT_CLOSE, SLOW_CONSUMER_CLOSE, Subscription
from server.keys import (
    DATABASE_ID,
    HUB,
    METRICS,
    POOL,
    SOCKET_HEARTBEAT_SECONDS,
    SOCKET_LIMITER,
    SOCKETS,
)
from server.metrics import Metrics
from server.protocol import connected_frame

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30.0
# A replay reads pages of REPLAY_PAGE_SIZE events (fewer pages: less planning and fewer round
# trips; smaller ones left PostgreSQL the slower side) and reads the next while it frames this
# one. Framing holds the event loop, so it frames and writes REPLAY_FRAMES_PER_WRITE events at
# a time with a yield in between, and a long replay never delays every other socket for long:
# the longest stretch measured was ~1.3 ms of CPU, mostly psycopg loading a page's rows.
REPLAY_PAGE_SIZE = 1000
REPLAY_FRAMES_PER_WRITE = 100
# Clients send nothing but control frames; anything else is refused, so this stays small.
MAX_CLIENT_FRAME_BYTES = 4096

CURSOR_REFUSED = 4400
UNSUPPORTED_DATA = 1003
POLICY_VIOLATION = 1008
GOING_AWAY = 1001
TRY_AGAIN_LATER = 1013
# How long a closing socket's peer gets to take what is still unsent and the close frame,
# whoever closes it and why; then its connection is dropped (RST) and its buffers freed.
CLOSE_TIMEOUT_SECONDS = 2.0
# SO_LINGER on, with no time: closing the socket resets the connection and discards what the
# kernel still holds for a peer that stopped reading, instead of trying to deliver it.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    if request.headers.get("Origin") is not None and not is_same_origin(request):
        raise ApiError(403, "cross_site_request", "WebSocket from another site refused")
    principal = await require_user(request)
    with request.app[SOCKET_LIMITER].hold(principal.user.id, request.remote or ""):
        return await _serve_socket(request, principal)


async def _serve_socket(request: web.Request, principal: Principal) -> web.WebSocketResponse:
    ws = BoundedWebSocket(
        heartbeat=request.app.get(SOCKET_HEARTBEAT_SECONDS, HEARTBEAT_SECONDS),
        compress=False,
        max_msg_size=MAX_CLIENT_FRAME_BYTES,
    )
    try:
        stream = await ws.prepare(request)
    except ConnectionError:
        # Returned unprepared, it is one aiohttp cannot send either: it then logs only the
        # access line, as for any client that left before its response.
        log.info("socket closed before the upgrade: the client left")
        return ws
    request.app[SOCKETS].add(ws)
    wire = WireWriter(request, ws, stream)

    socket_id = secrets.token_urlsafe(12)
    hub = request.app[HUB]
    # Subscribe before taking the snapshot the socket starts from: every broadcast the
    # snapshot missed is then guaranteed to reach this subscription (docs/delivery.md).
    subscription = hub.subscribe(socket_id, principal.user.id, principal.session_id)
    # A timer, not a task: the session's end is known now, and most sockets never see it.
    expiry: asyncio.TimerHandle | None = None
    if principal.session_seconds_left is not None:
        expiry = asyncio.get_running_loop().call_later(
            principal.session_seconds_left,
            subscription.close,
            SIGNED_OUT_CLOSE,
            "session expired",
        )
    try:
        metrics = request.app[METRICS]
        backlog = BacklogWriter(wire, subscription, metrics)
        delivery = asyncio.create_task(_deliver(request, ws, wire, subscription, backlog))
        closing: list[asyncio.Task[None]] = []

        def stop_delivery() -> None:
            delivery.cancel()
            backlog.cancel()

        subscription.when_close_requested(
            lambda: closing.append(
                asyncio.create_task(_close_as_asked(ws, subscription, metrics, stop_delivery))
            )
        )
        try:
            await _read_until_closed(ws)
        finally:
            stop_delivery()
            # Let an asked-for close finish (BoundedWebSocket.close bounds it).
            await asyncio.gather(delivery, *backlog.tasks(), *closing, return_exceptions=True)
    finally:
        if expiry is not None:
            expiry.cancel()
        hub.unsubscribe(subscription)
    # However the socket ended (the heartbeat gave up on it, say), aiohttp now calls `close`
    # once more: a peer that stopped reading loses its connection there, within the bound.
    return ws


class BoundedWebSocket(web.WebSocketResponse):
    """A WebSocketResponse whose every close ends with the connection gone within
    CLOSE_TIMEOUT_SECONDS, whatever the peer does.

    aiohttp's own `close` waits without a bound for a peer that stopped reading to take the
    close frame, and only ever closes the transport gracefully, which waits for that peer
    too. Overriding `close` covers every caller: pgcast's closes, aiohttp's own (an oversized
    or malformed frame, the peer's close frame, `write_eof` after the handler returns) and
    shutdown.
    """

    _closing_request: web.BaseRequest | None = None
    _closing_stream: AbstractStreamWriter | None = None

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter:
        self._closing_request = request
        self._closing_stream = await super().prepare(request)
        return self._closing_stream

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        request, stream = self._closing_request, self._closing_stream
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
        if transport.get_write_buffer_size():
            # Shielded: aiohttp shares one drain future between every writer of a
            # connection, `ws.close()` among them. Cancelling this task (to close the
            # socket) while it waited here would cancel that future for all of them.
            await asyncio.shield(self._stream.drain())

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

    def __init__(self, wire: WireWriter, subscription: Subscription, metrics: Metrics) -> None:
        self._wire = wire
        self._subscription = subscription
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
            frames, woke_at = self._subscription.take_queued()
            if not frames:
                return
            if woke_at is not None:
                self._metrics.notify_to_send_seconds.observe(loop.time() - woke_at)
            try:
                await self._wire.write(frames)
            except ConnectionError:
                # The socket is gone; its handler is finishing and unsubscribes it.
                return


async def _deliver(
    request: web.Request,
    ws: web.WebSocketResponse,
    wire: WireWriter,
    subscription: Subscription,
    backlog: BacklogWriter,
) -> None:
    # The close is asked of the subscription, not made here: ending the socket cancels this
    # task, which must not cut short the close it started.
    try:
        await _catch_up(request, ws, wire, subscription, backlog, request.query.get("after"))
    except CursorError as error:
        subscription.close(CURSOR_REFUSED, str(error))
    except psycopg.Error:
        log.warning("catching a socket up failed: database unavailable")
        subscription.close(TRY_AGAIN_LATER, "database unavailable; reconnect")


async def _catch_up(
    request: web.Request,
    ws: web.WebSocketResponse,
    wire: WireWriter,
    subscription: Subscription,
    backlog: BacklogWriter,
    after: str | None,
) -> None:
    database_id = request.app[DATABASE_ID]
    pool = request.app[POOL]
    if after is None:
        async with pool.connection() as conn:
            position = await current_position(conn, database_id)
        await ws.send_str(connected_frame(subscription.socket_id, position.encode()))
    else:
        async with pool.connection() as conn:
            position = await resumable_position(conn, after, database_id)
        await ws.send_str(connected_frame(subscription.socket_id, after))

        async def read_from(start: Cursor) -> PageRows:
            # The connection goes back to the pool before the page is sent: a slow client
            # must not hold one for the length of its replay.
            async with pool.connection() as conn:
                return await read_rows(conn, start, REPLAY_PAGE_SIZE)

        # PostgreSQL reads the next page while this one is framed and written, instead of
        # the two taking turns; one page ahead at most.
        reading = asyncio.create_task(read_from(position))
        try:
            while True:
                rows = await reading
                if not rows.complete:
                    reading = asyncio.create_task(read_from(rows.end))
                for start in range(0, len(rows), REPLAY_FRAMES_PER_WRITE):
                    wires = rows.wires(start, start + REPLAY_FRAMES_PER_WRITE)
                    if wires:
                        await wire.write(wires)
                    await asyncio.sleep(0)
                position = rows.end
                if rows.complete:
                    break
        finally:
            # A socket that failed mid-replay leaves a read behind: stop it, and wait for it
            # to give its connection back.
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
    subscription.when_frames_queued(backlog.start)
    subscription.write_directly_with(wire.write_now)
    subscription.go_live(position.next)


async def _close_as_asked(
    ws: web.WebSocketResponse,
    subscription: Subscription,
    metrics: Metrics,
    stop_delivery: Callable[[], None],
) -> None:
    """Carry out a close the subscription was asked for (slow consumer, signed out, a
    refused cursor).

    Delivery may be stuck waiting for a peer that stopped reading, so it is stopped
    first; if even the close frame cannot be sent in time, the connection is dropped.
    """
    stop_delivery()
    assert subscription.close_request is not None
    code, reason = subscription.close_request
    if code == SLOW_CONSUMER_CLOSE:
        metrics.slow_sockets_closed.inc()
    await ws.close(code=code, message=reason.encode())


async def _read_until_closed(ws: web.WebSocketResponse) -> None:
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.close(code=POLICY_VIOLATION, message=b"clients send no messages on /ws")
        elif message.type == WSMsgType.BINARY:
            await ws.close(code=UNSUPPORTED_DATA, message=b"binary frames are not supported")
        elif message.type == WSMsgType.ERROR:
            log.info("socket closed with error: %s", ws.exception())


async def close_all_sockets(app: web.Application) -> None:
    """On shutdown: tell every client we are going away (1001), all at once; each close
    takes CLOSE_TIMEOUT_SECONDS at most (BoundedWebSocket)."""
    open_sockets = app[SOCKETS]
    await asyncio.gather(
        *(ws.close(code=GOING_AWAY, message=b"server shutting down") for ws in set(open_sockets)),
        return_exceptions=True,
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/ws", websocket)
    app.on_shutdown.append(close_all_sockets)
