"""Presence: who is on a `presence-…` channel. Members are users, not sockets: a user with
three tabs is one member, announced when their first socket joins and when their last one
leaves (after a grace, so a quick reconnect announces nothing).

The store is an interface; the one pgcast runs keeps the members in PostgreSQL, shared by
every process (server/pg/presence.py). Its announcements are ordinary events of the log on
the presence channel, named MEMBER_ADDED and MEMBER_REMOVED, which each transport names its
own way on the wire.

A socket that joins gets a `Roster`: the members as one snapshot of the database saw them.
The member events that snapshot saw are in the roster already, and those it did not see come
after it; `listed_already` tells them apart, so the socket gets the list and then exactly the
changes after it, however the two race.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from server.core.cursor import Snapshot
from server.core.events import Event

# Protocol-neutral event names; each transport names them its own way on the wire.
MEMBER_ADDED: Final = "member_added"
MEMBER_REMOVED: Final = "member_removed"
MEMBER_EVENTS: Final = frozenset({MEMBER_ADDED, MEMBER_REMOVED})


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    user_info: Any = None
    """Whatever the authorization said about the user (JSON), shown to the other members."""

    def json(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "user_info": self.user_info}


@dataclass(frozen=True, slots=True)
class Roster:
    """A channel's members, each user once, as the snapshot `seen_by` saw them."""

    channel: str
    members: Sequence[Member]
    seen_by: Snapshot

    def by_user(self) -> dict[str, Any]:
        """User id -> user info (Pusher's `hash`), in the roster's order."""
        return {member.user_id: member.user_info for member in self.members}

    def listed_already(self, event: Event) -> bool:
        """Whether `event` is a member change this roster already reflects: sending it after
        the roster would announce again someone the list has (or no longer has)."""
        return event.channel == self.channel and listed_already(event, self.seen_by)


def listed_already(event: Event, seen_by: Snapshot) -> bool:
    """Whether `event` is a member change that a member list read in `seen_by` reflects."""
    return event.name in MEMBER_EVENTS and event.cursor is not None and seen_by.sees(event.tx)


class PresenceStore(Protocol):
    async def join(self, channel: str, socket_id: str, member: Member) -> Roster:
        """Socket `socket_id` is on `channel` as `member` (announced if the user is new
        there); the channel's members, read after the join."""

    async def leave(self, channel: str, socket_id: str) -> None:
        """Socket `socket_id` left `channel`; the user's leave is announced if it was their
        last socket and they do not come back within the grace."""

    async def roster(self, channel: str) -> Roster:
        """The channel's members now."""

    async def users(self, channels: Sequence[str]) -> dict[str, list[str]]:
        """The user ids on each of `channels` (a channel without members is left out)."""
