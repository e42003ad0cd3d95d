"""`GET /app/{key}?protocol=7`: Pusher Channels protocol 7, as pusher-js 8 speaks it.

One socket holds one hub connection for the channels it subscribes to plainly, and one of
its own for each channel it resumed (`pgcast:resume`, whose replay holds that channel's live
events until it is done) and for `#server-to-user-{id}` (framed under that name). Every
frame a client sends is handled in order, one at a time, so a `pgcast:resume` always takes
effect before the subscription after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import psycopg
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.abc import AbstractStreamWriter
from psycopg_pool import PoolTimeout

from server.auth import Principal, authenticate, is_same_origin
from server.core.channels import MAX_CHANNELS_PER_SOCKET, is_channel_name, is_event_name
from server.core.cursor import CursorError
from server.core.events import CloseReason, Codec, Disconnect, Event
from server.core.hub import Connection
from server.core.presence import Member, Roster
from server.errors import ApiError
from server.keys import (
    CONFIG,
    DATABASE_ID,
    HUB,
    METRICS,
    POLICY,
    POOL,
    PRESENCE,
    SOCKET_REGISTRY,
)
from server.pg.eventlog import current_position, resumable_position
from server.pg.replay import replay
from server.pg.sockets import PUSHER
from server.protocol import JsonObject
from server.transports.pusher import client_events
from server.transports.pusher import codec as frames
from server.transports.pusher.auth import new_socket_id, valid_channel_auth, valid_user_auth
from server.transports.pusher.channels import (
    Kind,
    is_user_id,
    kind_of,
    server_to_user_channel,
    stored_channel,
)
from server.transports.pusher.codec import CODEC, SERVER_TO_USER_CODEC, close_frame
from server.transports.pusher.keys import PUSHER_SOCKETS, PUSHER_TIMING, Timing
from server.transports.pusher.registry import PusherSockets
from server.transports.websocket import (
    CLOSE_TIMEOUT_SECONDS,
    BacklogWriter,
    BoundedWebSocket,
    WireWriter,
)

log = logging.getLogger(__name__)

PROTOCOL = "7"
# A client frame pgcast reads at all; bigger ones close the socket (FRAME_REFUSED). Within
# it, client events are bounded by what NOTIFY carries (client_events.MAX_PAYLOAD_BYTES).
MAX_CLIENT_FRAME_BYTES = 64 * 1024
# No pgcast user: an open-mode socket (PGCAST_PUSHER_PUBLIC_CHANNELS=open) without a session.
# Revocation checks skip this id (queries.ENDED_AMONG, FORBIDDEN_SUBSCRIPTIONS).
ANONYMOUS = 0
# presence_members.user_id's limit, and Pusher's for user ids.
MAX_USER_ID_CHARS = 200
# RFC 6455 leaves 123 bytes for a close reason.
_MAX_REASON_BYTES = 120
# What aiohttp closes a socket with when it cannot read a frame; pusher-js acts only on
# 4000-4299, so these become FRAME_REFUSED.
_UNREADABLE_FRAME = {
    WSCloseCode.PROTOCOL_ERROR,
    WSCloseCode.INVALID_TEXT,
    WSCloseCode.MESSAGE_TOO_BIG,
    WSCloseCode.UNSUPPORTED_DATA,
}


class _PusherWebSocket(BoundedWebSocket):
    """Every close bounded (BoundedWebSocket), and aiohttp's own protocol closes mapped to a
    code pusher-js acts on."""

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code in _UNREADABLE_FRAME:
            code = frames.FRAME_REFUSED
            message = b"unreadable frame: not UTF-8 text, malformed, or over 65536 bytes"
        return await super().close(code=code, message=message, drain=drain)


def _shown(name: str) -> str:
    return name if len(name) <= 40 else name[:40] + "..."


def _reason(text: str) -> bytes:
    return text.encode()[:_MAX_REASON_BYTES]


class Refused(Exception):
    """A subscription that cannot be made; becomes `pusher:subscription_error`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Invalid(Exception):
    """A client frame pgcast cannot use; becomes a `pusher:error` that closes nothing."""

    def __init__(self, message: str, code: int = frames.INVALID_MESSAGE) -> None:
        super().__init__(message)
        self.code = code


async def pusher_socket(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[CONFIG].pusher
    same_origin = request.headers.get("Origin") is None or is_same_origin(request)
    if not settings.open_public_channels and not same_origin:
        raise ApiError(403, "cross_site_request", "WebSocket from another site refused")
    refusal: tuple[int, str] | None = None
    principal: Principal | None = None
    protocol = request.query.get("protocol")
    if request.match_info["key"] != settings.key:
        refusal = (frames.APP_NOT_FOUND, "no app with this key")
    elif protocol is None:
        refusal = (frames.NO_PROTOCOL, "no protocol version given; pgcast speaks protocol 7")
    elif protocol != PROTOCOL:
        refusal = (frames.UNSUPPORTED_PROTOCOL, "unsupported protocol version; pgcast speaks 7")
    elif same_origin:
        # A session from another site's page is not the user's: such a socket is anonymous.
        try:
            principal = await authenticate(request)
        except ApiError as error:
            refusal = (frames.UNAUTHORIZED, error.message)
        except (psycopg.OperationalError, PoolTimeout):
            refusal = (frames.OVER_CAPACITY, "database unavailable; try again shortly")
    if refusal is None and principal is None and not settings.open_public_channels:
        refusal = (frames.UNAUTHORIZED, "sign in to pgcast first")

    ws = _PusherWebSocket(compress=False, max_msg_size=MAX_CLIENT_FRAME_BYTES)
    stream = await ws.prepare(request)
    if refusal is not None:
        await _refuse(ws, *refusal)
        return ws
    socket_id = new_socket_id()
    sockets = app[SOCKET_REGISTRY]
    try:
        # An anonymous socket counts against its address only.
        await sockets.open(
            socket_id,
            PUSHER,
            None if principal is None else principal.user.id,
            request.remote or "",
        )
    except ApiError as error:
        await _refuse(ws, frames.OVER_CAPACITY, error.message)
        return ws
    except (psycopg.OperationalError, PoolTimeout):
        await _refuse(ws, frames.OVER_CAPACITY, "database unavailable; try again shortly")
        return ws
    try:
        await PusherSession(request, ws, stream, principal, socket_id).serve()
    finally:
        await sockets.release(socket_id)
    return ws


async def _refuse(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    with contextlib.suppress(ConnectionError):
        await ws.send_str(frames.error(code, reason))
    await ws.close(code=code, message=_reason(reason))


class PusherSession:
    def __init__(
        self,
        request: web.Request,
        ws: _PusherWebSocket,
        stream: AbstractStreamWriter,
        principal: Principal | None,
        socket_id: str,
    ) -> None:
        self.request = request
        self.ws = ws
        self.wire = WireWriter(request, ws, stream)
        self.app = request.app
        self.socket_id = socket_id
        self.principal = principal
        self.user_id = principal.user.id if principal is not None else ANONYMOUS
        self.session_id = principal.session_id if principal is not None else None
        self.hub = self.app[HUB]
        self.timing = self.app[PUSHER_TIMING]
        self.presence = self.app[PRESENCE]
        self.sockets = self.app[SOCKET_REGISTRY]
        self.settings = self.app[CONFIG].pusher
        self.main: Connection | None = None
        # Pusher channel -> the hub connection that carries it.
        self.routes: dict[str, Connection] = {}
        self.writers: dict[Connection, BacklogWriter] = {}
        self.members: dict[str, Member] = {}
        self.pending_resume: dict[str, str] = {}
        self.signed_in_as: str | None = None
        self.rate = client_events.RateLimit()
        self._closing: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        registry = self.app[PUSHER_SOCKETS]
        registry.add(self)
        self.main = self._connect((), CODEC)
        self.main.go_live(None)
        try:
            await self.ws.send_str(
                frames.connection_established(self.socket_id, self.timing.activity_timeout)
            )
            await self._read_until_closed()
        except ConnectionError:
            pass
        finally:
            for writer in self.writers.values():
                writer.cancel()
            for connection in self.writers:
                self.hub.unsubscribe(connection)
            for channel in list(self.members):
                await self.presence.leave(channel, self.socket_id)
            registry.remove(self, self.signed_in_as)
            tasks = [task for writer in self.writers.values() for task in writer.tasks()]
            if self._closing is not None:
                tasks.append(self._closing)
            await asyncio.gather(*tasks, return_exceptions=True)

    def _connect(self, channels: tuple[str, ...], codec: Codec) -> Connection:
        connection = self.hub.subscribe(
            self.socket_id, self.user_id, self.session_id, channels, codec
        )
        writer = BacklogWriter(self.wire, connection, self.app[METRICS])
        self.writers[connection] = writer
        connection.when_frames_queued(writer.start)
        connection.write_directly_with(self.wire)
        connection.when_close_requested(lambda: self._close_requested(connection))
        return connection

    def _hub_channels(self) -> set[str]:
        """The channels this socket is subscribed to, as the hub and pgcast_sockets name them."""
        return {stored_channel(channel) for channel in self.routes}

    def _drop(self, connection: Connection) -> None:
        self.hub.unsubscribe(connection)
        writer = self.writers.pop(connection, None)
        if writer is not None:
            writer.cancel()

    def _close_requested(self, connection: Connection) -> None:
        disconnect = connection.close_request
        assert disconnect is not None
        if disconnect.reason is CloseReason.TOO_SLOW:
            self.app[METRICS].slow_sockets_closed.inc()
        self.begin_close(*close_frame(disconnect))

    def begin_close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(code, reason))

    async def close(self, code: int, reason: str) -> None:
        """Close this socket with a Pusher close code (4000-4299), after a `pusher:error`
        that says why."""
        self.begin_close(code, reason)
        assert self._closing is not None
        await asyncio.shield(self._closing)

    async def _close(self, code: int, reason: str) -> None:
        # Delivery may be stuck on a peer that stopped reading: stop it first, and drop the
        # connection if even the close frame cannot be sent in time.
        for writer in self.writers.values():
            writer.cancel()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                with contextlib.suppress(ConnectionError):
                    await self.ws.send_str(frames.error(code, reason))
                await self.ws.close(code=code, message=_reason(reason))
        except TimeoutError:
            if self.request.transport is not None:
                self.request.transport.abort()

    async def _send(self, text: str) -> None:
        await self.ws.send_str(text)

    async def _read_until_closed(self) -> None:
        ws = self.ws
        while not ws.closed:
            try:
                message = await ws.receive(timeout=self.timing.activity_timeout)
            except TimeoutError:
                await self._send(frames.PING)
                try:
                    message = await ws.receive(timeout=self.timing.pong_timeout)
                except TimeoutError:
                    await self.close(frames.PONG_NOT_RECEIVED, "no pong received; reconnect")
                    return
            if message.type is WSMsgType.TEXT:
                try:
                    await self._handle(message.data)
                except Invalid as invalid:
                    await self._send(frames.error(invalid.code, str(invalid)))
                except ConnectionError:
                    raise
                except Exception:
                    # A bug must not leave a socket in a state nobody knows: say so, and let
                    # the client reconnect.
                    log.exception("handling a Pusher frame failed")
                    await self.close(frames.RECONNECT, "internal error; reconnect")
                    return
            elif message.type is WSMsgType.BINARY:
                await self._send(
                    frames.error(frames.INVALID_MESSAGE, "binary frames are not supported")
                )
            else:
                return

    async def _handle(self, text: str) -> None:
        try:
            body = json.loads(text, parse_constant=_no_constant)
            # JSON escapes can spell lone surrogates, which no frame can carry on.
            text.encode().decode()
            json.dumps(body, ensure_ascii=False).encode()
        except (RecursionError, ValueError):
            raise Invalid("the frame is not JSON") from None
        except UnicodeError:
            raise Invalid("the frame holds a lone surrogate, which is not text") from None
        if not isinstance(body, dict) or not isinstance(body.get("event"), str):
            raise Invalid('a frame is a JSON object with an "event" string')
        event: str = body["event"]
        data = _decoded(body.get("data"))
        if event == "pusher:ping":
            await self._send(frames.PONG)
        elif event == "pusher:pong":
            pass
        elif event == "pusher:subscribe":
            await self._subscribe(_object(data, event))
        elif event == "pusher:unsubscribe":
            await self._unsubscribe(_object(data, event))
        elif event == "pusher:signin":
            await self._sign_in(_object(data, event))
        elif event == "pgcast:resume":
            await self._ask_resume(_object(data, event))
        elif event.startswith("client-"):
            await self._client_event(event, body.get("channel"), data)
        else:
            raise Invalid(f"unknown event {_shown(event)!r}")

    # Subscriptions

    async def _subscribe(self, data: JsonObject) -> None:
        channel = data.get("channel")
        if not isinstance(channel, str):
            raise Invalid('pusher:subscribe needs a "channel" string')
        try:
            await self._subscribe_to(channel, data)
        except Refused as refused:
            self.pending_resume.pop(channel, None)
            # The row may already name the channel: it names what the socket holds again.
            self.sockets.set_channels_later(self.socket_id, self._hub_channels())
            await self._send(frames.subscription_error(channel, refused.status, refused.message))
        except (psycopg.OperationalError, PoolTimeout):
            self.pending_resume.pop(channel, None)
            self.sockets.set_channels_later(self.socket_id, self._hub_channels())
            await self._send(
                frames.subscription_error(channel, 503, "database unavailable; try again")
            )

    async def _subscribe_to(self, channel: str, data: JsonObject) -> None:
        kind = kind_of(channel)
        if kind is not Kind.SERVER_TO_USER and not is_channel_name(channel):
            raise Refused(
                400,
                f"{_shown(channel)!r} is not a channel name: "
                "1 to 164 characters of a-z A-Z 0-9 - _ = @ , . ;",
            )
        if channel in self.routes:
            # Subscribing twice changes nothing; the client is told it is subscribed (and,
            # on a presence channel, given the members again).
            await self._subscribed(channel, self.routes[channel], None, None)
            return
        if len(self.routes) >= MAX_CHANNELS_PER_SOCKET:
            raise Refused(400, f"at most {MAX_CHANNELS_PER_SOCKET} channels per socket")
        member = self._authorize(channel, kind, data.get("auth"), data.get("channel_data"))
        hub_channel = stored_channel(channel)
        if self.principal is not None:
            forbidden = await self.app[POLICY].forbidden(self.user_id, [hub_channel])
            if forbidden:
                raise Refused(403, f"not allowed to listen to {_shown(channel)}")
        # Counted on every process before the client hears it is subscribed.
        await self.sockets.set_channels(self.socket_id, {*self._hub_channels(), hub_channel})
        resume_after = self.pending_resume.pop(channel, None)
        if resume_after is not None:
            await self._resume(channel, kind, member, resume_after)
            return
        # The position comes before the subscription: every event after it that this
        # socket does not get live was committed before it subscribed, and a resume from it
        # sends just those.
        async with self.app[POOL].connection() as conn:
            position = await current_position(conn, self.app[DATABASE_ID])
        if kind is Kind.SERVER_TO_USER:
            connection = self._connect((hub_channel,), SERVER_TO_USER_CODEC)
            connection.go_live(None)
        else:
            assert self.main is not None
            connection = self.main
        await self._subscribed(channel, connection, member, position.encode())

    async def _subscribed(
        self, channel: str, connection: Connection, member: Member | None, cursor: str | None
    ) -> None:
        """Route `channel` to `connection` (already the case for a channel subscribed twice),
        join its presence as `member` if given, and send `subscription_succeeded`.

        On a presence channel, the connection holds its live events until the member list
        has gone out, and then leaves out the member changes the list already has: the
        socket gets the list, then exactly the changes after it."""
        hub_channel = stored_channel(channel)
        presence = member is not None or channel in self.members
        if presence:
            connection.pause()
        try:
            if channel not in self.routes:
                if connection is self.main:
                    self.hub.add_channel(connection, hub_channel)
                self.routes[channel] = connection
            roster: Roster | None = None
            if member is not None:
                try:
                    roster = await self._join(channel, member)
                except BaseException:
                    self._route_away(channel)
                    raise
            elif presence:
                roster = await self.presence.roster(channel)
            if roster is not None:
                connection.sent_roster(roster)
            await self._send(frames.subscription_succeeded(channel, _extra(roster, cursor)))
        finally:
            connection.resume()

    def _route_away(self, channel: str) -> None:
        connection = self.routes.pop(channel, None)
        self.members.pop(channel, None)
        if connection is None:
            return
        if connection is self.main:
            self.hub.remove_channel(connection, stored_channel(channel))
        else:
            self._drop(connection)

    def _authorize(
        self, channel: str, kind: Kind, auth: object, channel_data: object
    ) -> Member | None:
        """Check the subscription's signature; the presence member it names, if any."""
        if kind is Kind.PUBLIC:
            return None
        if kind is Kind.SERVER_TO_USER:
            if self.signed_in_as is None or channel != server_to_user_channel(self.signed_in_as):
                raise Refused(403, "sign in as that user first (pusher:signin)")
            return None
        if kind is not Kind.PRESENCE:
            channel_data = None
        elif not isinstance(channel_data, str):
            raise Refused(400, "a presence subscription needs channel_data")
        if not valid_channel_auth(
            self.settings.key,
            self.settings.secret.value,
            self.socket_id,
            channel,
            channel_data,
            auth,
        ):
            raise Refused(401, "invalid signature")
        if kind is not Kind.PRESENCE:
            return None
        assert isinstance(channel_data, str)
        return _member(channel_data)

    async def _join(self, channel: str, member: Member | None) -> Roster | None:
        if member is None:
            return None
        self.members[channel] = member
        try:
            return await self.presence.join(channel, self.socket_id, member)
        except Exception:
            # The row may have been written before the failure: leave it as a socket would.
            self.members.pop(channel, None)
            await self.presence.leave(channel, self.socket_id)
            raise

    async def _unsubscribe(self, data: JsonObject) -> None:
        channel = data.get("channel")
        if not isinstance(channel, str):
            raise Invalid('pusher:unsubscribe needs a "channel" string')
        self.pending_resume.pop(channel, None)
        joined = channel in self.members
        self._route_away(channel)
        # A failed write is made again later (SocketRegistry); the client waits for nothing.
        with contextlib.suppress(psycopg.Error):
            await self.sockets.set_channels(self.socket_id, self._hub_channels())
        if joined:
            await self.presence.leave(channel, self.socket_id)

    # Resume

    async def _ask_resume(self, data: JsonObject) -> None:
        channel, cursor = data.get("channel"), data.get("cursor")
        if not isinstance(channel, str) or not isinstance(cursor, str):
            raise Invalid('pgcast:resume needs "channel" and "cursor" strings')
        if channel in self.routes:
            await self._send(
                frames.resume_complete(
                    channel,
                    False,
                    cursor,
                    "already subscribed: send pgcast:resume before pusher:subscribe",
                )
            )
            return
        if (
            channel not in self.pending_resume
            and len(self.pending_resume) >= MAX_CHANNELS_PER_SOCKET
        ):
            raise Invalid(f"at most {MAX_CHANNELS_PER_SOCKET} channels per socket")
        self.pending_resume[channel] = cursor

    async def _resume(self, channel: str, kind: Kind, member: Member | None, after: str) -> None:
        """Subscribe `channel` from `after`: every event of it committed since, in commit
        order, then `pgcast:resume_complete`, then live events; no gap, no duplicate."""
        hub_channel = stored_channel(channel)
        codec: Codec = SERVER_TO_USER_CODEC if kind is Kind.SERVER_TO_USER else CODEC
        # Subscribed before the replay's position is read, as in catch_up: whatever the
        # replay does not see reaches the connection live, held until the replay is done.
        connection = self._connect((hub_channel,), codec)
        self.routes[channel] = connection
        pool, database = self.app[POOL], self.app[DATABASE_ID]
        try:
            async with pool.connection() as conn:
                position = await resumable_position(conn, after, database)
        except CursorError as error:
            async with pool.connection() as conn:
                now = await current_position(conn, database)
            roster = await self._join_resumed(channel, connection, member)
            await self._send(frames.subscription_succeeded(channel, _extra(roster, now.encode())))
            await self._send(frames.resume_complete(channel, False, now.encode(), str(error)))
            connection.go_live(now.next)
            return
        roster = await self._join_resumed(channel, connection, member)
        await self._send(frames.subscription_succeeded(channel, _extra(roster, after)))
        wire = self.wire

        async def send(events: list[Event]) -> None:
            if roster is not None:
                # The member list went out first: the changes it has are not news.
                events = [event for event in events if not roster.listed_already(event)]
            await wire.write([event.encoded(codec) for event in events])

        try:
            async with asyncio.timeout(self.timing.replay_timeout):
                end = await replay(pool, position, [hub_channel], send)
        except TimeoutError:
            connection.close(Disconnect(CloseReason.TOO_SLOW, "too slow to take the replay"))
            return
        except psycopg.Error:
            connection.close(Disconnect(CloseReason.UNAVAILABLE, "database unavailable"))
            return
        await self._send(frames.resume_complete(channel, True, end.encode()))
        connection.go_live(end.next)

    async def _join_resumed(
        self, channel: str, connection: Connection, member: Member | None
    ) -> Roster | None:
        try:
            roster = await self._join(channel, member)
        except BaseException:
            self._route_away(channel)
            raise
        if roster is not None:
            connection.sent_roster(roster)
        return roster

    # Users

    async def _sign_in(self, data: JsonObject) -> None:
        auth, user_data = data.get("auth"), data.get("user_data")
        if not isinstance(user_data, str):
            raise Invalid('pusher:signin needs "auth" and "user_data" strings')
        if not valid_user_auth(
            self.settings.key, self.settings.secret.value, self.socket_id, user_data, auth
        ):
            raise Invalid("sign-in refused: invalid signature", frames.UNAUTHORIZED)
        try:
            user = json.loads(user_data)
        except (RecursionError, ValueError):
            user = None
        user_id = user.get("id") if isinstance(user, dict) else None
        if not isinstance(user_id, str) or not is_user_id(user_id):
            raise Invalid(
                'user_data must be a JSON object whose "id" is 1 to 128 of '
                "a-z A-Z 0-9 - _ = @ , . ;",
                frames.UNAUTHORIZED,
            )
        if self.signed_in_as is not None and self.signed_in_as != user_id:
            raise Invalid("this socket is signed in as another user", frames.UNAUTHORIZED)
        self.signed_in_as = user_id
        self.app[PUSHER_SOCKETS].signed_in(self, user_id)
        await self._send(frames.signin_success(user_data))

    # Client events

    async def _client_event(self, name: str, channel: object, data: object) -> None:
        if not isinstance(channel, str):
            raise Invalid('a client event needs a "channel" string')
        kind = kind_of(channel)
        if kind not in (Kind.PRIVATE, Kind.PRESENCE):
            raise Invalid("client events are accepted on private- and presence- channels only")
        if channel not in self.routes:
            raise Invalid(f"subscribe to {_shown(channel)} before sending client events on it")
        if not is_event_name(name):
            raise Invalid("an event name is 1 to 200 characters, no control characters")
        if not isinstance(data, dict):
            raise Invalid("a client event's data must be a JSON object")
        member = self.members.get(channel)
        try:
            payload = client_events.payload(
                channel, name, data, self.socket_id, None if member is None else member.user_id
            )
        except client_events.TooLarge as error:
            raise Invalid(str(error)) from None
        # Only events that would be sent count against the limit.
        if not self.rate.allow(asyncio.get_running_loop().time()):
            raise Invalid(
                f"client event rejected: at most {client_events.PER_SECOND} per second",
                frames.CLIENT_EVENT_RATE_LIMITED,
            )
        try:
            await client_events.send(self.app[POOL], payload)
        except (psycopg.OperationalError, PoolTimeout):
            raise Invalid("client event not sent: database unavailable") from None


def _extra(roster: Roster | None, cursor: str | None) -> JsonObject:
    data: JsonObject = {}
    if roster is not None:
        members = roster.by_user()
        data["presence"] = {"ids": list(members), "hash": members, "count": len(members)}
    if cursor is not None:
        data["pgcast"] = {"cursor": cursor}
    return data


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _decoded(data: object) -> object:
    """`data` as sent: pusher-js sends objects, other clients JSON-encoded strings."""
    if isinstance(data, str):
        try:
            decoded = json.loads(data, parse_constant=_no_constant)
            json.dumps(decoded, ensure_ascii=False).encode()
        except (RecursionError, ValueError, UnicodeError):
            return data
        if isinstance(decoded, dict):
            return decoded
    return data


def _object(data: object, event: str) -> JsonObject:
    if not isinstance(data, dict):
        raise Invalid(f"{event} needs a data object")
    return data


def _holds_nul(value: object) -> bool:
    # A loop, not recursion: the JSON may be nested as deep as the parser allows.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\0" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _member(channel_data: str) -> Member:
    try:
        parsed: Any = json.loads(channel_data, parse_constant=_no_constant)
        json.dumps(parsed, ensure_ascii=False).encode()
    except (RecursionError, ValueError, UnicodeError):
        parsed = None
    user_id = parsed.get("user_id") if isinstance(parsed, dict) else None
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= MAX_USER_ID_CHARS:
        raise Refused(
            400,
            f'channel_data must be a JSON object with a "user_id" of 1 to {MAX_USER_ID_CHARS}'
            " characters",
        )
    user_info = parsed.get("user_info")
    # PostgreSQL stores no NUL character, in text or in jsonb.
    if "\0" in user_id or _holds_nul(user_info):
        raise Refused(400, "channel_data holds a NUL character, which cannot be stored")
    return Member(user_id, user_info)


async def _close_every_socket(app: web.Application) -> None:
    await app[PUSHER_SOCKETS].close_all(frames.RECONNECT, "server shutting down; reconnect")


def setup_routes(app: web.Application) -> None:
    app[PUSHER_TIMING] = Timing()
    app[PUSHER_SOCKETS] = PusherSockets()
    app.router.add_get("/app/{key}", pusher_socket)
    app.on_shutdown.append(_close_every_socket)
