"""`GET /ws?channels=a,b[&after=CURSOR]`: one socket per client and one cursor for all of its
channels; replay after the cursor, then live events."""

from __future__ import annotations

import asyncio
import logging
import secrets

import psycopg
from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

from server.auth import is_same_origin, require_user
from server.core.channels import PRESENCE_PREFIX, ChannelError, requested_channels
from server.core.cursor import CursorError
from server.core.events import CloseReason, Disconnect, Event
from server.core.hub import Connection
from server.core.presence import Member, PresenceStore
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
    # Counted (and refused with 429) before the upgrade, on every process at once. Opened and
    # released by hand, not with `hold`: its generator's frame would stay suspended for the
    # socket's whole life.
    registry = request.app[SOCKET_REGISTRY]
    await registry.open(socket_id, NATIVE, principal.user.id, request.remote or "", channels)
    try:
        ws = BoundedWebSocket(
            heartbeat=request.app.get(SOCKET_HEARTBEAT_SECONDS, HEARTBEAT_SECONDS),
            compress=False,
            max_msg_size=MAX_CLIENT_FRAME_BYTES,
        )
        try:
            stream = await ws.prepare(request)
        except ConnectionError:
            # Returned unprepared, it is one aiohttp cannot send either: it then logs only
            # the access line, as for any client that left before its response.
            log.info("socket closed before the upgrade: the client left")
            return ws
        # The upgrade is sent: its headers are of no more use, and an idle socket would keep
        # them for its whole life.
        ws.headers.clear()
        sockets = request.app[SOCKETS]
        sockets.add(ws)
        hub = request.app[HUB]
        # Subscribe before taking the snapshot the socket starts from: every event the
        # snapshot missed is then guaranteed to reach this connection (docs/delivery.md).
        connection = hub.subscribe(
            socket_id, principal.user.id, principal.session_id, channels, CODEC
        )
        socket = NativeSocket(request, ws, stream, connection)
        session_seconds_left = principal.session_seconds_left
        user = principal.user
        member = Member(str(user.id), {"name": user.name, "avatar_url": user.avatar_url})
        # Nothing below needs the user's row; an idle socket need not keep it.
        del principal, user
        try:
            socket.start(request, session_seconds_left, channels, member)
            del member
            # The socket's whole life is spent awaiting here; a coroutine of its own (or
            # `async for`) would keep one more suspended frame per idle socket.
            while True:
                message = await ws.receive()
                if message.type in _ENDED:
                    break
                if message.type == WSMsgType.TEXT:
                    await ws.close(
                        code=POLICY_VIOLATION, message=b"clients send no messages on /ws"
                    )
                elif message.type == WSMsgType.BINARY:
                    await ws.close(
                        code=UNSUPPORTED_DATA, message=b"binary frames are not supported"
                    )
                elif message.type == WSMsgType.ERROR:
                    log.info("socket closed with error: %s", ws.exception())
        finally:
            try:
                await socket.finish()
            finally:
                hub.unsubscribe(connection)
                sockets.discard(ws)
                await socket.leave_presence(request.app[PRESENCE])
        # However the socket ended (the heartbeat gave up on it, say), aiohttp now calls
        # `close` once more: a peer that stopped reading loses its connection there, within
        # the bound.
        return ws
    finally:
        await registry.release(socket_id)


_ENDED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)


class NativeSocket:
    """What one open socket holds besides aiohttp's own objects: its writers, its catch-up
    task while it runs, and the closes the hub asks for. One object with slots rather than
    closures and their cells: thousands of idle sockets each keep one."""

    __slots__ = (
        "_hub",
        "backlog",
        "closing",
        "connection",
        "delivery",
        "joined",
        "metrics",
        "wire",
        "ws",
    )

    def __init__(
        self,
        request: web.Request,
        ws: BoundedWebSocket,
        stream: AbstractStreamWriter,
        connection: Connection,
    ) -> None:
        self.ws = ws
        self.connection = connection
        self.metrics = request.app[METRICS]
        self.wire = WireWriter(request, ws, stream)
        self.backlog = BacklogWriter(self.wire, connection, self.metrics)
        self.delivery: asyncio.Task[None] | None = None
        self.closing: asyncio.Task[None] | None = None
        # The presence channels this socket joined, to leave when it ends.
        self.joined: tuple[str, ...] = ()
        self._hub = request.app[HUB]

    def start(
        self,
        request: web.Request,
        session_seconds_left: float | None,
        channels: tuple[str, ...],
        member: Member,
    ) -> None:
        connection = self.connection
        # The session's end is known now; the hub keeps one timer per session for it.
        if session_seconds_left is not None:
            self._hub.close_when_expired(connection, session_seconds_left)
        self.delivery = delivery = asyncio.create_task(self._deliver(request, channels, member))
        # Once caught up, the task is done with: let it go.
        delivery.add_done_callback(self._delivered)
        connection.when_close_requested(self._close_requested)

    def _delivered(self, task: asyncio.Task[None]) -> None:
        if self.delivery is task:
            self.delivery = None

    def stop_delivery(self) -> None:
        if self.delivery is not None:
            self.delivery.cancel()
        self.backlog.cancel()

    def _close_requested(self) -> None:
        disconnect = self.connection.close_request
        assert disconnect is not None
        if disconnect.reason is CloseReason.TOO_SLOW:
            self.metrics.slow_sockets_closed.inc()
        code, reason = close_frame(disconnect)
        if self.closing is None:
            self.closing = asyncio.create_task(
                close_as_asked(self.ws, code, reason, self.stop_delivery)
            )

    async def finish(self) -> None:
        """Stop delivering, and let an asked-for close finish (BoundedWebSocket.close bounds
        it)."""
        self.stop_delivery()
        pending = [task for task in (self.delivery, self.closing) if task is not None]
        await asyncio.gather(*pending, *self.backlog.tasks(), return_exceptions=True)

    async def leave_presence(self, presence: PresenceStore) -> None:
        for channel in self.joined:
            await presence.leave(channel, self.connection.socket_id)

    async def _deliver(
        self, request: web.Request, channels: tuple[str, ...], member: Member
    ) -> None:
        connection, ws, wire = self.connection, self.ws, self.wire
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
            for channel in self.joined:
                roster = await presence.roster(channel)
                connection.sent_roster(roster)
                await ws.send_str(presence_frame(roster))

        # Live frames are held until the catch-up is done; then they go straight to the socket.
        connection.when_frames_queued(self.backlog.start)
        connection.write_directly_with(wire)
        try:
            # Joined before the cursor is taken, so `connected` means "on the member lists".
            for channel in channels:
                if channel.startswith(PRESENCE_PREFIX):
                    await presence.join(channel, connection.socket_id, member)
                    self.joined += (channel,)
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


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/ws", websocket)
