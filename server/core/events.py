"""A broadcast as the core sees it: no protocol, no frame, only what happened and where it
stands in commit order. Each transport encodes it once with its codec, and every socket of
that transport shares the bytes."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Protocol

from server.core.cursor import BatchCursors, Cursor


class Event:
    """One row of the event log, or an ephemeral event that is never stored (a client event:
    no transaction, no cursor). `data` is the payload as JSON text, exactly as stored: the
    core never parses it, and a transport copies it into its frames.

    A plain class with slots, because one is built per event and per replayed event.
    """

    __slots__ = (
        "_batch",
        "_codec",
        "_other_codecs",
        "_wire",
        "channel",
        "cursor",
        "data",
        "id",
        "name",
        "origin",
        "tx",
    )

    def __init__(
        self,
        event_id: int,
        tx: int,
        channel: str,
        name: str,
        data: str,
        origin_socket_id: str | None,
        batch: BatchCursors | None,
    ) -> None:
        self.id: Final = event_id
        self.tx: Final = tx
        self.channel: Final = channel
        self.name: Final = name
        self.data: Final = data
        self.origin: Final = origin_socket_id
        self._batch = batch
        self.cursor: Final = None if batch is None else batch.encode(tx, event_id)
        """The opaque cursor of the position just after this event; None if ephemeral."""
        # The first codec's bytes sit in two slots: most deployments speak one protocol, and
        # the fan-out asks for them once per socket, so a dict per event would cost each.
        self._codec: Codec | None = None
        self._wire = b""
        self._other_codecs: dict[Codec, bytes] | None = None

    @classmethod
    def ephemeral(cls, channel: str, name: str, data: str, origin_socket_id: str | None) -> Event:
        """An event that is delivered live once and never stored or replayed."""
        return cls(0, 0, channel, name, data, origin_socket_id, None)

    @property
    def position(self) -> Cursor:
        assert self._batch is not None, "an ephemeral event has no position"
        return self._batch.cursor(self.tx, self.id)

    def encoded(self, codec: Codec) -> bytes:
        """This event as `codec` puts it on the wire; encoded once, shared by every socket."""
        if codec is self._codec:
            return self._wire
        if self._codec is None:
            self._codec = codec
            self._wire = codec.encode(self)
            return self._wire
        others = self._other_codecs
        if others is None:
            others = self._other_codecs = {}
        wire = others.get(codec)
        if wire is None:
            wire = others[codec] = codec.encode(self)
        return wire

    def __repr__(self) -> str:
        return f"Event(id={self.id}, tx={self.tx}, channel={self.channel!r}, name={self.name!r})"


class Codec(Protocol):
    """How one transport puts events on the wire."""

    def encode(self, event: Event) -> bytes:
        """The bytes every socket of this transport receives for `event`."""

    def encode_at(self, event: Event, cursor: Cursor) -> bytes:
        """The same event for one socket whose position after it is `cursor` instead of
        `event.cursor` (a socket that has just caught up; see Connection.offer)."""


class CloseReason(enum.Enum):
    """Why the core ends a connection; each transport maps reasons to its own close codes."""

    TOO_SLOW = "too_slow"
    SIGNED_OUT = "signed_out"
    FORBIDDEN = "forbidden"
    SHUTTING_DOWN = "shutting_down"
    CURSOR_REFUSED = "cursor_refused"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason: CloseReason
    detail: str
