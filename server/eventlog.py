"""Reads the event log in commit order: the one query both live delivery and replay use."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace

from server import queries
from server.cursor import Cursor, CursorError, Snapshot
from server.db import DbConnection
from server.protocol import MESSAGES_CHANNEL, frame, message_json
from server.wire import text_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Broadcast:
    """One event, already encoded as the frame every socket receives: its JSON text, and
    that text as a WebSocket frame on the wire."""

    event_id: int
    tx: int
    origin_socket_id: str | None
    frame: str
    cursor: Cursor
    wire: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "wire", text_frame(self.frame))

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
    """A short id for this database, baked into cursors so foreign ones are refused."""
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
    newest_xmax, pruned_through_us = row
    assert isinstance(newest_xmax, int)
    if position.next.xmax > newest_xmax:
        raise CursorError("cursor is ahead of this database")
    if isinstance(pruned_through_us, int) and position.taken_at_us <= pruned_through_us:
        raise CursorError("cursor is older than the event retention; reload")
    return position


async def read_page(conn: DbConnection, position: Cursor, limit: int) -> Page:
    """The next events after `position`, at most `limit`, each framed with its own cursor."""
    result = await conn.execute(
        queries.EVENTS_PAGE,
        {
            "in_batch": not position.on_boundary,
            "prev": str(position.prev),
            "next": str(position.next),
            "prev_xmax": str(position.prev.xmax),
            "next_xmax": str(position.next.xmax),
            "after_tx": None if position.after is None else str(position.after[0]),
            "after_id": None if position.after is None else position.after[1],
            "limit": limit,
        },
    )
    rows = await result.fetchall()
    here_text, here_taken_at_us = rows[0][0], rows[0][1]
    here = Snapshot.parse(here_text)

    broadcasts: list[Broadcast] = []
    last_cursor = position
    event_rows = [row for row in rows[:limit] if row[2] is not None]
    for row in event_rows:
        (_, _, part, event_id, tx, kind, message_id, user_id, content) = row[:9]
        (created_at, updated_at, origin_socket_id, author_name, author_avatar) = row[9:]
        if part == 1:
            last_cursor = replace(position, after=(tx, event_id))
        else:
            last_cursor = Cursor(
                position.database, here_taken_at_us, position.next, here, (tx, event_id)
            )
        try:
            if kind == "message-deleted":
                data: dict[str, object] = {"id": message_id}
            else:
                message = message_json(
                    message_id, user_id, content, created_at, updated_at, author_name, author_avatar
                )
                data = {"message": message}
            encoded = frame(kind, MESSAGES_CHANNEL, data, last_cursor.encode())
        except (TypeError, ValueError, AttributeError) as error:
            # A row written by hand into message_events can be malformed; it must not stall
            # delivery of everything after it.
            log.error("skipping unreadable event %s: %s", event_id, error)
            continue
        broadcasts.append(Broadcast(event_id, tx, origin_socket_id, encoded, last_cursor))

    complete = len(event_rows) < limit
    end = Cursor.at(position.database, here_taken_at_us, here) if complete else last_cursor
    return Page(broadcasts, end, complete)
