"""Cursors are opaque to clients but come from them, so decoding is strict."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.core.cursor import BatchCursors, Cursor, CursorError, Snapshot
from tests.test_cli import cli_env, run_cli


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


def _encoded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# 3,000 arrays deep: past Python's recursion limit, and short enough for the length check.
DEEPLY_NESTED_CURSOR = _encoded(b"[" * 3000)


def test_a_cursor_nested_deeper_than_the_parser_goes_is_refused() -> None:
    assert len(DEEPLY_NESTED_CURSOR) <= 4096
    with pytest.raises(CursorError, match="not one this server issued"):
        Cursor.decode(DEEPLY_NESTED_CURSOR)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=8) | st.dictionaries(st.text(), children),
)
cursor_like_fields = st.lists(
    st.one_of(
        json_values,
        st.sampled_from(["5:9:6,7", "8:12:9", "0:0:", "1:1:", " 5:9:", "5:9:,", "\u0665:9:"]),
    ),
    max_size=8,
).map(lambda fields: [1, *fields])


@given(
    text=st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300).map(_encoded),
        json_values.map(lambda value: _encoded(json.dumps(value).encode())),
        cursor_like_fields.map(lambda fields: _encoded(json.dumps(fields).encode())),
        st.integers(1, 3000).map(lambda depth: _encoded(b"[" * depth)),
        st.integers(1, 1500).map(lambda depth: _encoded(b"[" * depth + b"]" * depth)),
        st.integers(1, 500).map(lambda depth: _encoded(b'{"a":' * depth + b"1" + b"}" * depth)),
    )
)
def test_decoding_any_text_returns_a_cursor_or_raises_cursor_error(text: str) -> None:
    try:
        cursor = Cursor.decode(text)
    except CursorError:
        return
    assert Cursor.decode(cursor.encode()) == cursor


def test_tail_after_a_deeply_nested_cursor_exits_1_with_one_line(
    database_url: str, tmp_path: Path
) -> None:
    result = run_cli("tail", "--after", DEEPLY_NESTED_CURSOR, env=cli_env(database_url, tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "pgcast: --after: cursor is not one this server issued"
    ]


@given(
    database=st.text(max_size=40), tx=st.integers(1, 79_999_999), event_id=st.integers(0, 1 << 62)
)
def test_a_batch_cursor_of_any_database_name_decodes_to_its_position(
    database: str, tx: int, event_id: int
) -> None:
    # The batch's JSON head is written by hand, not by json.dumps: quotes, backslashes and
    # non-ASCII in the database id must still come back as they were.
    prev, next_ = Snapshot.parse("5:9:7,6"), Snapshot.parse("8:80000000:9")
    batch = BatchCursors(database, 1_700_000_000_000_000, prev, next_)
    assert Cursor.decode(batch.encode(tx, event_id)) == batch.cursor(tx, event_id)
    # In-progress transactions are written in order, however they were read.
    assert str(prev) == "5:9:6,7"


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    xmin = draw(st.integers(1, 40))
    xmax = draw(st.integers(xmin, 50))
    in_progress = draw(st.frozensets(st.integers(xmin, max(xmin, xmax - 1)), max_size=8))
    xip = frozenset(tx for tx in in_progress if tx < xmax)
    if xip:
        xmin = min(xip)
    return Snapshot(xmin, xmax, xip)


def seen(snapshot: Snapshot) -> set[int]:
    return {tx for tx in range(1, 60) if snapshot.sees(tx)}


@given(snapshots(), snapshots())
def test_sees_all_of_compares_what_two_snapshots_see(a: Snapshot, b: Snapshot) -> None:
    # Any two, not only two PostgreSQL took one after the other: the feed makes some from
    # notifications (Snapshot.with_committed).
    assert a.sees_all_of(b) == (seen(b) <= seen(a))


@given(snapshots(), snapshots())
def test_a_union_sees_what_either_sees_and_parses_back(a: Snapshot, b: Snapshot) -> None:
    union = a.union(b)
    assert seen(union) == seen(a) | seen(b)
    assert Snapshot.parse(union.text) == union


@given(snapshots(), st.integers(1, 59))
def test_with_committed_sees_one_transaction_more(snapshot: Snapshot, tx: int) -> None:
    later = snapshot.with_committed(tx)
    assert seen(later) == seen(snapshot) | {tx}
    assert Snapshot.parse(later.text) == later
    # Still a batch PostgreSQL's cursors accept: prev before next.
    Cursor.decode(BatchCursors("db", 1, snapshot, later).encode(tx, 7))
