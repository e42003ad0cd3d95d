"""Reads the event log in commit order: the one query both live delivery and replay use."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Final

from server import queries
from server.cursor import BatchCursors, Cursor, CursorError, Snapshot
from server.db import DbConnection
from server.protocol import event_frame
from server.wire import text_frame

log = logging.getLogger(__name__)


class Broadcast:
    """One event, already encoded as the frame every socket receives: its JSON text, and
    that text as a WebSocket frame on the wire. Shared by every socket, so never changed
    (Final); a plain class with slots, because one is built per event and a frozen dataclass
    cost three times as much to construct."""

    __slots__ = ("cursor", "event_id", "frame", "origin_socket_id", "tx", "wire")

    def __init__(
        self, event_id: int, tx: int, origin_socket_id: str | None, frame: str, cursor: Cursor
    ) -> None:
        self.event_id: Final = event_id
        self.tx: Final = tx
        self.origin_socket_id: Final = origin_socket_id
        self.frame: Final = frame
        self.cursor: Final = cursor
        self.wire: Final = text_frame(frame)

    def __repr__(self) -> str:
        return f"Broadcast(event_id={self.event_id}, tx={self.tx}, cursor={self.cursor!r})"

    def framed_with(self, cursor: Cursor) -> bytes:
        """The same frame, on the wire, carrying another cursor (always the frame's last key)."""
        head = self.frame[: self.frame.rindex(',"cursor":"')]
        return text_frame(f'{head},"cursor":"{cursor.encode()}"}}')


@dataclass(frozen=True, slots=True)
class Page:
    broadcasts: list[Broadcast]
    end: Cursor
    complete: bool
    """True when nothing committed before the page's snapshot remains after `end`."""


async def database_identity(conn: DbConnection) -> str:
    """A short id for this database, baked into cursors so foreign ones are refused.

    First the event log is adopted (db/triggers.sql `pgcast_adopt_event_log`): a database
    restored into another cluster gets a new identity here, before any cursor is issued or
    checked, so whatever reads the log (the server, `pgcast tail`) does it right, migrated
    or not.
    """
    cursor = await conn.execute(queries.ADOPT_EVENT_LOG)
    adopted = await cursor.fetchone()
    if adopted is not None and adopted[0] is not None:
        log.warning("%s", adopted[0])
    cursor = await conn.execute(queries.DATABASE_IDENTITY)
    row = await cursor.fetchone()
    if row is None:
        raise RuntimeError("pgcast_instance is empty; run `pgcast migrate`")
    return hashlib.sha256(f"{row[0]}:{row[1]}".encode()).hexdigest()[:16]


async def current_position(conn: DbConnection, database: str) -> Cursor:
    cursor = await conn.execute(queries.CURRENT_POSITION)
    row = await cursor.fetchone()
    assert row is not None
    snapshot_text, taken_at_us = row
    return Cursor.at(database, taken_at_us, Snapshot.parse(snapshot_text))


async def resumable_position(conn: DbConnection, text: str, database: str) -> Cursor:
    """The position a client's cursor names; CursorError for one from another database,
    from the future, older than retention, or not a cursor at all."""
    position = Cursor.decode(text)
    if position.database != database:
        raise CursorError("cursor is from another database")
    cursor = await conn.execute(queries.CURSOR_LIMITS)
    row = await cursor.fetchone()
    assert row is not None
    now_text, pruned_tx = row
    now = Snapshot.parse(now_text)
    if position.next.xmax > now.xmax:
        raise CursorError("cursor is ahead of this database")
    # A transaction in progress now was in progress when any earlier snapshot of this cluster
    # was taken, if it had begun. A cursor that sees one as finished was not taken here, and
    # a replay from it could return rows this statement's snapshot does not see yet.
    if any(tx < position.next.xmax and tx not in position.next.xip for tx in now.xip):
        raise CursorError("cursor is ahead of this database")
    # The cursor owes every event its `prev` does not see. All of those are in the log only
    # if `prev` saw every transaction up to the newest pruned one. Its own clock time says
    # nothing: the client wrote it.
    if pruned_tx is not None and position.prev.xmin <= pruned_tx:
        raise CursorError("cursor is older than the event retention; reload")
    return position


# Bounds of a bigint event id, so that a key (tx, event id) can name "before the first event
# of tx" exactly.
_MIN_EVENT_ID = -(1 << 63)
_MAX_EVENT_ID = (1 << 63) - 1


def page_parameters(position: Cursor, limit: int) -> dict[str, object]:
    """EVENTS_PAGE's parameters: each branch starts at the first key (tx, event id) that
    `position` still owes, so every page is a seek into the (tx, id) index, not a walk
    from the start of the batch."""
    if position.after is None:
        owed = (0, _MIN_EVENT_ID)
    else:
        tx, event_id = position.after
        owed = (tx, event_id + 1) if event_id < _MAX_EVENT_ID else (tx + 1, _MIN_EVENT_ID)
    # Below prev's xmax only prev's in-progress transactions belong to the batch (the xip
    # branch); from it on, every transaction next sees (the range branch).
    from_tx, from_id = max((position.prev.xmax, _MIN_EVENT_ID), owed)
    return {
        "in_batch": not position.on_boundary,
        "prev": str(position.prev),
        "next": str(position.next),
        "next_xmax": str(position.next.xmax),
        "from_tx": str(from_tx),
        "from_id": from_id,
        "xip_from_tx": str(owed[0]),
        "xip_from_id": owed[1],
        "limit": limit,
    }


class PageRows:
    """One page of the event log as read, before its events are framed. Where it ends is
    known at once, so a replay can ask for the next page while it frames this one."""

    __slots__ = ("_batches", "_rows", "complete", "end")

    def __init__(self, position: Cursor, rows: list[tuple[Any, ...]], limit: int) -> None:
        here_text, here_taken_at_us = rows[0][0], rows[0][1]
        here = Snapshot.parse(here_text)
        # Events of the position's own batch (part 1), then of the batch from its `next` to
        # `here` (part 2).
        self._batches = (
            BatchCursors(position.database, position.taken_at_us, position.prev, position.next),
            BatchCursors(position.database, here_taken_at_us, position.next, here),
        )
        # With no events, the one row is there only to carry `here`.
        self._rows = rows if rows[0][2] is not None else []
        self.complete: Final = len(self._rows) < limit
        """True when nothing committed before the page's snapshot remains after `end`."""
        if self.complete:
            end = Cursor.at(position.database, here_taken_at_us, here)
        else:
            _, _, part, event_id, tx = self._rows[-1][:5]
            end = self._batches[part - 1].cursor(tx, event_id)
        self.end: Final = end

    def __len__(self) -> int:
        return len(self._rows)

    def frames(self, start: int = 0, stop: int | None = None) -> list[Broadcast]:
        """The events from `start` to `stop`, each framed with its own cursor."""
        broadcasts: list[Broadcast] = []
        for row in self._rows[start:stop]:
            text = self._text(row)
            if text is not None:
                _, _, part, event_id, tx = row[:5]
                cursor = self._batches[part - 1].cursor(tx, event_id)
                broadcasts.append(Broadcast(event_id, tx, row[11], text, cursor))
        return broadcasts

    def wires(self, start: int = 0, stop: int | None = None) -> list[bytes]:
        """What `frames` would put on the wire, without the rest of a Broadcast: a replay
        needs only the bytes, and skipping the rest makes each event about 40% cheaper."""
        wires: list[bytes] = []
        for row in self._rows[start:stop]:
            text = self._text(row)
            if text is not None:
                wires.append(text_frame(text))
        return wires

    def _text(self, row: tuple[Any, ...]) -> str | None:
        """The event's frame as JSON text; None (and logged) for a row that cannot be read."""
        (
            _,
            _,
            part,
            event_id,
            tx,
            kind,
            message_id,
            user_id,
            content,
            created_at,
            updated_at,
            _,
            author_name,
            author_avatar_url,
        ) = row
        try:
            return event_frame(
                kind,
                message_id,
                user_id,
                content,
                created_at,
                updated_at,
                author_name,
                author_avatar_url,
                self._batches[part - 1].encode(tx, event_id),
            )
        except (TypeError, ValueError, AttributeError) as error:
            # A row written by hand into message_events can be malformed; it must not stall
            # delivery of everything after it (the page's end is past it anyway).
            log.error("skipping unreadable event %s: %s", event_id, error)
            return None


async def read_rows(conn: DbConnection, position: Cursor, limit: int) -> PageRows:
    """The next events after `position`, at most `limit`, not framed yet."""
    result = await conn.execute(queries.EVENTS_PAGE, page_parameters(position, limit))
    return PageRows(position, await result.fetchall(), limit)


async def read_page(conn: DbConnection, position: Cursor, limit: int) -> Page:
    """The next events after `position`, at most `limit`, each framed with its own cursor."""
    rows = await read_rows(conn, position, limit)
    return Page(rows.frames(), rows.end, rows.complete)
