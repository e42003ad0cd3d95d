"""The JSON shapes clients see: Message and User objects, and JSON as pgcast writes it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

JsonObject = dict[str, Any]

_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
json_string = json.encoder.encode_basestring
"""How pgcast's JSON writes a string (ensure_ascii=False), for frames built as text."""


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


def frame(event: str, channel: str, data: JsonObject, cursor: str | None = None) -> str:
    body: JsonObject = {"event": event, "channel": channel, "data": data}
    if cursor is not None:
        body["cursor"] = cursor
    return _compact(body)


def to_json(body: JsonObject) -> str:
    return _compact(body)
