"""The JSON shapes clients see: Message and User objects, and WebSocket frames."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

JsonObject = dict[str, Any]

MESSAGES_CHANNEL = "messages"
MESSAGE_DELETED = "message-deleted"

_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# How _compact writes a string (ensure_ascii=False), for frames built as text.
_string = json.encoder.encode_basestring
_MESSAGES_CHANNEL_JSON = _string(MESSAGES_CHANNEL)


def iso_timestamp(moment: datetime) -> str:
    """Laravel's serialization: UTC with microseconds and a Z suffix."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def user_json(user_id: int, name: str | None, avatar_url: str | None) -> JsonObject | None:
    # No name means the author was deleted before the event was delivered; a
    # message-deleted for the message follows, since messages cascade with their author.
    if name is None:
        return None
    return {"id": user_id, "name": name, "avatar_url": avatar_url}


def message_json(
    message_id: int,
    user_id: int,
    content: str,
    created_at: datetime,
    updated_at: datetime,
    author_name: str | None,
    author_avatar_url: str | None,
) -> JsonObject:
    return {
        "id": message_id,
        "user_id": user_id,
        "content": content,
        "created_at": iso_timestamp(created_at),
        "updated_at": iso_timestamp(updated_at),
        "user": user_json(user_id, author_name, author_avatar_url),
    }


def event_frame(
    kind: str,
    message_id: int,
    user_id: int,
    content: str | None,
    created_at: str | None,
    updated_at: str | None,
    author_name: str | None,
    author_avatar_url: str | None,
    cursor: str,
) -> str:
    """The frame of a message event, as `frame(kind, MESSAGES_CHANNEL, data, cursor)` writes
    it: data is {"id": message_id} for message-deleted, else {"message": message_json(...)}
    with the timestamps already formatted by iso_timestamp's rules (ValueError if missing).

    The same text, written directly: a replay builds one per event, and a dict through the
    JSON encoder cost several times more. Ids are ints and the cursor is base64url, which
    JSON writes as they are.
    """
    head = _EVENT_HEADS.get(kind) or _event_head(kind)
    if kind == MESSAGE_DELETED:
        return f'{head}{{"id":{message_id}}},"cursor":"{cursor}"}}'
    if created_at is None or updated_at is None:
        raise ValueError("message event without its timestamps")
    text = "null" if content is None else _string(content)
    return (
        f'{head}{{"message":{{"id":{message_id},"user_id":{user_id},"content":{text},'
        f'"created_at":{_string(created_at)},"updated_at":{_string(updated_at)},'
        f'"user":{_user_text(user_id, author_name, author_avatar_url)}}}}},"cursor":"{cursor}"}}'
    )


def _event_head(kind: str) -> str:
    return f'{{"event":{_string(kind)},"channel":{_MESSAGES_CHANNEL_JSON},"data":'


_EVENT_HEADS = {
    kind: _event_head(kind) for kind in ("new-message", "message-updated", MESSAGE_DELETED)
}


# A replay's events mostly share a handful of authors.
@functools.lru_cache(maxsize=1024)
def _user_text(user_id: int, name: str | None, avatar_url: str | None) -> str:
    return _compact(user_json(user_id, name, avatar_url))


def frame(event: str, channel: str, data: JsonObject, cursor: str | None = None) -> str:
    body: JsonObject = {"event": event, "channel": channel, "data": data}
    if cursor is not None:
        body["cursor"] = cursor
    return _compact(body)


def connected_frame(socket_id: str, cursor: str) -> str:
    return frame("connected", "", {"socket_id": socket_id, "cursor": cursor})


def to_json(body: JsonObject) -> str:
    return _compact(body)
