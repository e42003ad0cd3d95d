"""Reads the event log (`broadcasts`) in commit order: the one query live delivery and
replay use, turned into protocol-free events."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any, Final

import psycopg

from server import queries
from server.core.cursor import BatchCursors, Cursor, CursorError, Snapshot
from server.core.events import Event
from server.db import DbConnection

log = logging.getLogger(__name__)

HMAC_INNER_PAD = 0x36


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


async def notify_key(conn: DbConnection) -> bytes | None:
    """The key that signs what notifications carry (db/triggers.sql), or None when this role
    may not read it or the database has none: every notification is then read from the log."""
    try:
        cursor = await conn.execute(queries.NOTIFY_KEY)
        row = await cursor.fetchone()
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedTable) as error:
        log.warning("events are read from the log on every notification: %s", error)
        return None
    if row is None:
        return None
    inner_key: bytes = row[0]
    # HMAC pads a 32-byte key with zeros to SHA-256's 64-byte block before the XOR.
    return bytes(byte ^ HMAC_INNER_PAD for byte in inner_key[:32])


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


class Page:
    """One page of the event log, as read. Where it ends is known at once, so a replay can
    ask for the next page while it sends this one."""

    __slots__ = ("complete", "end", "events")

    def __init__(self, position: Cursor, rows: list[tuple[Any, ...]], limit: int) -> None:
        here_text, here_taken_at_us = rows[0][0], rows[0][1]
        here = Snapshot.parse(here_text)
        # With no events, the one row is there only to carry `here`.
        if rows[0][2] is None:
            rows = []
        # Events of the position's own batch (part 1), then of the batch from its `next` to
        # `here` (part 2). Each batch's cursors are made once it has an event: a live read
        # usually has events of part 2 only.
        rest_of_batch: BatchCursors | None = None
        after_batch: BatchCursors | None = None
        events: list[Event] = []
        for _, _, part, event_id, tx, channel, name, data, origin in rows:
            if part == 2:
                if after_batch is None:
                    after_batch = BatchCursors(
                        position.database, here_taken_at_us, position.next, here
                    )
                batch = after_batch
            else:
                if rest_of_batch is None:
                    rest_of_batch = BatchCursors(
                        position.database, position.taken_at_us, position.prev, position.next
                    )
                batch = rest_of_batch
            events.append(Event(event_id, tx, channel, name, data, origin, batch))
        self.events: Final = events
        self.complete: Final = len(rows) < limit
        """True when nothing committed before the page's snapshot remains after `end`."""
        self.end: Final = (
            Cursor.at(position.database, here_taken_at_us, here)
            if self.complete
            else events[-1].position
        )

    def __len__(self) -> int:
        return len(self.events)


async def read_page(
    conn: DbConnection, position: Cursor, limit: int, channels: Sequence[str] | None = None
) -> Page:
    """The next events after `position`, at most `limit`: of every channel, or of `channels`."""
    parameters = page_parameters(position, limit)
    if channels is None:
        result = await conn.execute(queries.EVENTS_PAGE, parameters)
        rows = await result.fetchall()
    else:
        parameters["channels"] = list(channels)
        # The planner settings must hold for the page query and nothing else. Pipelined, the
        # two statements go out together and end at one Sync, so PostgreSQL runs them in one
        # implicit transaction (the extended protocol's rule, whatever its version) and the
        # settings lapse with it, error or not: one round trip per page, as for a single
        # statement, where BEGIN, the settings, the query and COMMIT took four.
        async with conn.pipeline():
            await conn.execute(queries.ORDERED_INDEX_SCANS_ONLY)
            result = await conn.execute(queries.CHANNEL_EVENTS_PAGE, parameters)
        rows = await result.fetchall()
    return Page(position, rows, limit)
