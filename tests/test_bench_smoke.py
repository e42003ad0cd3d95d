"""Every benchmark runs end to end at smoke size and produces numbers, and bench/report.py
turns them into RESULTS.md (never judged on timing here)."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest

from bench import (
    channels,
    compare,
    db_limits,
    fanout,
    idle_sockets,
    ingest,
    presence,
    private,
    pusher,
    quick,
    report,
    resume,
    slow_consumer,
    socket_limit,
    versus_previous,
)
from bench.lib import receivers, results, runner
from server.core import presence as core_presence
from server.core.cursor import BatchCursors, Snapshot
from server.core.events import Event
from server.transports.native.codec import CODEC, connected_frame, presence_frame
from server.wire import text_frame
from tests.conftest import create_user

Smoke = Callable[[ModuleType], Any]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Smoke, Path]:
    """Runs a bench script's --smoke once per module, its reports in one run directory."""
    run_dir = tmp_path_factory.mktemp("bench-run")
    results: dict[str, Any] = {}

    def run_smoke(module: ModuleType) -> Any:
        if module.__name__ not in results:
            argv = ["--smoke", "--out", str(run_dir)]
            results[module.__name__] = runner.run(module.SCENARIO, argv)
        return results[module.__name__]

    return run_smoke, run_dir


def test_quick_bench_smoke_produces_figures_and_delivers_everything(
    smoke: tuple[Smoke, Path],
) -> None:
    result = smoke[0](quick)
    assert result.problems == []
    assert result.latency.delivery.ok
    assert result.latency.delivery.frames == 5 * 50
    assert result.fanout.ok
    assert result.baseline.ok
    assert result.fanout.frames == result.baseline.frames == 5 * 200
    assert result.fanout.frames_per_second > 0
    assert result.baseline.frames_per_second > 0
    assert result.latency.latency.p50 >= 0


def test_idle_sockets_bench_smoke_opens_every_socket_and_broadcasts_to_all(
    smoke: tuple[Smoke, Path],
) -> None:
    result = smoke[0](idle_sockets)
    assert result.problems == []
    [count] = result.counts
    assert count.target == 50
    [broadcast] = count.broadcasts
    assert broadcast.delivery.ok
    assert broadcast.delivery.frames == 50


def test_slow_consumer_bench_smoke_closes_the_stalled_socket_and_it_resumes(
    smoke: tuple[Smoke, Path],
) -> None:
    result = smoke[0](slow_consumer)
    assert result.problems == []
    assert result.close_code == 1013
    assert result.resumed is not None
    assert result.resumed.ok
    assert result.resumed.frames == result.b.messages


def test_db_limits_bench_smoke_measures_every_trigger_variant(smoke: tuple[Smoke, Path]) -> None:
    result = smoke[0](db_limits)
    assert result.problems == []
    assert {(m.variant, m.rate.writers) for m in result.measurements} == {
        (variant, writers) for variant in ("none", "notify", "pgcast") for writers in (1, 4)
    }
    for m in result.measurements:
        assert m.rate.tx_per_second > 0
        # Every committed transaction wrote its row, and with pgcast's triggers its event.
        assert m.rows >= m.rate.transactions > 0
        assert m.events == (m.rows if m.variant == "pgcast" else 0)


def test_socket_limit_bench_smoke_delivers_every_frame_at_each_write_size(
    smoke: tuple[Smoke, Path],
) -> None:
    result = smoke[0](socket_limit)
    assert result.problems == []
    assert {m.frames_per_write for m in result.measurements} == {1, 10}
    for m in result.measurements:
        assert m.burst.ok
        assert m.burst.frames == 20 * 50
        assert m.burst.frames_per_second > 0


def test_resume_bench_smoke_replays_the_backlog_once_in_order(smoke: tuple[Smoke, Path]) -> None:
    result = smoke[0](resume)
    assert result.problems == []
    assert result.replay.burst.ok
    delivery = result.replay.burst.delivery
    assert delivery.frames == delivery.expected_per_socket == result.replay.events == 2000
    assert result.replay.events_per_second > 0
    assert result.bare.ok


def test_fanout_bench_smoke_climbs_the_rate_ladder_and_bursts_at_each_socket_count(
    smoke: tuple[Smoke, Path],
) -> None:
    result = smoke[0](fanout)
    assert result.problems == []
    assert {(step.sockets, step.steady.target_rate) for step in result.steps} == {
        (5, 20.0),
        (5, 100.0),
        (20, 20.0),
        (20, 100.0),
    }
    for step in result.steps:
        delivery = step.steady.delivery
        assert delivery.ok
        assert delivery.frames == step.sockets * step.steady.messages > 0
        # At smoke size a p50 of 0.0 ms can be real: a number, not a NaN, is what is asked.
        assert step.steady.latency.p50 >= 0
        assert step.steady.latency.count == delivery.frames
    assert [b.sockets for b in result.bursts] == [5, 20]
    for burst in result.bursts:
        assert burst.burst.ok
        assert burst.burst.frames == burst.sockets * burst.burst.delivery.expected_per_socket > 0
        assert burst.burst.frames_per_second > 0


def test_ingest_bench_smoke_measures_writers_and_the_bulk_insert(smoke: tuple[Smoke, Path]) -> None:
    result = smoke[0](ingest)
    assert result.problems == []
    bulk = result.bulk.delivery
    assert bulk.frames == bulk.sockets * bulk.expected_per_socket == 500 * 10
    assert (bulk.losses, bulk.duplicates) == (0, 0)
    assert [(step.sockets, step.writers) for step in result.ingest] == [
        (1, 1),
        (1, 4),
        (10, 1),
        (10, 4),
    ]
    for step in result.ingest:
        assert step.pgcast.tx_per_second > 0
        assert step.limit.tx_per_second > 0
        assert step.delivery.frames == step.sockets * step.delivery.expected_per_socket > 0
        assert (step.delivery.losses, step.delivery.duplicates) == (0, 0)


def test_channels_bench_smoke_sends_each_broadcast_to_its_channels_sockets_only(
    smoke: tuple[Smoke, Path],
) -> None:
    result = smoke[0](channels)
    assert result.problems == []
    assert [(p.name, p.channel, p.listening, p.sockets) for p in result.phases] == [
        ("a", "bench.small", 3, 3),
        ("b", "bench.small", 3, 53),
        ("c", "messages", 53, 53),
        ("a'", "bench.small", 3, 3),
    ]
    for phase in result.phases:
        assert phase.ok
        assert phase.unrouted_frames == 0
        assert phase.delivery.frames == phase.items * phase.listening > 0
        assert phase.server_us > 0
        assert phase.latencies[0].count == phase.items * 3
    assert result.ratio("b", measured=True) > 0
    assert result.ratio("c", measured=True) > 0


def test_private_bench_smoke_gives_each_person_their_own_messages_and_notifications_only(
    smoke: tuple[Smoke, Path],
) -> None:
    result = smoke[0](private)
    assert result.problems == []
    assert [(p.name, p.sockets, p.items) for p in result.phases] == [("a", 2, 30), ("b", 52, 30)]
    for phase in result.phases:
        assert phase.delivery.ok
        assert phase.unrouted_frames == 0
        # Each direct message reaches its sender and its recipient, nobody else.
        assert phase.delivery.frames == 2 * phase.items
        assert phase.server_us > 0
        for latency in phase.latencies:
            assert latency.count == phase.items
            assert not math.isnan(latency.p50)
    assert result.ratio(measured=True) > 0
    assert [(r.round, r.notified, r.sockets) for r in result.rounds] == [
        (0, 20, 72),
        (1, 20, 72),
        (2, 20, 72),
    ]
    for notification_round in result.rounds:
        delivery = notification_round.delivery
        assert delivery.ok
        assert delivery.frames == delivery.sockets == 20
        assert delivery.losses == delivery.duplicates == delivery.unexpected == 0
        # Frames to any socket but the notified ones' own notification count as other frames.
        assert delivery.other_frames == 0
        assert notification_round.latency.count == 20
        assert notification_round.server_cpu_ms > 0
    assert not math.isnan(result.median("commit_to_last_ms"))


def test_presence_bench_smoke_announces_every_join_and_leave_to_every_other_member(
    smoke: tuple[Smoke, Path],
) -> None:
    result = smoke[0](presence)
    assert result.problems == []
    assert (result.members, result.processes) == (30, 3)
    joins, leaves = result.phases
    assert [(p.event, p.count) for p in result.phases] == [
        ("member_added", 5),
        ("member_removed", 5),
    ]
    # The k-th join is due to the 30 members and the k joiners before it; the k-th leave to
    # the 30 and the joiners still there. Each notification arrived once (else a problem).
    assert joins.seen == joins.expected == 5 * 30 + (0 + 1 + 2 + 3 + 4)
    assert leaves.seen == leaves.expected == 5 * 30 + (4 + 3 + 2 + 1 + 0)
    for phase in result.phases:
        assert phase.first.count == phase.last.count == 5
        assert 0 <= phase.first.p50 <= phase.last.p50 <= phase.last.max
        assert phase.database["xact_commit"] >= phase.count
        assert phase.pgcast_us() > 0
        # PostgreSQL's CPU is known when it is the embedded one (its postmaster is local).
        assert result.database != "embedded" or phase.usage.cpu_percent["postgres"] > 0
    # Each join writes its member's row and the member_added event; each leave deletes the row.
    assert joins.database["tup_inserted"] >= 2 * joins.count
    assert leaves.database["tup_deleted"] >= leaves.count


@pytest.mark.skipif(shutil.which("node") is None, reason="the Node peer needs Node.js")
def test_compare_bench_smoke_runs_each_server_alone_at_steady_rates_and_a_burst() -> None:
    result = runner.run(compare.SCENARIO, ["--smoke", "--rounds", "2", "--no-write"])
    assert result.problems == []
    assert [run.key for run in result.servers] == ["pgcast", "broadcaster", "node"]
    rows = [(5, 50.0), (10, 20.0), (3, 100.0)]
    for run in result.servers:
        assert [(row.delivery.sockets, row.target_rate) for row in run.rows] == rows * 2
        for row in run.rows:
            assert row.delivery.ok
            assert row.delivery.frames == row.delivery.sockets * row.messages > 0
            assert row.latency.count == row.delivery.frames
        assert [(m.sockets, m.target_rate, len(m.rounds)) for m in run.medians()] == [
            (*row, 2) for row in rows
        ]
        assert run.burst is not None
        assert run.burst.ok
        assert run.burst.frames == 5 * 200
    table = result.table()
    assert "frames/s" in "".join(table)
    assert len(table) == 2 + 3 * 4 + 2
    # Each round's CPU per frame on every server, then pgcast's over each peer's round by round.
    each = [line for line in table if "each round" in line]
    assert len(each) == 3
    assert all(cell.count(", ") == 1 for e in each for cell in e.split("|")[2:-1])


def test_compare_rounds_rotate_which_server_runs_first() -> None:
    runs = [compare.ServerRun(key) for key in compare.LABELS]
    assert [r.key for r in compare.order(runs, 4)] == [
        *("pgcast", "broadcaster", "node"),
        *("broadcaster", "node", "pgcast"),
        *("node", "pgcast", "broadcaster"),
        *("pgcast", "broadcaster", "node"),
    ]


def test_versus_previous_bench_smoke_measures_both_trees_in_turn(
    smoke: tuple[Smoke, Path],
) -> None:
    result = smoke[0](versus_previous)
    assert result.problems == []
    assert [(run.round, run.tree) for run in result.runs] == [(1, "previous"), (1, "current")]
    for run in result.runs:
        assert run.ok
        assert sorted(run.figures) == sorted(name for name, *_ in versus_previous.FIGURES)
        assert all(value > 0 for value in run.figures.values())
    assert all(result.ratio(name) > 0 for name, *_ in versus_previous.FIGURES)


def test_pusher_bench_smoke_delivers_everything_over_both_protocols(
    smoke: tuple[Smoke, Path],
) -> None:
    result = smoke[0](pusher)
    assert result.problems == []
    for burst in (result.native, result.pusher):
        assert burst.ok
        assert burst.frames == burst.delivery.sockets * burst.delivery.expected_per_socket
        assert burst.frames == 5 * 100
        assert burst.frames_per_second > 0


def test_report_turns_a_run_into_results(smoke: tuple[Smoke, Path]) -> None:
    run_smoke, run_dir = smoke
    for module in (
        db_limits,
        socket_limit,
        fanout,
        ingest,
        resume,
        idle_sockets,
        channels,
        versus_previous,
        private,
        presence,
    ):
        run_smoke(module)
    results = run_dir / "RESULTS.md"
    report.write_results(run_dir, results)
    text = results.read_text()
    for heading in (
        "## The aims",
        "### The database alone",
        "### The socket",
        "## Fan-out",
        "## Ingest and bulk",
        "## Replay",
        "## Idle sockets",
        "## Channels: a broadcast beside other channels' sockets",
        "## Against a previous commit",
        "## Private chat and notifications",
        "## Presence across three processes",
    ):
        assert heading in text
    assert "## Problems reported by the run" not in text


class _Wire:
    """Where a Receiver writes its handshake and control frames, when no socket is needed."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def test_receiver_counts_the_servers_new_message_frames_without_decoding_them(
    db: psycopg.AsyncConnection[Any],
) -> None:
    """The load generator reads pgcast's new-message frames on its inline path: decoding the
    JSON of each would make it the bottleneck of every fan-out figure. The frames are the ones
    the server sends: rows of the event log, written by the messages trigger, through the
    native codec."""
    user_id = await create_user(db)
    await db.execute(
        "INSERT INTO messages (user_id, content) SELECT %s, 'hello ' || n "
        "FROM generate_series(1, 20) AS n",
        [user_id],
    )
    cursor = await db.execute(
        "SELECT id, tx::text::bigint, channel, event, data::text FROM broadcasts ORDER BY id"
    )
    batch = BatchCursors("bench", 0, Snapshot.parse("1:1:"), Snapshot.parse("2:2:"))
    frames = b"".join(CODEC.encode(Event(*row, None, batch)) for row in await cursor.fetchall())
    message_ids = [row[0] for row in await (await db.execute("SELECT id FROM messages")).fetchall()]
    request, accept = receivers.handshake(80, "/ws", None)
    receiver = receivers.Receiver(0, request, accept)
    decoded: list[bytes] = []
    read_text = receiver._text

    def count_decoded(payload: bytes, now: float) -> None:
        decoded.append(payload)
        read_text(payload, now)

    receiver._text = count_decoded  # type: ignore[method-assign]
    receiver.connection_made(_Wire())  # type: ignore[arg-type]
    upgrade = f"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    receiver.data_received(upgrade.encode() + text_frame(connected_frame("s", "c", ("messages",))))
    assert receiver.opened.done()
    decoded.clear()
    receiver.start_phase(len(message_ids))
    receiver.data_received(frames)
    assert sorted(receiver.ids) == sorted(message_ids)
    assert decoded == []


def _opened(user_id: int) -> private.PrivateReceiver:
    """User `user_id`'s socket, past its upgrade and its connected frame, on no socket."""
    request, accept = receivers.handshake(80, "/ws", None)
    receiver = private.PrivateReceiver(user_id, request, accept, user_id=user_id)
    receiver.connection_made(_Wire())  # type: ignore[arg-type]
    upgrade = f"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    receiver.data_received(upgrade.encode() + text_frame(connected_frame("s", "c", ("messages",))))
    assert receiver.opened.done()
    receiver.start_phase(1)
    return receiver


async def test_private_receiver_and_check_count_only_the_users_own_frames(
    db: psycopg.AsyncConnection[Any],
) -> None:
    """bench/private.py's delivery check can fail: the frames are the server's (rows of the
    event log written by the triggers, through the native codec), and a socket that got
    another user's direct message or notification is caught."""
    alice, bob, carol = [
        await create_user(db, f"{name}@example.com", name) for name in ("alice", "bob", "carol")
    ]
    for sender, recipient in ((alice, bob), (bob, carol), (carol, alice)):
        await db.execute(
            "INSERT INTO direct_messages (sender_id, recipient_id, content) VALUES (%s, %s, 'hi')",
            [sender, recipient],
        )
    cursor = await db.execute(
        "INSERT INTO notifications (user_id, type, data) SELECT id, 'hello', '{}' FROM users "
        "RETURNING id::text, user_id"
    )
    owners = {notification: user for notification, user in await cursor.fetchall()}
    cursor = await db.execute(
        "SELECT id, tx::text::bigint, channel, event, data::text FROM broadcasts ORDER BY id"
    )
    batch = BatchCursors("bench", 0, Snapshot.parse("1:1:"), Snapshot.parse("2:2:"))
    events = [Event(*row, None, batch) for row in await cursor.fetchall()]
    frames = b"".join(CODEC.encode(event) for event in events)
    dms = [row[0] for row in await (await db.execute("SELECT id FROM direct_messages")).fetchall()]

    # Every frame of every channel reaches Bob's socket: only his own are counted as his.
    bobs = _opened(bob)
    bobs.data_received(frames)
    assert bobs.ids == dms[:2]
    assert [owners[found] for _, found in bobs.notifications] == [bob]
    assert bobs.other_frames == len(events) - 3
    assert not private.check_notifications([bobs], owners, []).ok

    # Only Carol's frames reach her socket: her direct messages are hers, but in a round of
    # notifications they are frames she should not have had.
    carols = _opened(carol)
    own = [CODEC.encode(e) for e in events if e.channel == f"private-user.{carol}"]
    carols.data_received(b"".join(own))
    assert carols.ids == dms[1:]
    assert private.check_notifications([carols], owners, []).other_frames == 2
    # Her notification alone: all is well.
    carols = _opened(carol)
    carols.data_received(own[-1])
    assert private.check_notifications([carols], owners, []).ok
    # Unless another socket, not notified, got a frame too.
    assert private.check_notifications([carols], owners, [bobs]).other_frames == len(events)

    # Alice's notification on Carol's channel is on the right channel but not hers.
    [alices_notification] = [e for e in events if e.channel == f"private-user.{alice}"][-1:]
    misrouted = Event(
        alices_notification.id + 1000,
        alices_notification.tx,
        f"private-user.{carol}",
        alices_notification.name,
        alices_notification.data,
        None,
        batch,
    )
    carols.data_received(CODEC.encode(misrouted))
    check = private.check_notifications([carols], owners, [])
    assert (check.unexpected, check.duplicates, check.ok) == (1, 1, False)


async def test_presence_member_counts_the_changes_that_contradict_its_list() -> None:
    """bench/presence.py's check can fail: the frames are the native codec's, and a change its
    list already shows, or one repeated, is counted against the socket."""
    request, accept = receivers.handshake(80, "/ws", None)
    member = presence.Member(0, request, accept, user_id=1)
    member.connection_made(_Wire())  # type: ignore[arg-type]
    upgrade = f"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    connected = connected_frame("s", "c", (presence.CHANNEL,))
    member.data_received(upgrade.encode() + text_frame(connected))
    members = [core_presence.Member("1"), core_presence.Member("2")]
    roster = core_presence.Roster(presence.CHANNEL, members, Snapshot.parse("1:1:"))
    batch = BatchCursors("bench", 0, Snapshot.parse("1:1:"), Snapshot.parse("2:2:"))
    changes = [("member_added", "3"), ("member_removed", "2"), ("member_added", "3")]
    changes += [("member_removed", "4"), ("member_added", "1")]
    frames = b"".join(
        CODEC.encode(Event(n, n, presence.CHANNEL, name, json.dumps({"user_id": u}), None, batch))
        for n, (name, u) in enumerate(changes, 1)
    )
    member.data_received(text_frame(presence_frame(roster)) + frames)
    assert member.listed
    assert member.view == {"1", "3"}
    assert set(member.seen["member_added"]) == {"1", "3"}
    # 3 again, 4 never listed, and its own user: three changes its list contradicts.
    assert (member.wrong, member.other_frames) == (3, 0)


def test_results_read_back_a_tuple_of_any_length() -> None:
    """A full run's option lists are longer than two: db_limits' writers are (1, 4, 16)."""
    assert results.load(tuple[int, ...], [1, 4, 16]) == (1, 4, 16)
    assert results.load(tuple[int, str], [1, "a"]) == (1, "a")
