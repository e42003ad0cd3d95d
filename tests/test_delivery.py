"""Rows written by any SQL client reach every socket: whole, in commit order, exactly once."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from server import queries
from server.core.cursor import Cursor, Snapshot
from server.keys import POOL
from server.pg import replay as replay_module
from server.pg.eventlog import current_position, database_identity, page_parameters, read_page
from server.pg.replay import REPLAY_PAGE_SIZE
from server.protocol import iso_timestamp, message_json
from tests.conftest import Client, RunningServer, create_user


async def two_sockets(client_factory: Any) -> tuple[Client, Any, Any]:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    bob = client_factory()
    await bob.sign_in("bob@example.com", "Bob")
    return alice, await alice.connect(), await bob.connect()


async def test_row_inserted_with_sql_reaches_every_socket_with_its_user(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    _, first, second = await two_sockets(client_factory)
    user_id = await create_user(db, "ops@example.com", "Ops Team")

    await db.execute(
        "INSERT INTO messages (user_id, content) VALUES (%s, 'Maintenance at 22:00')", [user_id]
    )

    for socket in (first, second):
        frame = await socket.next_frame()
        assert frame["event"] == "new-message"
        assert frame["channel"] == "messages"
        message = frame["data"]["message"]
        assert message["content"] == "Maintenance at 22:00"
        assert message["user_id"] == user_id
        assert message["user"] == {"id": user_id, "name": "Ops Team", "avatar_url": None}
        assert message["created_at"].endswith("Z")
        assert frame["cursor"]


async def test_message_of_20000_characters_arrives_whole(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    _, first, second = await two_sockets(client_factory)
    user_id = await create_user(db)
    content = "".join(chr(0x41 + i % 26) for i in range(19_999)) + "é"

    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, %s)", [user_id, content])

    for socket in (first, second):
        frame = await socket.next_frame()
        assert frame["data"]["message"]["content"] == content


async def test_a_1000_row_insert_arrives_complete_and_in_order(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    _, first, second = await two_sockets(client_factory)
    user_id = await create_user(db)

    await db.execute(
        "INSERT INTO messages (user_id, content) "
        "SELECT %s, 'row ' || n FROM generate_series(1, 1000) AS n",
        [user_id],
    )

    for socket in (first, second):
        frames = await socket.frames(1000)
        assert [f["data"]["message"]["content"] for f in frames] == [
            f"row {n}" for n in range(1, 1001)
        ]


async def test_update_and_delete_by_sql_reach_the_sockets(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    _, first, second = await two_sockets(client_factory)
    user_id = await create_user(db)
    cursor = await db.execute(
        "INSERT INTO messages (user_id, content) VALUES (%s, 'draft') RETURNING id", [user_id]
    )
    row = await cursor.fetchone()
    assert row is not None
    message_id = row[0]

    await db.execute("UPDATE messages SET content = 'final' WHERE id = %s", [message_id])
    await db.execute("DELETE FROM messages WHERE id = %s", [message_id])

    for socket in (first, second):
        created, updated, deleted = await socket.frames(3)
        assert created["event"] == "new-message"
        assert updated["event"] == "message-updated"
        assert updated["data"]["message"]["content"] == "final"
        assert updated["data"]["message"]["updated_at"] >= created["data"]["message"]["updated_at"]
        assert deleted == {
            "event": "message-deleted",
            "channel": "messages",
            "data": {"id": message_id},
            "cursor": deleted["cursor"],
        }


async def test_resume_after_disconnect_gets_exactly_what_was_missed(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    socket = await alice.connect()
    user_id = await create_user(db)
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'seen')", [user_id])
    assert (await socket.next_frame())["data"]["message"]["content"] == "seen"
    await socket.close()

    for text in ("missed 1", "missed 2", "missed 3"):
        await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, %s)", [user_id, text])

    resumed = await alice.connect(after=socket.cursor)
    frames = await resumed.frames(3)
    assert [f["data"]["message"]["content"] for f in frames] == ["missed 1", "missed 2", "missed 3"]
    # Then live, with nothing repeated at the seam.
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'live')", [user_id])
    assert (await resumed.next_frame())["data"]["message"]["content"] == "live"


async def test_resume_gets_a_transaction_that_committed_out_of_id_order_exactly_once(
    client_factory: Any, db: psycopg.AsyncConnection[Any], database_url: str
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    socket = await alice.connect()
    user_id = await create_user(db)

    async with await psycopg.AsyncConnection.connect(database_url) as writer_a:
        # A takes the lower id and stays open.
        await writer_a.execute(
            "INSERT INTO messages (user_id, content) VALUES (%s, 'A')", [user_id]
        )
        # B takes a higher id, commits, and is delivered at once despite A being open.
        await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'B')", [user_id])
        frame_b = await socket.next_frame()
        assert frame_b["data"]["message"]["content"] == "B"
        await socket.close()
        await writer_a.commit()

    resumed = await alice.connect(after=frame_b["cursor"])
    frame_a = await resumed.next_frame()
    assert frame_a["data"]["message"]["content"] == "A"
    assert frame_a["data"]["message"]["id"] < frame_b["data"]["message"]["id"]
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'C')", [user_id])
    assert (await resumed.next_frame())["data"]["message"]["content"] == "C"


async def test_an_unrelated_open_transaction_does_not_delay_delivery(
    client_factory: Any, db: psycopg.AsyncConnection[Any], database_url: str
) -> None:
    _, first, _ = await two_sockets(client_factory)
    user_id = await create_user(db)
    await db.execute("CREATE TABLE dba_scratch (note text)")

    async with await psycopg.AsyncConnection.connect(database_url) as forgotten:
        await forgotten.execute("INSERT INTO dba_scratch VALUES ('left open')")
        await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'urgent')", [user_id])
        frame = await first.next_frame()
        assert frame["data"]["message"]["content"] == "urgent"
        await forgotten.rollback()


async def test_killing_the_listen_connection_loses_and_repeats_nothing(
    client_factory: Any, db: psycopg.AsyncConnection[Any], server: RunningServer
) -> None:
    _, first, second = await two_sockets(client_factory)
    user_id = await create_user(db)

    async def insert_steadily() -> None:
        for n in range(200):
            await db.execute(
                "INSERT INTO messages (user_id, content) VALUES (%s, %s)", [user_id, f"m{n}"]
            )
            if n % 10 == 0:
                await asyncio.sleep(0)

    async def kill_listener_repeatedly() -> int:
        killed = 0
        async with await psycopg.AsyncConnection.connect(
            server.config.database_url or "", autocommit=True
        ) as admin:
            for _ in range(5):
                cursor = await admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    # The LISTEN connection and the one that reads the event log.
                    "WHERE application_name LIKE 'pgcast-listener%' "
                    "AND datname = current_database()"
                )
                row = await cursor.fetchone()
                killed += int(row[0]) if row else 0
                await asyncio.sleep(0.02)
        return killed

    _, killed = await asyncio.gather(insert_steadily(), kill_listener_repeatedly())
    assert killed >= 1

    for socket in (first, second):
        frames = await socket.frames(200)
        assert [f["data"]["message"]["content"] for f in frames] == [f"m{n}" for n in range(200)]
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'after')", [user_id])
    assert (await first.next_frame())["data"]["message"]["content"] == "after"


async def test_a_replay_longer_than_one_page_arrives_complete_and_in_order(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    socket = await alice.connect()
    await socket.close()
    user_id = await create_user(db)
    # One transaction longer than two pages: pages end in the middle of its batch.
    rows = 2 * REPLAY_PAGE_SIZE + 50
    await db.execute(
        "INSERT INTO messages (user_id, content) "
        "SELECT %s, 'r' || n FROM generate_series(1, %s) AS n",
        [user_id, rows],
    )
    await db.execute(
        "INSERT INTO messages (user_id, content) VALUES (%s, %s)", [user_id, f"r{rows + 1}"]
    )

    resumed = await alice.connect(after=socket.cursor)
    frames = await resumed.frames(rows + 1)
    assert [f["data"]["message"]["content"] for f in frames] == [
        f"r{n}" for n in range(1, rows + 2)
    ]
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'live')", [user_id])
    assert (await resumed.next_frame())["data"]["message"]["content"] == "live"


async def test_a_replay_paged_through_the_middle_of_batches_sends_each_event_once_in_order(
    client_factory: Any,
    db: psycopg.AsyncConnection[Any],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pages of two events end inside a transaction, inside a batch, and inside each of a
    # batch's two parts: a transaction that was in progress at the batch's start (xip) and
    # those that began after it.
    monkeypatch.setattr(replay_module, "REPLAY_PAGE_SIZE", 2)
    monkeypatch.setattr(replay_module, "REPLAY_MAX_PAGE_SIZE", 2)
    monkeypatch.setattr(replay_module, "REPLAY_EVENTS_PER_SEND", 1)
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    socket = await alice.connect()
    user_id = await create_user(db)

    async with await psycopg.AsyncConnection.connect(database_url) as writer_a:
        await writer_a.execute(
            "INSERT INTO messages (user_id, content) SELECT %s, 'A' || n "
            "FROM generate_series(1, 3) AS n",
            [user_id],
        )
        await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'b0')", [user_id])
        # b0's cursor ends a batch in which A was still in progress.
        assert (await socket.next_frame())["data"]["message"]["content"] == "b0"
        await socket.close()
        await writer_a.commit()
    await db.execute(
        "INSERT INTO messages (user_id, content) SELECT %s, 'B' || n "
        "FROM generate_series(1, 4) AS n",
        [user_id],
    )
    expected = ["A1", "A2", "A3", "B1", "B2", "B3", "B4"]

    async def replay(cursor: str, count: int) -> tuple[Any, list[dict[str, Any]]]:
        resumed = await alice.connect(after=cursor)
        return resumed, await resumed.frames(count)

    resumed, frames = await replay(socket.cursor, len(expected))
    assert [f["data"]["message"]["content"] for f in frames] == expected
    await resumed.close()
    # Every frame's cursor resumes exactly after it, wherever its page ended.
    for index, previous in enumerate(frames):
        resumed, rest = await replay(previous["cursor"], len(expected) - index - 1)
        assert [f["data"]["message"]["content"] for f in rest] == expected[index + 1 :]
        if index == len(frames) - 1:
            # Then live, with nothing repeated at the seam.
            await db.execute(
                "INSERT INTO messages (user_id, content) VALUES (%s, 'live')", [user_id]
            )
            assert (await resumed.next_frame())["data"]["message"]["content"] == "live"
        await resumed.close()


async def test_a_long_replay_reads_growing_pages_and_sends_each_event_once_in_commit_order(
    client_factory: Any,
    db: psycopg.AsyncConnection[Any],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pages double from REPLAY_PAGE_SIZE up to REPLAY_MAX_PAGE_SIZE. The replay is one batch
    # holding a transaction committed out of order (in progress at the cursor, committed
    # after two later ones: the batch's xip part) and three that began after the cursor (its
    # range part); pages of every size end inside transactions and between the parts, and
    # nothing is skipped or sent twice. Within a batch, events go in transaction order.
    monkeypatch.setattr(replay_module, "REPLAY_PAGE_SIZE", 2)
    monkeypatch.setattr(replay_module, "REPLAY_MAX_PAGE_SIZE", 8)
    monkeypatch.setattr(replay_module, "REPLAY_EVENTS_PER_SEND", 3)
    limits: list[int] = []

    async def recorded(conn: Any, position: Cursor, limit: int, channels: Any = None) -> Any:
        limits.append(limit)
        return await read_page(conn, position, limit, channels)

    monkeypatch.setattr(replay_module, "read_page", recorded)
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    user_id = await create_user(db)
    insert = (
        "INSERT INTO messages (user_id, content) "
        "SELECT %s, %s || n FROM generate_series(1, %s) AS n"
    )
    async with await psycopg.AsyncConnection.connect(database_url) as early:
        await early.execute(insert, [user_id, "E", 9])
        socket = await alice.connect()
        await socket.close()
        await db.execute(insert, [user_id, "a", 5])
        await db.execute(insert, [user_id, "b", 7])
        await early.commit()
    await db.execute(insert, [user_id, "c", 11])
    expected = [f"E{n}" for n in range(1, 10)] + [f"a{n}" for n in range(1, 6)]
    expected += [f"b{n}" for n in range(1, 8)] + [f"c{n}" for n in range(1, 12)]

    resumed = await alice.connect(after=socket.cursor)
    frames = await resumed.frames(len(expected))
    assert [f["data"]["message"]["content"] for f in frames] == expected
    assert limits == [2, 4, 8, 8, 8, 8], limits
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'live')", [user_id])
    assert (await resumed.next_frame())["data"]["message"]["content"] == "live"
    # Resumed from any frame, with pages growing from there, the rest follows exactly once.
    for index in (1, 5, 12, 20):
        again = await alice.connect(after=frames[index]["cursor"])
        rest = await again.frames(len(expected) - index - 1)
        assert [f["data"]["message"]["content"] for f in rest] == expected[index + 1 :]
        await again.close()


@pytest.mark.parametrize(
    ("channels", "limits"),
    [
        (["messages"], [2, 4, 8, 8]),
        # Two channels: a page's sort sees up to a page of each.
        (["messages", "orders.1"], [2, 4, 4, 4, 4, 4]),
        # Every channel (`pgcast tail`): the query without planner settings keeps to its size.
        (None, [2] * 11),
    ],
)
async def test_replay_pages_grow_only_as_far_as_their_channels_allow(
    db: psycopg.AsyncConnection[Any],
    server: RunningServer,
    monkeypatch: pytest.MonkeyPatch,
    channels: list[str] | None,
    limits: list[int],
) -> None:
    monkeypatch.setattr(replay_module, "REPLAY_PAGE_SIZE", 2)
    monkeypatch.setattr(replay_module, "REPLAY_MAX_PAGE_SIZE", 8)
    asked: list[int] = []

    async def recorded(conn: Any, position: Cursor, limit: int, channels: Any = None) -> Any:
        asked.append(limit)
        return await read_page(conn, position, limit, channels)

    monkeypatch.setattr(replay_module, "read_page", recorded)
    user_id = await create_user(db)
    position = await current_position(db, "db")
    await db.execute(
        "INSERT INTO messages (user_id, content) SELECT %s, 'r' || n "
        "FROM generate_series(1, 20) AS n",
        [user_id],
    )
    sent: list[str] = []

    async def send(events: list[Any]) -> None:
        sent.extend(json.loads(event.data)["message"]["content"] for event in events)

    await replay_module.replay(server.app[POOL], position, channels, send)
    assert sent == [f"r{n}" for n in range(1, 21)]
    assert asked == limits


async def test_a_socket_closed_in_the_middle_of_a_replay_gives_its_connections_back(
    client_factory: Any,
    db: psycopg.AsyncConnection[Any],
    server: RunningServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The replay reads a page ahead while it writes: closing the socket must stop that read
    # and return its connection to the pool.
    monkeypatch.setattr(replay_module, "REPLAY_PAGE_SIZE", 50)
    monkeypatch.setattr(replay_module, "REPLAY_MAX_PAGE_SIZE", 50)
    monkeypatch.setattr(replay_module, "REPLAY_EVENTS_PER_SEND", 10)
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    socket = await alice.connect()
    await socket.close()
    user_id = await create_user(db)
    await db.execute(
        "INSERT INTO messages (user_id, content) SELECT %s, 'r' || n "
        "FROM generate_series(1, 3000) AS n",
        [user_id],
    )

    for _ in range(3):
        resumed = await alice.connect(after=socket.cursor)
        await resumed.frames(5)
        await resumed.close()
    pool = server.app[POOL]
    for _ in range(100):
        stats = pool.get_stats()
        if stats["pool_available"] == stats["pool_size"]:
            break
        await asyncio.sleep(0.05)
    assert stats["pool_available"] == stats["pool_size"], stats

    resumed = await alice.connect(after=socket.cursor)
    frames = await resumed.frames(3000)
    assert [f["data"]["message"]["content"] for f in frames] == [f"r{n}" for n in range(1, 3001)]


def _round_trips(trace: str) -> int:
    """How many times, in a libpq trace, the client sent and then waited for the server."""
    senders = "".join(line[:1] for line in trace.splitlines() if line[:2] in ("F\t", "B\t"))
    return len(re.findall("F+B", senders))


@pytest.mark.parametrize("channels", [None, ["messages", "orders.1"]])
async def test_a_page_is_read_in_one_round_trip(
    db: psycopg.AsyncConnection[Any], tmp_path: Any, channels: list[str] | None
) -> None:
    # A replay reads page after page: each page waits on the database once, with its
    # planner settings sent along with the query (pipeline), not in round trips of their own.
    user_id = await create_user(db)
    position = await current_position(db, "db")
    await db.execute(
        "INSERT INTO messages (user_id, content) SELECT %s, 'x' || n "
        "FROM generate_series(1, 30) AS n",
        [user_id],
    )
    trace_path = tmp_path / "libpq.trace"
    with trace_path.open("w") as trace:
        db.pgconn.trace(trace.fileno())
        db.pgconn.set_trace_flags(
            psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE
        )
        try:
            first = await read_page(db, position, 20, channels)
            second = await read_page(db, first.end, 20, channels)
        finally:
            db.pgconn.untrace()
    contents = [json.loads(event.data)["message"]["content"] for event in first.events]
    contents += [json.loads(event.data)["message"]["content"] for event in second.events]
    assert contents == [f"x{n}" for n in range(1, 31)]
    assert second.complete
    assert _round_trips(trace_path.read_text()) == 2, trace_path.read_text()


def test_owed_events_start_just_past_the_position() -> None:
    prev, next_ = Snapshot.parse("100:110:103,105"), Snapshot.parse("108:120:")
    min_id, max_id = -(1 << 63), (1 << 63) - 1

    def starts(after: tuple[int, int] | None) -> tuple[tuple[str, int], tuple[str, int]]:
        parameters = page_parameters(Cursor("db", 1, prev, next_, after), 200)
        return (
            (parameters["from_tx"], parameters["from_id"]),
            (parameters["xip_from_tx"], parameters["xip_from_id"]),
        )

    assert starts(None) == (("110", min_id), ("0", min_id))
    # In prev's in-progress transaction 103: the range part starts at prev's xmax.
    assert starts((103, 7)) == (("110", min_id), ("103", 8))
    assert starts((112, 7)) == (("112", 8), ("112", 8))
    assert starts((112, max_id)) == (("113", min_id), ("113", min_id))
    on_boundary = page_parameters(Cursor.at("db", 1, next_), 200)
    assert on_boundary["in_batch"] is False


def _numbered(query: str) -> tuple[str, list[str]]:
    """`query` with $1, $2... for psycopg's named placeholders, and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)s", number, query), names


# A plan made for the parameters, on a table never analyzed, may read a small table's batch
# with a bitmap scan and sort it (below some 15,000 rows, it was estimated cheaper).
@pytest.mark.parametrize("channels", [None, ["messages", "orders.1"]])
@pytest.mark.parametrize(
    ("analyzed", "plan"),
    [(False, "force_generic_plan"), (True, "force_generic_plan"), (True, "force_custom_plan")],
)
async def test_every_page_is_an_index_seek_wherever_it_starts_in_a_batch(
    db: psycopg.AsyncConnection[Any], analyzed: bool, plan: str, channels: list[str] | None
) -> None:
    # Each page must cost the same wherever it starts in a batch: each part of the page
    # query starts at the first event owed (no row read and thrown away), whether the plan
    # was made for the parameters or for any of them; a replay of some channels seeks into
    # each of them and reads no other channel's events.
    await db.execute("ALTER TABLE broadcasts SET (autovacuum_enabled = off)")
    user_id = await create_user(db)
    position = await current_position(db, "db")
    await db.execute(
        "INSERT INTO messages (user_id, content) SELECT %s, 'x' || n "
        "FROM generate_series(1, 2000) AS n",
        [user_id],
    )
    await db.execute(
        "INSERT INTO broadcasts (channel, event, data) "
        "SELECT 'other.' || (n % 7), 'noise', '{}' FROM generate_series(1, 3000) AS n"
    )
    if analyzed:
        await db.execute("ANALYZE broadcasts")
    page = await read_page(db, position, 200, channels)
    assert not page.complete
    page = await read_page(db, page.end, 200, channels)  # mid-batch, past 200 events
    assert not page.complete
    assert page.end.after is not None
    assert {event.channel for event in page.events} == {"messages"}

    template = queries.EVENTS_PAGE if channels is None else queries.CHANNEL_EVENTS_PAGE
    query, names = _numbered(template)
    parameters = page_parameters(page.end, 200)
    if channels is not None:
        parameters["channels"] = channels
    await db.execute(f"SET plan_cache_mode = {plan}")
    await db.execute(f"PREPARE events_page AS {query}")
    arguments = sql.SQL(", ").join(sql.Literal(parameters[name]) for name in names)
    explain = sql.SQL("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE events_page")
    # Planned as read_page runs it: a page of some channels after its settings, pipelined.
    async with db.pipeline():
        if channels is not None:
            await db.execute(queries.ORDERED_INDEX_SCANS_ONLY)
        cursor = await db.execute(explain + sql.SQL("(") + arguments + sql.SQL(")"))
    plan_text = "\n".join(row[0] for row in await cursor.fetchall())

    assert "Seq Scan on broadcasts" not in plan_text, plan_text
    assert "Bitmap" not in plan_text, plan_text
    assert "Rows Removed by Filter" not in plan_text, plan_text
    index = "broadcasts_tx_idx" if channels is None else "broadcasts_channel_tx_idx"
    scans = re.findall(rf"Index Scan using {index}", plan_text)
    assert len(scans) == 4, plan_text
    # The rest of the batch: both its parts seek to (tx, id).
    assert len(re.findall(r"Index Cond: .*ROW\((channel, )?tx, id\) >= ROW", plan_text)) == 2, (
        plan_text
    )
    assert "rows=200" in plan_text, plan_text


# Microsecond 0 and 999999, a leap day, a daylight-saving change in America, before 1970,
# and years Python's strftime writes with fewer than four digits.
TIMESTAMPS = [
    datetime(2026, 11, 25, 17, 46, 57, 123456, tzinfo=UTC),
    datetime(2026, 11, 25, 17, 46, 57, 0, tzinfo=UTC),
    datetime(2026, 11, 25, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2024, 2, 29, 0, 0, 0, 10, tzinfo=UTC),
    datetime(2026, 3, 8, 7, 30, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(999, 6, 1, 12, tzinfo=UTC),
    datetime(5, 1, 2, tzinfo=UTC),
    datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC),
]


@pytest.mark.parametrize(
    "time_zone",
    ["UTC", "America/St_Johns", "Asia/Kathmandu", "Pacific/Kiritimati", "Pacific/Pago_Pago"],
)
async def test_frames_are_the_ones_built_from_python_datetimes_in_any_session_time_zone(
    database_url: str, db: psycopg.AsyncConnection[Any], time_zone: str
) -> None:
    user_id = await create_user(db, "zoe@example.com", 'Zoë "Z" Ω')
    async with await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, options=f"-c TimeZone={time_zone}"
    ) as conn:
        database = await database_identity(conn)
        position = await current_position(conn, database)
        message_ids = []
        for n, moment in enumerate(TIMESTAMPS):
            cursor = await db.execute(
                "INSERT INTO messages (user_id, content, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s) RETURNING id",
                [user_id, f"at {n}", moment, moment + timedelta(microseconds=1)],
            )
            row = await cursor.fetchone()
            assert row is not None
            message_ids.append(row[0])
        page = await read_page(conn, position, 100)

    assert [(e.channel, e.name, json.loads(e.data)) for e in page.events] == [
        (
            "messages",
            "new-message",
            {
                "message": message_json(
                    message_id,
                    user_id,
                    f"at {n}",
                    moment,
                    moment + timedelta(microseconds=1),
                    'Zoë "Z" Ω',
                    None,
                )
            },
        )
        for n, (moment, message_id) in enumerate(zip(TIMESTAMPS, message_ids, strict=True))
    ]
    assert iso_timestamp(TIMESTAMPS[1]) == "2026-11-25T17:46:57.000000Z"


async def test_a_message_whose_timestamps_python_cannot_hold_is_delivered_not_stalled(
    database_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    user_id = await create_user(db)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        position = await current_position(conn, "db")
        for moment in ("10000-01-01 00:00:00Z", "0044-03-15 12:00:00Z BC", "infinity"):
            await db.execute(
                "INSERT INTO messages (user_id, content, created_at) VALUES (%s, 'odd', %s)",
                [user_id, moment],
            )
        await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'after')", [user_id])
        page = await read_page(conn, position, 100)

    contents = [json.loads(event.data)["message"]["content"] for event in page.events]
    assert contents == ["odd", "odd", "odd", "after"]
    assert page.complete


def kind_and_id(frame: dict[str, Any]) -> tuple[str, int]:
    data = frame["data"]
    return frame["event"], data["id"] if "id" in data else data["message"]["id"]


async def test_update_of_a_message_id_tells_clients_the_old_id_is_gone(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    _, first, second = await two_sockets(client_factory)
    user_id = await create_user(db)
    await db.execute(
        "INSERT INTO messages (id, user_id, content) VALUES (1001, %s, 'a'), (1002, %s, 'b')",
        [user_id, user_id],
    )
    await db.execute("UPDATE messages SET id = 2001 WHERE id = 1001")
    # One statement that moves one row and edits another.
    await db.execute(
        "UPDATE messages SET id = CASE WHEN id = 2001 THEN 3001 ELSE id END, "
        "content = content || '!' WHERE id IN (2001, 1002)"
    )

    for socket in (first, second):
        frames = await socket.frames(7)
        assert [kind_and_id(f) for f in frames] == [
            ("new-message", 1001),
            ("new-message", 1002),
            ("message-deleted", 1001),
            ("new-message", 2001),
            ("message-deleted", 2001),
            ("message-updated", 1002),
            ("new-message", 3001),
        ]
        assert [f["data"]["message"]["content"] for f in frames[5:]] == ["b!", "a!"]


async def insert_event_by_hand(
    db: psycopg.AsyncConnection[Any], tx: str, content: str, user_id: int, count: int = 1
) -> None:
    await db.execute(
        "INSERT INTO broadcasts (tx, channel, event, data) "
        "SELECT %s::xid8, 'messages', 'new-message', jsonb_build_object('message', "
        "jsonb_build_object('id', 900000 + n, 'user_id', %s::bigint, 'content', %s::text)) "
        "FROM generate_series(1, %s) AS n",
        [tx, user_id, content, count],
    )


async def current_xmax(db: psycopg.AsyncConnection[Any]) -> int:
    cursor = await db.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def send_and_expect(
    db: psycopg.AsyncConnection[Any], user_id: int, sockets: list[Any], texts: list[str]
) -> None:
    """Insert each text as a message; every socket gets exactly these, in order, and
    nothing in between."""
    for text in texts:
        await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, %s)", [user_id, text])
    for socket in sockets:
        frames = await socket.frames(len(texts))
        assert [f["data"]["message"]["content"] for f in frames] == texts


async def test_events_written_by_hand_with_a_future_transaction_id_neither_flood_nor_stall(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, first, second = await two_sockets(client_factory)
    user_id = await create_user(db)
    # More than a page of them, with ids the counter will not reach for a long while.
    future = str(await current_xmax(db) + 1_000_000_000)
    await insert_event_by_hand(db, future, "from the future", user_id, count=1001)
    await db.execute("NOTIFY pgcast_events")

    await send_and_expect(db, user_id, [first, second], [f"now {n}" for n in range(5)])
    await first.close()
    resumed = await alice.connect(after=first.cursor)
    await send_and_expect(db, user_id, [resumed, second], ["later"])


async def test_an_event_written_by_hand_with_a_past_transaction_id_is_history(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    _, first, second = await two_sockets(client_factory)
    user_id = await create_user(db)
    await insert_event_by_hand(db, "3", "from the past", user_id)
    await db.execute("NOTIFY pgcast_events")

    await send_and_expect(db, user_id, [first, second], ["now 0", "now 1"])


async def test_an_event_written_by_hand_naming_an_open_transaction_arrives_once_it_ends(
    client_factory: Any, db: psycopg.AsyncConnection[Any], database_url: str
) -> None:
    _, first, second = await two_sockets(client_factory)
    user_id = await create_user(db)
    async with await psycopg.AsyncConnection.connect(database_url) as held:
        cursor = await held.execute("SELECT pg_current_xact_id()::text")
        row = await cursor.fetchone()
        assert row is not None
        await insert_event_by_hand(db, row[0], "borrowed", user_id)
        await send_and_expect(db, user_id, [first, second], ["m0", "m1", "m2"])
        await held.rollback()
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'after')", [user_id])
    # Its transaction ended without a notification, so it is found by a read of the log: the
    # next one (at most a second later, while the listener knows of a transaction it has not
    # seen end), before or after the message written since.
    for socket in (first, second):
        frames = await socket.frames(2)
        assert sorted(f["data"]["message"]["content"] for f in frames) == ["after", "borrowed"]
