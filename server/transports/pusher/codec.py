"""Pusher protocol 7 frames: `{"event", "channel", "data"}` with `data` a JSON string, as
pusher-js 8 decodes them, and the close codes it acts on.

Every stored event also carries a top-level `"cursor"`: pusher-js builds its event from
`event`, `channel`, `data` and `user_id` only (src/core/connection/protocol/protocol.ts), so
unaware clients never see it, and the resume helper reads it (see README, "Resume").
"""

from __future__ import annotations

import functools

from server.core.channels import PRESENCE_PREFIX, USER_CHANNEL_PREFIX
from server.core.cursor import Cursor
from server.core.events import CloseReason, Disconnect, Event
from server.core.presence import MEMBER_ADDED, MEMBER_REMOVED
from server.protocol import JsonObject, json_string, to_json
from server.transports.pusher.channels import SERVER_TO_USER_PREFIX
from server.transports.pusher.data import pusher_data_from_stored
from server.wire import text_frame

# Close codes: pusher-js does not reconnect after 4000-4099 (4000 itself means "use TLS"),
# backs off and reconnects after 4100-4199, and reconnects at once after 4200-4299.
APP_NOT_FOUND = 4001
UNSUPPORTED_PROTOCOL = 4007
NO_PROTOCOL = 4008
UNAUTHORIZED = 4009
FRAME_REFUSED = 4010
OVER_CAPACITY = 4100
RECONNECT = 4200
PONG_NOT_RECEIVED = 4201
# Error frames that close nothing (Pusher's 4300-4399, "other errors").
INVALID_MESSAGE = 4300
CLIENT_EVENT_RATE_LIMITED = 4301

CLOSE_CODES = {
    # Behind: back off, reconnect, and (with the resume helper) lose nothing.
    CloseReason.TOO_SLOW: OVER_CAPACITY,
    CloseReason.UNAVAILABLE: OVER_CAPACITY,
    CloseReason.CURSOR_REFUSED: OVER_CAPACITY,
    CloseReason.SHUTTING_DOWN: RECONNECT,
    # Signed out or deleted: reconnecting would be refused again.
    CloseReason.SIGNED_OUT: UNAUTHORIZED,
    # A channel was revoked: reconnect at once; that channel's resubscription is refused
    # on its own, the others carry on.
    CloseReason.FORBIDDEN: RECONNECT,
}

_WIRE_NAMES = {
    MEMBER_ADDED: "pusher_internal:member_added",
    MEMBER_REMOVED: "pusher_internal:member_removed",
}


class ClientEvent(Event):
    """A client event (`client-…`): never stored; on a presence channel it names its sender,
    as Pusher's `user_id` beside the event."""

    __slots__ = ("user_id",)

    def __init__(
        self, channel: str, name: str, data: str, origin_socket_id: str, user_id: str | None
    ) -> None:
        super().__init__(0, 0, channel, name, data, origin_socket_id, None)
        self.user_id = user_id


@functools.lru_cache(maxsize=4096)
def _head(name: str, channel: str) -> str:
    # Names repeat across events; their escaped form is built once.
    return f'{{"event":{json_string(name)},"channel":{json_string(channel)},"data":'


def event_text(event: Event, channel: str, cursor: str | None) -> str:
    name = event.name
    if cursor is None:
        if isinstance(event, ClientEvent) and event.user_id is not None:
            return (
                f"{_head(name, channel)}{json_string(event.data)},"
                f'"user_id":{json_string(event.user_id)}}}'
            )
        return f"{_head(name, channel)}{json_string(event.data)}}}"
    if name in _WIRE_NAMES and channel.startswith(PRESENCE_PREFIX):
        # The presence triggers' announcements (db/triggers.sql); the HTTP API refuses to
        # publish these names on presence channels, so only the database makes them.
        name = _WIRE_NAMES[name]
    data = json_string(pusher_data_from_stored(event.data))
    return f'{_head(name, channel)}{data},"cursor":"{cursor}"}}'


class PusherCodec:
    def encode(self, event: Event) -> bytes:
        return text_frame(event_text(event, event.channel, event.cursor))

    def encode_at(self, event: Event, cursor: Cursor) -> bytes:
        return text_frame(event_text(event, event.channel, cursor.encode()))


class ServerToUserCodec:
    """`private-user.{id}`'s events, as a socket signed in as {id} gets them on
    `#server-to-user-{id}`."""

    @staticmethod
    def _channel(event: Event) -> str:
        return SERVER_TO_USER_PREFIX + event.channel[len(USER_CHANNEL_PREFIX) :]

    def encode(self, event: Event) -> bytes:
        return text_frame(event_text(event, self._channel(event), event.cursor))

    def encode_at(self, event: Event, cursor: Cursor) -> bytes:
        return text_frame(event_text(event, self._channel(event), cursor.encode()))


CODEC = PusherCodec()
SERVER_TO_USER_CODEC = ServerToUserCodec()


def frame(event: str, data: JsonObject, channel: str | None = None) -> str:
    """A protocol frame, `data` JSON-encoded into a string as Pusher sends it."""
    body: JsonObject = {"event": event, "data": to_json(data)}
    if channel is not None:
        body["channel"] = channel
    return to_json(body)


def connection_established(socket_id: str, activity_timeout: float) -> str:
    return frame(
        "pusher:connection_established",
        {"socket_id": socket_id, "activity_timeout": max(1, round(activity_timeout))},
    )


def error(code: int | None, message: str) -> str:
    # Pusher sends an error's data as an object, not a string.
    return to_json({"event": "pusher:error", "data": {"code": code, "message": message}})


def subscription_succeeded(channel: str, data: JsonObject) -> str:
    return frame("pusher_internal:subscription_succeeded", data, channel)


def subscription_error(channel: str, status: int, message: str) -> str:
    # The shape pusher-js gives its own authorization failures, so Echo's .error() sees one.
    return frame(
        "pusher:subscription_error",
        {"type": "AuthError", "error": message, "status": status},
        channel,
    )


def signin_success(user_data: str) -> str:
    return frame("pusher:signin_success", {"user_data": user_data})


def resume_complete(channel: str, complete: bool, cursor: str, reason: str | None = None) -> str:
    data: JsonObject = {"channel": channel, "complete": complete, "cursor": cursor}
    if reason is not None:
        data["reason"] = reason
    return frame("pgcast:resume_complete", data, channel)


PING = frame("pusher:ping", {})
PONG = frame("pusher:pong", {})


def close_frame(disconnect: Disconnect) -> tuple[int, str]:
    return CLOSE_CODES[disconnect.reason], disconnect.detail
