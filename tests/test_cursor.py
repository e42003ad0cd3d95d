"""Cursors are opaque to clients but come from them, so decoding is strict."""

from __future__ import annotations

import pytest

from server.cursor import Cursor, CursorError, Snapshot


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
