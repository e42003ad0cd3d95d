"""Pusher's channel kinds, and the one Pusher channel whose name is not a pgcast channel.

`#server-to-user-{id}` (what a socket signed in as user {id} may subscribe to) carries the
events of `private-user.{id}`: pgcast's own channel of that user, which a `broadcasts` row,
a direct message or a notification reaches, and which the HTTP API's `#server-to-user-…`
publishes are written to. Every other Pusher channel is the pgcast channel of that name.
"""

from __future__ import annotations

import enum
import re

from server.core.channels import PRESENCE_PREFIX, PRIVATE_PREFIX, USER_CHANNEL_PREFIX

SERVER_TO_USER_PREFIX = "#server-to-user-"
ENCRYPTED_PREFIX = "private-encrypted-"
# A user id that can become part of a channel name (`private-user.{id}`).
_USER_ID = re.compile(r"[-a-zA-Z0-9_=@,.;]{1,128}")


class Kind(enum.Enum):
    PUBLIC = "public"
    PRIVATE = "private"
    ENCRYPTED = "encrypted"
    PRESENCE = "presence"
    SERVER_TO_USER = "server-to-user"


def kind_of(channel: str) -> Kind:
    if channel.startswith(SERVER_TO_USER_PREFIX):
        return Kind.SERVER_TO_USER
    if channel.startswith(ENCRYPTED_PREFIX):
        return Kind.ENCRYPTED
    if channel.startswith(PRIVATE_PREFIX):
        return Kind.PRIVATE
    if channel.startswith(PRESENCE_PREFIX):
        return Kind.PRESENCE
    return Kind.PUBLIC


def is_user_id(text: str) -> bool:
    return _USER_ID.fullmatch(text) is not None


def server_to_user_channel(user_id: str) -> str:
    return f"{SERVER_TO_USER_PREFIX}{user_id}"


def stored_channel(channel: str) -> str:
    """The pgcast channel that carries Pusher channel `channel` (what a publish writes to)."""
    if channel.startswith(SERVER_TO_USER_PREFIX):
        return USER_CHANNEL_PREFIX + channel[len(SERVER_TO_USER_PREFIX) :]
    return channel
