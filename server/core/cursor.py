"""Commit-ordered cursors: where a client stands in the stream of broadcasts.

A position is built from PostgreSQL snapshots (see docs/delivery.md). `prev` and `next` bound
the batch the client was in: it has every event committed before `prev`, and of the events
committed between `prev` and `next` those up to `after` (ordered by transaction id, then event
id). A cursor with `prev == next` and no `after` sits exactly on the snapshot `next`.
The encoding is opaque to clients; it is validated strictly because it comes from them.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass


class CursorError(ValueError):
    """The client sent a cursor the server cannot honour; the message is the close reason."""


_NONE_IN_PROGRESS: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Snapshot:
    """A PostgreSQL `pg_snapshot`: which transactions had committed when it was taken."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        try:
            xmin_text, xmax_text, xip_text = text.split(":")
            xmin, xmax = int(xmin_text), int(xmax_text)
            xip = frozenset(map(int, xip_text.split(","))) if xip_text else _NONE_IN_PROGRESS
        except ValueError:
            raise CursorError("malformed snapshot in cursor") from None
        if not 0 < xmin <= xmax or (xip and not xmin <= min(xip) <= max(xip) < xmax):
            raise CursorError("inconsistent snapshot in cursor")
        return cls(xmin, xmax, xip)

    def __str__(self) -> str:
        return self.text

    @property
    def text(self) -> str:
        """As PostgreSQL writes it. Kept once made (outside the fields, so equality and
        hashing ignore it): every read of the event log sends two."""
        text: str | None = self.__dict__.get("_text")
        if text is None:
            text = f"{self.xmin}:{self.xmax}:{','.join(map(str, sorted(self.xip)))}"
            object.__setattr__(self, "_text", text)
        return text

    def sees(self, tx: int) -> bool:
        """Whether transaction `tx` had committed when this snapshot was taken."""
        return tx < self.xmin or (tx < self.xmax and tx not in self.xip)

    def sees_all_of(self, other: Snapshot) -> bool:
        """Whether every transaction `other` saw committed, this one did too.

        Compared as sets, not by which looks newer: a snapshot the live feed made from a
        notification (`with_committed`) may see a transaction that a later one PostgreSQL
        took does not see yet, in either order of their `xmax`.
        """
        # From this one's xmax on, `other` sees every transaction not in its list.
        if other.xmax > self.xmax:
            in_progress_above = sum(1 for tx in other.xip if tx >= self.xmax)
            if other.xmax - self.xmax > in_progress_above:
                return False
        return not any(other.sees(tx) for tx in self.xip)

    def union(self, other: Snapshot) -> Snapshot:
        """The snapshot that sees what either of the two sees."""
        xmax = max(self.xmax, other.xmax)
        xip = frozenset(
            [tx for tx in self.xip if not other.sees(tx)]
            + [tx for tx in other.xip if not self.sees(tx)]
        )
        return Snapshot(min(xip) if xip else xmax, xmax, xip)

    def with_committed(self, tx: int) -> Snapshot:
        """This snapshot, and transaction `tx` committed too (a notification said so).

        The transactions between this `xmax` and `tx` stay in progress: of those, the ones
        that broadcast are told later, each by its own notification, and the others never
        are, so the list grows with them until the next read of the log replaces it with a
        snapshot PostgreSQL took (EventFeed keeps it short).
        """
        if tx >= self.xmax:
            xip = self.xip.union(range(self.xmax, tx))
            xmax = tx + 1
        else:
            xip = self.xip - {tx}
            xmax = self.xmax
        return Snapshot(min(xip) if xip else xmax, xmax, frozenset(xip))


@dataclass(frozen=True)
class Cursor:
    database: str
    taken_at_us: int
    prev: Snapshot
    next: Snapshot
    after: tuple[int, int] | None

    @classmethod
    def at(cls, database: str, taken_at_us: int, snapshot: Snapshot) -> Cursor:
        return cls(database, taken_at_us, snapshot, snapshot, None)

    @property
    def on_boundary(self) -> bool:
        return self.prev == self.next and self.after is None

    def encode(self) -> str:
        if self.after is not None:
            return BatchCursors(self.database, self.taken_at_us, self.prev, self.next).encode(
                *self.after
            )
        fields: list[object] = [1, self.database, self.taken_at_us, str(self.next)]
        if not self.on_boundary:
            fields.append(str(self.prev))
        return _base64(json.dumps(fields, separators=(",", ":")).encode())

    @classmethod
    def decode(cls, text: str) -> Cursor:
        if not text or len(text) > 4096:
            raise CursorError("cursor is empty or too long")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            fields = json.loads(raw)
        except (binascii.Error, ValueError, RecursionError):
            # RecursionError: JSON nested deeper than the parser's stack (`[[[[…` is enough).
            raise CursorError("cursor is not one this server issued") from None
        if not isinstance(fields, list) or len(fields) not in (4, 5, 7) or fields[0] != 1:
            raise CursorError("cursor is not one this server issued")
        database, taken_at_us, next_text = fields[1], fields[2], fields[3]
        if not isinstance(database, str) or not _is_count(taken_at_us):
            raise CursorError("cursor is not one this server issued")
        if not isinstance(next_text, str):
            raise CursorError("malformed snapshot in cursor")
        next_snapshot = Snapshot.parse(next_text)
        prev_snapshot = next_snapshot
        after: tuple[int, int] | None = None
        if len(fields) >= 5:
            if not isinstance(fields[4], str):
                raise CursorError("malformed snapshot in cursor")
            prev_snapshot = Snapshot.parse(fields[4])
            if prev_snapshot.xmax > next_snapshot.xmax or prev_snapshot.xmin > next_snapshot.xmin:
                raise CursorError("inconsistent snapshots in cursor")
        if len(fields) == 7:
            tx, event_id = fields[5], fields[6]
            if not (_is_count(tx) and _is_count(event_id)) or tx >= next_snapshot.xmax:
                raise CursorError("inconsistent position in cursor")
            after = (tx, event_id)
        return cls(database, taken_at_us, prev_snapshot, next_snapshot, after)


class BatchCursors:
    """The cursors of one batch's events, which differ only in `after`: replay and live
    delivery give every event its own cursor, so their constant part is encoded once.

    base64 turns each group of 3 bytes into 4 characters on its own, so the base64 of a JSON
    head padded to a multiple of 3 bytes, followed by the base64 of `tx,id]`, is the base64
    of the whole array. The padding is spaces after a comma, which JSON ignores: `decode`
    reads these cursors as it reads the compact ones issued before.
    """

    __slots__ = ("_database", "_head", "_next", "_prev", "_taken_at_us")

    def __init__(self, database: str, taken_at_us: int, prev: Snapshot, next: Snapshot) -> None:
        self._database = database
        self._taken_at_us = taken_at_us
        self._prev = prev
        self._next = next
        # What json.dumps([1, database, taken_at_us, next, prev]) writes, less its `]`:
        # a snapshot's text is digits, colons and commas, so it needs no escaping.
        head = f'[1,{_json_string(database)},{taken_at_us},"{next.text}","{prev.text}",'.encode()
        self._head = _base64(head + b" " * (-len(head) % 3))

    def cursor(self, tx: int, event_id: int) -> Cursor:
        return Cursor(self._database, self._taken_at_us, self._prev, self._next, (tx, event_id))

    def encode(self, tx: int, event_id: int) -> str:
        return self._head + _base64(f"{tx},{event_id}]".encode())


_URLSAFE = bytes.maketrans(b"+/", b"-_")
_json_string = json.encoder.encode_basestring_ascii


def _base64(raw: bytes) -> str:
    """base64url without padding (base64.urlsafe_b64encode, without its Python layers)."""
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63
