"""`GET /ws?channels=a,b[&after=CURSOR]`: one socket per client and one cursor for all of its
channels; replay after the cursor, then live events."""

from __future__ import annotations

import asyncio
import logging
import secrets

import psycopg
from aiohttp import WSMsgType, web

from server.auth import Principal, is_same_origin, require_user
from server.core.channels import PRESENCE_PREFIX, ChannelError, requested_channels
from server.core.cursor import CursorError
from server.core.events import CloseReason, Disconnect, Event
from server.core.hub import Connection
from server.core.presence import Member
from server.errors import ApiError
from server.keys import (
    DATABASE_ID,
    HUB,
    METRICS,
    POLICY,
    POOL,
    PRESENCE,
    SOCKET_HEARTBEAT_SECONDS,
    SOCKET_REGISTRY,
    SOCKETS,
)
from server.pg.replay import catch_up
from server.pg.sockets import NATIVE
from server.transports.native.codec import CODEC, close_frame, connected_frame, presence_frame
from server.transports.websocket import (
    HEARTBEAT_SECONDS,
    BacklogWriter,
    BoundedWebSocket,
    WireWriter,
    close_as_asked,
)

log = logging.getLogger(__name__)

# Clients send nothing but control frames; anything else is refused, so this stays small.
MAX_CLIENT_FRAME_BYTES = 4096
UNSUPPORTED_DATA = 1003
POLICY_VIOLATION = 1008


async def websocket(request: web.Request) -> web.WebSocketResponse:
    if request.headers.get("Origin") is not None and not is_same_origin(request):
        raise ApiError(403, "cross_site_request", "WebSocket from another site refused")
    try:
        channels = requested_channels(
            request.query.getall("channels", []), request.query.getall("channel", [])
        )
    except ChannelError as error:
        raise ApiError(400, "invalid_channels", str(error)) from None
    principal = await require_user(request)
    socket_id = secrets.token_urlsafe(12)
    # Counted (and refused with 429) before the upgrade, on every process at once.
    async with request.app[SOCKET_REGISTRY].hold(
        socket_id, NATIVE, principal.user.id, request.remote or "", channels
    ):
        return await _serve_socket(request, principal, socket_id, channels)


async def _serve_socket(
    request: web.Request, principal: Principal, socket_id: str, channels: tuple[str, ...]
) -> web.WebSocketResponse:
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

    hub = request.app[HUB]
    # Subscribe before taking the snapshot the socket starts from: every event the snapshot
    # missed is then guaranteed to reach this connection (docs/delivery.md).
    connection = hub.subscribe(socket_id, principal.user.id, principal.session_id, channels, CODEC)
    # A timer, not a task: the session's end is known now, and most sockets never see it.
    expiry: asyncio.TimerHandle | None = None
    if principal.session_seconds_left is not None:
        expiry = asyncio.get_running_loop().call_later(
            principal.session_seconds_left,
            connection.close,
            Disconnect(CloseReason.SIGNED_OUT, "session expired"),
        )
    # The presence channels this socket joined, to leave when it ends.
    joined: list[str] = []
    user = principal.user
    member = Member(str(user.id), {"name": user.name, "avatar_url": user.avatar_url})
    try:
        metrics = request.app[METRICS]
        backlog = BacklogWriter(wire, connection, metrics)
        delivery = asyncio.create_task(
            _deliver(request, ws, wire, connection, backlog, channels, member, joined)
        )
        closing: list[asyncio.Task[None]] = []

        def stop_delivery() -> None:
            delivery.cancel()
            backlog.cancel()

        def close_requested() -> None:
            disconnect = connection.close_request
            assert disconnect is not None
            if disconnect.reason is CloseReason.TOO_SLOW:
                metrics.slow_sockets_closed.inc()
            code, reason = close_frame(disconnect)
            closing.append(asyncio.create_task(close_as_asked(ws, code, reason, stop_delivery)))

        connection.when_close_requested(close_requested)
        try:
            await _read_until_closed(ws)
        finally:
            stop_delivery()
            # Let an asked-for close finish (BoundedWebSocket.close bounds it).
            await asyncio.gather(delivery, *backlog.tasks(), *closing, return_exceptions=True)
    finally:
        if expiry is not None:
            expiry.cancel()
        hub.unsubscribe(connection)
        for channel in joined:
            await request.app[PRESENCE].leave(channel, connection.socket_id)
    # However the socket ended (the heartbeat gave up on it, say), aiohttp now calls `close`
    # once more: a peer that stopped reading loses its connection there, within the bound.
    return ws


async def _deliver(
    request: web.Request,
    ws: web.WebSocketResponse,
    wire: WireWriter,
    connection: Connection,
    backlog: BacklogWriter,
    channels: tuple[str, ...],
    member: Member,
    joined: list[str],
) -> None:
    forbidden = await request.app[POLICY].forbidden(connection.user_id, channels)
    if forbidden:
        names = ", ".join(forbidden)
        connection.close(Disconnect(CloseReason.FORBIDDEN, f"not allowed to listen to {names}"))
        return
    presence = request.app[PRESENCE]

    async def started(cursor: str) -> None:
        await ws.send_str(connected_frame(connection.socket_id, cursor, channels))

    async def send(events: list[Event]) -> None:
        await wire.write([event.encoded(CODEC) for event in events])

    async def send_members() -> None:
        # After the replay (whose member changes it supersedes) and before anything live:
        # live member changes the list has are left out, those after it follow it.
        for channel in joined:
            roster = await presence.roster(channel)
            connection.sent_roster(roster)
            await ws.send_str(presence_frame(roster))

    # Live frames are held until the catch-up is done; then they go straight to the socket.
    connection.when_frames_queued(backlog.start)
    connection.write_directly_with(wire.write_now)
    try:
        # Joined before the cursor is taken, so `connected` means "on the member lists".
        for channel in channels:
            if channel.startswith(PRESENCE_PREFIX):
                await presence.join(channel, connection.socket_id, member)
                joined.append(channel)
        await catch_up(
            request.app[POOL],
            request.app[DATABASE_ID],
            connection,
            request.query.get("after"),
            channels,
            started=started,
            send=send,
            before_live=send_members,
        )
    except CursorError as error:
        connection.close(Disconnect(CloseReason.CURSOR_REFUSED, str(error)))
        return
    except psycopg.Error:
        log.warning("catching a socket up failed: database unavailable")
        connection.close(Disconnect(CloseReason.UNAVAILABLE, "database unavailable"))


async def _read_until_closed(ws: web.WebSocketResponse) -> None:
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.close(code=POLICY_VIOLATION, message=b"clients send no messages on /ws")
        elif message.type == WSMsgType.BINARY:
            await ws.close(code=UNSUPPORTED_DATA, message=b"binary frames are not supported")
        elif message.type == WSMsgType.ERROR:
            log.info("socket closed with error: %s", ws.exception())


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/ws", websocket)
