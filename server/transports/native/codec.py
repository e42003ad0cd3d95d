"""pgcast's own frames: one JSON text frame per event, with its cursor, and its close codes."""

from __future__ import annotations

import functools

from server.core.cursor import Cursor
from server.core.events import CloseReason, Disconnect, Event
from server.core.presence import Roster
from server.protocol import frame, json_string
from server.wire import text_frame

CLOSE_CODES = {
    CloseReason.TOO_SLOW: 1013,
    CloseReason.UNAVAILABLE: 1013,
    CloseReason.SHUTTING_DOWN: 1001,
    CloseReason.CURSOR_REFUSED: 4400,
    CloseReason.SIGNED_OUT: 4401,
    CloseReason.FORBIDDEN: 4403,
}
# What a client should do next, where the reason alone does not say.
_ADVICE = {
    CloseReason.TOO_SLOW: "; reconnect with your cursor",
    CloseReason.UNAVAILABLE: "; reconnect with your cursor",
}


def close_frame(disconnect: Disconnect) -> tuple[int, str]:
    """The close code and reason a native client gets for `disconnect`."""
    return CLOSE_CODES[disconnect.reason], disconnect.detail + _ADVICE.get(disconnect.reason, "")


@functools.lru_cache(maxsize=4096)
def _head(name: str, channel: str) -> str:
    # Event and channel names repeat across events; their escaped form is built once.
    return f'{{"event":{json_string(name)},"channel":{json_string(channel)},"data":'


def event_text(event: Event, cursor: str | None) -> str:
    """`{"event", "channel", "data", "cursor"}`, as `frame()` writes it, without decoding
    `data`: it is JSON already, and a replay builds one of these per event. An ephemeral
    event has no cursor."""
    if cursor is None:
        return f"{_head(event.name, event.channel)}{event.data}}}"
    return f'{_head(event.name, event.channel)}{event.data},"cursor":"{cursor}"}}'


class NativeCodec:
    def encode(self, event: Event) -> bytes:
        return text_frame(event_text(event, event.cursor))

    def encode_at(self, event: Event, cursor: Cursor) -> bytes:
        return text_frame(event_text(event, cursor.encode()))


CODEC = NativeCodec()


def connected_frame(socket_id: str, cursor: str, channels: tuple[str, ...]) -> str:
    return frame(
        "connected", "", {"socket_id": socket_id, "cursor": cursor, "channels": list(channels)}
    )


def presence_frame(roster: Roster) -> str:
    """`{"event": "presence", "channel", "data": {"members": [{"user_id", "user_info"}]}}`:
    the whole member list, which replaces the client's."""
    return frame("presence", roster.channel, {"members": [m.json() for m in roster.members]})
