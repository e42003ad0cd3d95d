"""`GET /ws`: one socket per client; replay after its cursor, then live broadcasts."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence

import psycopg
from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

from server.auth import Principal, is_same_origin, require_user
from server.cursor import Cursor, CursorError
from server.errors import ApiError
from server.eventlog import PageRows, current_position, read_rows, resumable_position
from server.hub import SLOW_CONSUMER_CLOSE, Subscription
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
# Unsent bytes left behind by a finished socket mean its peer stopped reading.
ABANDONED_WRITE_BUFFER_BYTES = 64 * 1024
# Clients send nothing but control frames; anything else is refused, so this stays small.
MAX_CLIENT_FRAME_BYTES = 4096

CURSOR_REFUSED = 4400
UNSUPPORTED_DATA = 1003
POLICY_VIOLATION = 1008
GOING_AWAY = 1001
TRY_AGAIN_LATER = 1013
CLOSE_TIMEOUT_SECONDS = 2.0


async def websocket(request: web.Request) -> web.WebSocketResponse:
    if request.headers.get("Origin") is not None and not is_same_origin(request):
        raise ApiError(403, "cross_site_request", "WebSocket from another site refused")
    principal = await require_user(request)
    with request.app[SOCKET_LIMITER].hold(principal.user.id, request.remote or ""):
        return await _serve_socket(request, principal)


async def _serve_socket(request: web.Request, principal: Principal) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(
        heartbeat=request.app.get(SOCKET_HEARTBEAT_SECONDS, HEARTBEAT_SECONDS),
        compress=False,
        max_msg_size=MAX_CLIENT_FRAME_BYTES,
    )
    stream = await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    wire = WireWriter(request, ws, stream)

    socket_id = secrets.token_urlsafe(12)
    hub = request.app[HUB]
    # Subscribe before taking the snapshot the socket starts from: every broadcast the
    # snapshot missed is then guaranteed to reach this subscription (docs/delivery.md).
    subscription = hub.subscribe(socket_id, principal.user.id, principal.session_id)
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
                asyncio.create_task(
                    _close_as_asked(request, ws, subscription, metrics, stop_delivery)
                )
            )
        )
        try:
            await _read_until_closed(ws)
        finally:
            stop_delivery()
            # Let a close the hub asked for finish (it is bounded by CLOSE_TIMEOUT_SECONDS).
            await asyncio.gather(delivery, *backlog.tasks(), *closing, return_exceptions=True)
    finally:
        hub.unsubscribe(subscription)
        # A peer that stopped reading (the heartbeat gave up on it, say) would otherwise keep
        # its connection and buffers until it reads again, which may be never.
        transport = request.transport
        if (
            transport is not None
            and transport.get_write_buffer_size() > ABANDONED_WRITE_BUFFER_BYTES
        ):
            transport.abort()
    return ws


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
    try:
        await _catch_up(request, ws, wire, subscription, backlog, request.query.get("after"))
    except CursorError as error:
        await ws.close(code=CURSOR_REFUSED, message=str(error).encode())
        return
    except psycopg.Error:
        log.warning("catching a socket up failed: database unavailable")
        await ws.close(code=TRY_AGAIN_LATER, message=b"database unavailable; reconnect")


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
    request: web.Request,
    ws: web.WebSocketResponse,
    subscription: Subscription,
    metrics: Metrics,
    stop_delivery: Callable[[], None],
) -> None:
    """Carry out a close the hub asked for (slow consumer, signed out).

    Delivery may be stuck waiting for a peer that stopped reading, so it is stopped
    first; if even the close frame cannot be sent in time, the connection is dropped.
    """
    stop_delivery()
    assert subscription.close_request is not None
    code, reason = subscription.close_request
    if code == SLOW_CONSUMER_CLOSE:
        metrics.slow_sockets_closed.inc()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
            await ws.close(code=code, message=reason.encode())
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()


async def _read_until_closed(ws: web.WebSocketResponse) -> None:
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.close(code=POLICY_VIOLATION, message=b"clients send no messages on /ws")
        elif message.type == WSMsgType.BINARY:
            await ws.close(code=UNSUPPORTED_DATA, message=b"binary frames are not supported")
        elif message.type == WSMsgType.ERROR:
            log.info("socket closed with error: %s", ws.exception())


async def close_all_sockets(app: web.Application) -> None:
    """On shutdown: tell every client we are going away (1001), all at once."""
    open_sockets = app[SOCKETS]
    await asyncio.gather(
        *(ws.close(code=GOING_AWAY, message=b"server shutting down") for ws in set(open_sockets)),
        return_exceptions=True,
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/ws", websocket)
    app.on_shutdown.append(close_all_sockets)
