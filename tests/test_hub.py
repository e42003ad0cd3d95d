"""The hub's per-socket rules, on hand-made events (no I/O)."""

from __future__ import annotations

import asyncio
import json

import pytest

from server.core.cursor import BatchCursors, Cursor, Snapshot
from server.core.events import CloseReason, Disconnect, Event
from server.core.hub import Connection, DirectWriter, FanOut, Hub
from server.core.presence import Member, Roster
from server.transports.native.codec import CODEC
from server.wire import text_of


def broadcast(
    tx: int,
    event_id: int,
    prev: str,
    next_: str,
    origin: str | None = None,
    channel: str = "messages",
) -> Event:
    batch = BatchCursors("db", 1, Snapshot.parse(prev), Snapshot.parse(next_))
    data = json.dumps({"message": {"id": event_id}})
    return Event(event_id, tx, channel, "new-message", data, origin, batch)


def subscribe(
    hub: Hub, socket_id: str, user_id: int = 1, channels: tuple[str, ...] = ("messages",)
) -> Connection:
    return hub.subscribe(socket_id, user_id, None, channels, CODEC)


class Writer(DirectWriter):
    """A socket that takes frames at once while `accepts`; what it took is in `written`."""

    __slots__ = ("accepts", "written")

    def __init__(self, accepts: bool = True) -> None:
        self.accepts = accepts
        self.written: list[bytes] = []

    def write_now(self, frames: bytes) -> bool:
        if self.accepts:
            self.written.append(frames)
        return self.accepts


async def test_socket_skips_its_own_posts() -> None:
    hub = Hub(max_backlog_bytes=1 << 20)
    mine = subscribe(hub, "me")
    mine.go_live(None)
    hub.publish(
        [broadcast(10, 1, "9:9:", "11:11:", origin="me"), broadcast(11, 2, "9:9:", "12:12:")]
    )
    frames, _ = await mine.take()
    assert [json.loads(text_of(f))["data"]["message"]["id"] for f in frames] == [2]


async def test_frames_of_a_batch_straddling_the_catch_up_carry_a_cursor_that_says_so() -> None:
    # The socket caught up to S = 12:12: (tx 11 had committed, tx 10 had not). The listener's
    # batch began at P = 9:9: and holds tx 10 (new to the socket) and tx 11 (already sent).
    hub = Hub(max_backlog_bytes=1 << 20)
    socket = subscribe(hub, "s")
    caught_up = Snapshot.parse("10:12:10")
    socket.go_live(caught_up)
    hub.publish([broadcast(10, 5, "9:9:", "13:13:"), broadcast(11, 6, "9:9:", "13:13:")])
    frames, _ = await socket.take()
    assert len(frames) == 1
    cursor = Cursor.decode(json.loads(text_of(frames[0]))["cursor"])
    # Resuming from it must not send tx 11 again: its batch now starts at S, not at P.
    assert cursor.prev == caught_up
    assert cursor.next == Snapshot.parse("13:13:")
    assert cursor.after == (10, 5)

    # A later batch starts after S: frames are passed on unchanged.
    later = broadcast(13, 7, "13:13:", "14:14:")
    hub.publish([later])
    frames, _ = await socket.take()
    assert frames == [later.encoded(CODEC)]


def test_snapshot_order() -> None:
    early, late = Snapshot.parse("10:12:10"), Snapshot.parse("10:12:")
    assert late.sees_all_of(early)
    assert not early.sees_all_of(late)
    assert Snapshot.parse("13:13:").sees_all_of(late)
    assert not late.sees_all_of(Snapshot.parse("13:13:"))
    assert early.sees_all_of(early)


async def test_sockets_caught_up_to_the_same_snapshot_share_one_reframed_frame() -> None:
    hub = Hub(max_backlog_bytes=1 << 20)
    caught_up = Snapshot.parse("10:12:10")
    sockets = [subscribe(hub, f"s{n}") for n in range(3)]
    for socket in sockets:
        socket.go_live(caught_up)
    hub.publish([broadcast(10, 5, "9:9:", "13:13:")])
    frames = [(await socket.take())[0][0] for socket in sockets]
    assert frames[0] is frames[1] is frames[2]


async def test_a_socket_that_cannot_take_frames_now_gets_them_queued_in_order() -> None:
    hub = Hub(max_backlog_bytes=1 << 20)
    socket = subscribe(hub, "s")
    writer = Writer(accepts=False)
    written = writer.written
    socket.write_directly_with(writer)
    socket.go_live(None)
    first, second, third = (broadcast(10 + n, n, "9:9:", f"{11 + n}:{11 + n}:") for n in range(3))
    hub.publish([first])
    writer.accepts = True
    # `first` still waits in the queue: `second` must not overtake it.
    hub.publish([second])
    assert written == []
    frames, _ = await socket.take()
    assert frames == [first.encoded(CODEC), second.encoded(CODEC)]

    hub.publish([third])
    assert written == [third.encoded(CODEC)]
    assert hub.frames_handed_over == 3
    hub.unsubscribe(socket)
    assert hub.frames_handed_over == 3


async def test_an_event_reaches_only_its_channels_subscribers_in_commit_order() -> None:
    hub = Hub(max_backlog_bytes=1 << 20)
    orders = subscribe(hub, "orders", channels=("orders.1",))
    both = subscribe(hub, "both", channels=("orders.1", "messages"))
    feed = subscribe(hub, "feed")
    idle = subscribe(hub, "idle", channels=("orders.2",))
    for connection in (orders, both, feed, idle):
        connection.go_live(None)
    events = [
        broadcast(10, 1, "9:9:", "13:13:", channel="orders.1"),
        broadcast(11, 2, "9:9:", "13:13:"),
        broadcast(12, 3, "9:9:", "13:13:", channel="orders.1"),
    ]
    hub.publish(events)

    def ids(frames: list[bytes]) -> list[int]:
        return [json.loads(text_of(frame))["data"]["message"]["id"] for frame in frames]

    assert ids((await orders.take())[0]) == [1, 3]
    assert ids((await both.take())[0]) == [1, 2, 3]
    assert ids((await feed.take())[0]) == [2]
    assert idle.take_queued()[0] == []


def test_closing_by_user_session_and_channel_is_a_lookup() -> None:
    hub = Hub(max_backlog_bytes=1 << 20)
    alice_team = hub.subscribe("a1", 1, "sa", ("private-team.ops", "messages"), CODEC)
    alice_feed = hub.subscribe("a2", 1, "sa2", ("messages",), CODEC)
    bob = hub.subscribe("b1", 2, "sb", ("private-team.ops",), CODEC)
    revoked = Disconnect(CloseReason.FORBIDDEN, "no longer allowed")

    hub.close_subscriptions(1, "private-team.ops", revoked)
    assert alice_team.close_request == revoked
    assert alice_feed.close_request is None
    assert bob.close_request is None

    hub.close_session("sb", Disconnect(CloseReason.SIGNED_OUT, "signed out"))
    assert bob.close_request is not None
    assert bob.close_request.reason is CloseReason.SIGNED_OUT
    hub.close_user(1, Disconnect(CloseReason.SIGNED_OUT, "account deleted"))
    assert alice_feed.close_request is not None

    for connection in (alice_team, alice_feed, bob):
        hub.unsubscribe(connection)
    assert len(hub) == 0
    assert hub.subscriptions() == set()


async def test_an_open_connection_can_add_and_drop_channels() -> None:
    hub = Hub(max_backlog_bytes=1 << 20)
    connection = subscribe(hub, "s", channels=("a",))
    connection.go_live(None)
    hub.add_channel(connection, "b")
    assert hub.channels() == {"a": 1, "b": 1}
    hub.publish([broadcast(10, 1, "9:9:", "11:11:", channel="b")])
    hub.remove_channel(connection, "a")
    hub.publish([broadcast(11, 2, "11:11:", "12:12:", channel="a")])
    frames, _ = await connection.take()
    assert [json.loads(text_of(f))["channel"] for f in frames] == ["b"]
    assert hub.channels() == {"b": 1}
    hub.unsubscribe(connection)
    assert hub.channels() == {}


async def test_an_ephemeral_event_has_no_cursor_and_passes_the_catch_up_filter() -> None:
    hub = Hub(max_backlog_bytes=1 << 20)
    connection = subscribe(hub, "s", channels=("private-room",))
    connection.go_live(Snapshot.parse("10:12:10"))
    hub.publish([Event.ephemeral("private-room", "client-typing", '{"who":1}', "other")])
    frames, _ = await connection.take()
    assert [json.loads(text_of(f)) for f in frames] == [
        {"event": "client-typing", "channel": "private-room", "data": {"who": 1}}
    ]


async def test_a_publish_that_crosses_past_the_catch_up_snapshot_sends_the_rest_shared() -> None:
    # The first event's batch began before S (reframed); the second's begins after S, which
    # drops the filter in the middle of one publish.
    hub = Hub(max_backlog_bytes=1 << 20)
    socket = subscribe(hub, "s")
    socket.go_live(Snapshot.parse("10:12:10"))
    straddling = broadcast(10, 5, "9:9:", "13:13:")
    after = broadcast(13, 6, "13:13:", "14:14:")
    also_after = broadcast(14, 7, "13:13:", "15:15:")
    hub.publish([straddling, after, also_after])
    frames, _ = await socket.take()
    assert len(frames) == 3
    assert frames[1:] == [after.encoded(CODEC), also_after.encoded(CODEC)]


def member_event(
    tx: int, event_id: int, prev: str, next_: str, name: str = "member_added", user: str = "7"
) -> Event:
    batch = BatchCursors("db", 1, Snapshot.parse(prev), Snapshot.parse(next_))
    return Event(event_id, tx, "presence-room", name, json.dumps({"user_id": user}), None, batch)


async def test_a_member_list_holds_back_the_member_changes_it_already_reflects() -> None:
    hub = Hub(max_backlog_bytes=1 << 20)
    socket = subscribe(hub, "s", channels=("presence-room", "messages"))
    socket.go_live(None)
    socket.pause()
    # Arrive while the member list (read in snapshot 12:12:, which saw tx 10 and 11) is on its
    # way: held, then the ones it reflects are dropped; a message and tx 12 go through.
    hub.publish(
        [
            member_event(10, 1, "9:9:", "13:13:", user="a"),
            broadcast(11, 2, "9:9:", "13:13:", channel="messages"),
            member_event(11, 3, "9:9:", "13:13:", "member_removed", user="b"),
            member_event(12, 4, "9:9:", "13:13:", user="c"),
        ]
    )
    socket.sent_roster(Roster("presence-room", [Member("a")], Snapshot.parse("12:12:")))
    assert socket.take_queued()[0] == []
    socket.resume()
    frames, _ = await socket.take()
    assert [
        (f["event"], f["data"].get("user_id")) for f in map(json.loads, map(text_of, frames))
    ] == [
        ("new-message", None),
        ("member_added", "c"),
    ]
    # Once batches start after the list's snapshot, nothing is filtered any more.
    hub.publish([member_event(13, 5, "13:13:", "14:14:", "member_removed", user="a")])
    frames, _ = await socket.take()
    assert len(frames) == 1


def test_pausing_a_connection_still_catching_up_changes_nothing() -> None:
    hub = Hub(max_backlog_bytes=1 << 20)
    socket = subscribe(hub, "s")
    socket.pause()
    socket.resume()
    hub.publish([broadcast(10, 1, "9:9:", "11:11:")])
    # Still held for its catch-up: nothing goes out until go_live.
    assert socket.take_queued()[0] == []
    socket.go_live(None)
    assert len(socket.take_queued()[0]) == 1


async def test_sockets_that_take_frames_at_once_share_one_write_per_protocol() -> None:
    # Two protocols on one channel; a socket whose own post is in the publish; a socket
    # whose kernel buffer is full. Each still gets exactly its frames, in order.
    from server.transports.pusher.codec import CODEC as PUSHER_CODEC

    hub = Hub(max_backlog_bytes=1 << 20)
    written: dict[str, list[bytes]] = {}

    def writer(name: str, accepts: bool = True) -> Writer:
        writer = Writer(accepts)
        written[name] = writer.written
        return writer

    native = [subscribe(hub, f"n{n}") for n in range(3)]
    pusher = [hub.subscribe(f"p{n}", 1, None, ("messages",), PUSHER_CODEC) for n in range(2)]
    full = subscribe(hub, "full")
    for connection in (*native, *pusher):
        connection.write_directly_with(writer(connection.socket_id))
        connection.go_live(None)
    full.write_directly_with(writer("full", accepts=False))
    full.go_live(None)

    events = [broadcast(10, 1, "9:9:", "12:12:", origin="n0"), broadcast(11, 2, "9:9:", "12:12:")]
    hub.publish(events)

    both_native = events[0].encoded(CODEC) + events[1].encoded(CODEC)
    both_pusher = events[0].encoded(PUSHER_CODEC) + events[1].encoded(PUSHER_CODEC)
    assert written["n0"] == [events[1].encoded(CODEC)]
    assert written["n1"] == written["n2"] == [both_native]
    # One join per protocol, shared by its sockets.
    assert written["n1"][0] is written["n2"][0]
    assert written["p0"] == written["p1"] == [both_pusher]
    assert written["p0"][0] is written["p1"][0]
    assert written["full"] == []
    assert full.take_queued()[0] == [events[0].encoded(CODEC), events[1].encoded(CODEC)]
    assert hub.frames_handed_over == 1 + 2 * 4 + 2


async def test_each_socket_of_a_session_closes_at_its_own_expiry() -> None:
    hub = Hub(max_backlog_bytes=1 << 20)
    soon = hub.subscribe("soon", 1, "session", ("messages",), CODEC)
    later = hub.subscribe("later", 1, "session", ("messages",), CODEC)
    gone = hub.subscribe("gone", 2, "other", ("messages",), CODEC)
    other = hub.subscribe("other", 3, "third", ("messages",), CODEC)
    closed: dict[str, asyncio.Future[None]] = {}
    loop = asyncio.get_running_loop()
    for connection in (soon, later, gone, other):
        closed[connection.socket_id] = future = loop.create_future()
        connection.when_close_requested(lambda future=future: future.set_result(None))
    hub.close_when_expired(soon, 0.2)
    hub.close_when_expired(later, 0.6)
    hub.close_when_expired(gone, 0.2)
    hub.close_when_expired(other, 60)
    hub.unsubscribe(gone)

    await asyncio.wait_for(closed["soon"], 5)
    assert soon.close_request == Disconnect(CloseReason.SIGNED_OUT, "session expired")
    assert later.close_request is None
    await asyncio.wait_for(closed["later"], 5)
    assert later.close_request == Disconnect(CloseReason.SIGNED_OUT, "session expired")
    assert gone.close_request is None
    assert other.close_request is None
    hub.unsubscribe(other)
    # Nothing is left waiting for a session that has no socket here.
    assert not hub.expiries_pending()


@pytest.mark.parametrize("sockets", [5, FanOut.KEPT_FROM + 2])
async def test_a_channels_fan_out_follows_every_change_of_its_subscribers(sockets: int) -> None:
    # A channel of KEPT_FROM sockets or more keeps its fan-out between publishes: each change
    # below must reach it, or a socket would miss a frame, get one out of order or after it
    # left.
    # Each change is followed by its own publish.
    hub = Hub(max_backlog_bytes=1 << 20)
    connections = [subscribe(hub, f"s{n}") for n in range(sockets)]
    writers = [Writer() for _ in connections]
    for connection, writer in zip(connections, writers, strict=True):
        connection.write_directly_with(writer)
        connection.go_live(None)
    slow, gone, paused, closed = connections[:4]
    slow_writer, gone_writer, paused_writer, closed_writer = writers[:4]
    sent: list[bytes] = []

    def publish(origin: str | None = None) -> bytes:
        n = len(sent)
        event = broadcast(10 + n, n, f"{10 + n}:{10 + n}:", f"{11 + n}:{11 + n}:", origin)
        hub.publish([event])
        sent.append(event.encoded(CODEC))
        return sent[-1]

    first = publish()
    slow_writer.accepts = False
    second = publish()
    # It takes frames again, but the one queued must go first.
    slow_writer.accepts = True
    third = publish()
    assert slow_writer.written == [first]
    assert slow.take_queued()[0] == [second, third]
    assert publish() in slow_writer.written

    hub.unsubscribe(gone)
    assert publish() not in gone_writer.written
    paused.pause()
    held = publish()
    assert held not in paused_writer.written
    paused.resume()
    assert paused_writer.written[-1] == held
    closed.close(Disconnect(CloseReason.TOO_SLOW, "too slow"))
    assert publish() not in closed_writer.written

    # Until its catch-up is done, a socket's live frames wait in the hub.
    newcomer = subscribe(hub, "new")
    newcomer_writer = Writer()
    newcomer.write_directly_with(newcomer_writer)
    caught = publish()
    assert newcomer_writer.written == []
    newcomer.go_live(None)
    assert newcomer_writer.written == [caught]
    assert publish() in newcomer_writer.written
    hub.remove_channel(newcomer, "messages")
    assert publish() not in newcomer_writer.written
    hub.add_channel(newcomer, "messages")
    back = publish()
    assert newcomer_writer.written[-1] == back

    # A client event goes to every socket but its sender's.
    theirs = publish(origin=slow.socket_id)
    assert theirs not in slow_writer.written
    assert newcomer_writer.written[-1] == theirs
    for writer in writers[4:]:
        assert writer.written == sent
    assert slow_writer.written == [first, *sent[3:-1]]
    assert paused_writer.written == sent
    assert gone_writer.written == sent[:4]
    assert closed_writer.written == sent[:6]
