"""Channel names, and who may listen: the grammar lives here, the rule in the database
(`pgcast_may_listen`), which the PostgreSQL layer offers through `ListenPolicy`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Protocol

MESSAGES = "messages"
MAX_CHANNELS_PER_SOCKET = 100

# Pusher's rule, which the `broadcasts` table enforces too.
_CHANNEL_NAME = re.compile(r"[-a-zA-Z0-9_=@,.;]{1,164}")
_EVENT_NAME_MAX = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

PRIVATE_PREFIX = "private-"
PRESENCE_PREFIX = "presence-"
USER_CHANNEL_PREFIX = "private-user."


class ChannelError(ValueError):
    """A channel list a client sent cannot be used; the message says why."""


def is_channel_name(name: str) -> bool:
    return _CHANNEL_NAME.fullmatch(name) is not None


def is_event_name(name: str) -> bool:
    return 0 < len(name) <= _EVENT_NAME_MAX and _CONTROL.search(name) is None


def is_restricted(channel: str) -> bool:
    """Whether the rule may keep a signed-in user out (the others are open to all of them)."""
    return channel.startswith(PRIVATE_PREFIX)


def user_channel(user_id: int) -> str:
    return f"{USER_CHANNEL_PREFIX}{user_id}"


def requested_channels(lists: Sequence[str], singles: Sequence[str]) -> tuple[str, ...]:
    """The channels of a subscription, in the order first named, without repeats.

    `lists` are comma-separated lists; `singles` are one name each, so a name that itself
    contains a comma can be given. Nothing named at all means `messages`.
    """
    names: list[str] = []
    for listed in lists:
        names.extend(listed.split(","))
    names.extend(singles)
    if not names:
        return (MESSAGES,)
    channels = tuple(dict.fromkeys(names))
    for name in channels:
        if not is_channel_name(name):
            shown = name if len(name) <= 40 else name[:40] + "..."
            raise ChannelError(
                f"{shown!r} is not a channel name: 1 to 164 characters of a-z A-Z 0-9 - _ = @ , . ;"
            )
    if len(channels) > MAX_CHANNELS_PER_SOCKET:
        raise ChannelError(f"at most {MAX_CHANNELS_PER_SOCKET} channels per socket")
    return channels


class ListenPolicy(Protocol):
    async def forbidden(self, user_id: int, channels: Iterable[str]) -> list[str]:
        """Those of `channels` that user `user_id` may not listen to, in the order given."""
