"""Presence: who is on a `presence-…` channel. Members are users, not sockets: a user with
three tabs is one member, announced when their first socket joins and when their last one
leaves.

The store is an interface so that a store shared by every process can replace the one
kept in this process's memory; transports only call `join`, `leave` and `members`, and the
store announces member changes as ephemeral events on the channel, which the hub delivers
like any other event (the joining socket itself is left out: it gets the member list).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from server.core.events import Event

# Protocol-neutral event names; each transport names them its own way on the wire.
MEMBER_ADDED = "member_added"
MEMBER_REMOVED = "member_removed"

Announce = Callable[[Sequence[Event]], None]

_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    user_info: Any = None
    """Whatever the authorization said about the user (JSON), shown to the other members."""


class PresenceStore(Protocol):
    async def join(self, channel: str, socket_id: str, member: Member) -> None:
        """Socket `socket_id` is on `channel` as `member`; announces the user if new there."""

    async def leave(self, channel: str, socket_id: str) -> None:
        """Socket `socket_id` left `channel`; announces the user's leave if it was their last."""

    async def members(self, channel: str) -> dict[str, Any]:
        """Every member of `channel`: user id -> user info."""

    def user_counts(self) -> dict[str, int]:
        """Every presence channel with members, and how many users are on it."""


@dataclass
class _OnChannel:
    info: Any
    sockets: set[str] = field(default_factory=set)


class LocalPresence:
    """Members of this process's sockets only, in memory."""

    def __init__(self, announce: Announce) -> None:
        self._announce = announce
        self._channels: dict[str, dict[str, _OnChannel]] = {}
        self._user_of: dict[tuple[str, str], str] = {}

    async def join(self, channel: str, socket_id: str, member: Member) -> None:
        key = (channel, socket_id)
        if key in self._user_of:
            return
        self._user_of[key] = member.user_id
        users = self._channels.setdefault(channel, {})
        present = users.get(member.user_id)
        if present is not None:
            present.sockets.add(socket_id)
            return
        users[member.user_id] = _OnChannel(member.user_info, {socket_id})
        data = _compact({"user_id": member.user_id, "user_info": member.user_info})
        self._announce([Event.ephemeral(channel, MEMBER_ADDED, data, socket_id)])

    async def leave(self, channel: str, socket_id: str) -> None:
        user_id = self._user_of.pop((channel, socket_id), None)
        if user_id is None:
            return
        users = self._channels[channel]
        present = users[user_id]
        present.sockets.discard(socket_id)
        if present.sockets:
            return
        del users[user_id]
        if not users:
            del self._channels[channel]
        data = _compact({"user_id": user_id})
        self._announce([Event.ephemeral(channel, MEMBER_REMOVED, data, socket_id)])

    async def members(self, channel: str) -> dict[str, Any]:
        return {user_id: on.info for user_id, on in self._channels.get(channel, {}).items()}

    def user_counts(self) -> dict[str, int]:
        return {channel: len(users) for channel, users in self._channels.items()}
