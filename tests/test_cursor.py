"""Cursors are opaque to clients but come from them, so decoding is strict."""

from __future__ import annotations

import base64
import json

import pytest

from server.core.cursor import BatchCursors, Cursor, CursorError, Snapshot


def test_snapshot_sees_what_had_committed() -> None:
    snapshot = Snapshot.parse("100:110:103,105")
    assert snapshot.sees(99)
    assert snapshot.sees(104)
    assert not snapshot.sees(103)
    assert not snapshot.sees(105)
    assert not snapshot.sees(110)
    assert str(snapshot) == "100:110:103,105"


@pytest.mark.parametrize(
    "cursor",
    [
        Cursor.at("db1", 123, Snapshot.parse("5:5:")),
        Cursor("db1", 1, Snapshot.parse("5:9:6,7"), Snapshot.parse("8:12:9"), None),
        Cursor("db1", 1, Snapshot.parse("5:9:6,7"), Snapshot.parse("8:12:9"), (7, 42)),
    ],
)
def test_cursor_round_trips(cursor: Cursor) -> None:
    assert Cursor.decode(cursor.encode()) == cursor


def test_boundary_cursor_is_short_enough_for_a_url() -> None:
    cursor = Cursor.at("0123456789abcdef", 1_700_000_000_000_000, Snapshot.parse("1000:1000:"))
    assert len(cursor.encode()) < 96


@pytest.mark.parametrize(
    "text",
    [
        "9:5:",  # xmin above xmax
        "5:9:10",  # in-progress id outside the range
        "a:b:",
        "5:9",
        "0:0:",
    ],
)
def test_inconsistent_snapshots_are_refused(text: str) -> None:
    with pytest.raises(CursorError):
        Snapshot.parse(text)


def test_prev_snapshot_after_next_is_refused() -> None:
    backwards = Cursor("db1", 1, Snapshot.parse("20:30:"), Snapshot.parse("5:9:"), None)
    with pytest.raises(CursorError):
        Cursor.decode(backwards.encode())


def test_position_beyond_next_snapshot_is_refused() -> None:
    beyond = Cursor("db1", 1, Snapshot.parse("5:9:"), Snapshot.parse("8:12:"), (50, 1))
    with pytest.raises(CursorError):
        Cursor.decode(beyond.encode())


def _compact_cursor(fields: list[object]) -> str:
    """A cursor as servers encoded every one before batches were encoded piecewise."""
    raw = json.dumps(fields, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# Database ids of three lengths, so the JSON before `after` needs 0, 1 and 2 bytes of padding;
# positions of growing width, so the piece after it ends on every base64 boundary.
@pytest.mark.parametrize("database", ["db1", "db12", "db123", "0123456789abcdef"])
@pytest.mark.parametrize(("tx", "event_id"), [(7, 4), (70, 42), (700, 421), (7_000_000, 1 << 62)])
def test_cursors_of_a_batch_encoded_piecewise_decode_to_the_same_position(
    database: str, tx: int, event_id: int
) -> None:
    prev, next_ = Snapshot.parse("5:9:6,7"), Snapshot.parse("8:80000000:9")
    batch = BatchCursors(database, 1_700_000_000_000_000, prev, next_)
    cursor = Cursor(database, 1_700_000_000_000_000, prev, next_, (tx, event_id))

    assert batch.cursor(tx, event_id) == cursor
    assert batch.encode(tx, event_id) == cursor.encode()
    assert Cursor.decode(batch.encode(tx, event_id)) == cursor


@pytest.mark.parametrize("database", ["db1", "db12", "db123"])
def test_cursors_issued_before_still_decode(database: str) -> None:
    prev, next_ = Snapshot.parse("5:9:6,7"), Snapshot.parse("8:12:9")
    in_batch = _compact_cursor([1, database, 1, "8:12:9", "5:9:6,7", 7, 42])
    assert Cursor.decode(in_batch) == Cursor(database, 1, prev, next_, (7, 42))
    between = _compact_cursor([1, database, 1, "8:12:9", "5:9:6,7"])
    assert Cursor.decode(between) == Cursor(database, 1, prev, next_, None)


def test_cursors_without_a_position_keep_their_compact_encoding() -> None:
    on_boundary = Cursor.at("db1", 123, Snapshot.parse("5:5:"))
    assert on_boundary.encode() == _compact_cursor([1, "db1", 123, "5:5:"])
    between = Cursor("db1", 1, Snapshot.parse("5:9:6,7"), Snapshot.parse("8:12:9"), None)
    assert between.encode() == _compact_cursor([1, "db1", 1, "8:12:9", "5:9:6,7"])


def test_padding_inside_a_cursor_does_not_make_a_refused_one_acceptable() -> None:
    # The padding is JSON whitespace; what decode refuses, it refuses with it too.
    beyond = Cursor("db1", 1, Snapshot.parse("5:9:"), Snapshot.parse("8:12:"), (50, 1))
    assert b" " in base64.urlsafe_b64decode(beyond.encode() + "==")
    with pytest.raises(CursorError):
        Cursor.decode(beyond.encode())
