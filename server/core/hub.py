"""Fan-out: hands each event to the connections subscribed to its channel, without waiting
on any of them.

The hub knows no protocol and no socket. A transport subscribes a connection with the
codec its frames are made by, and either hands the connection a `DirectWriter` with
`write_directly_with` (frames are written during `publish` when the socket can take them,
and queued otherwise; `when_frames_queued` says when to drain with `take_queued`) or drains
it with `await take()`. It obeys `close_request`, which `when_close_requested` announces,
when the hub gives up on a slow consumer, a session ends or a channel is no longer the
user's.

Subscriptions are indexed by channel, by user and by session: a broadcast costs work in
proportion to its channel's subscribers, and closing a user's connections is a lookup. A
channel with many subscribers also keeps its live sockets' writers grouped by codec and
writer class between publishes (`FanOut`), so that a broadcast is one `write_each` call
per group, not one call per socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Self, TypeVar

from server.core.cursor import Cursor, Snapshot
from server.core.events import CloseReason, Codec, Disconnect, Event
from server.core.presence import Roster, listed_already


class DirectWriter:
    """A socket's writer that the hub may hand a publish's bytes to during `publish`."""

    __slots__ = ()

    def write_now(self, frames: bytes) -> bool:
        """Write frames (one or more, joined) to the socket at once if it can take them
        without waiting; False if not."""
        raise NotImplementedError

    @classmethod
    def write_each(cls, writers: Sequence[Self], frames: bytes) -> list[int]:
        """`write_now` to each of `writers`: the positions of those that could not take
        them. A transport overrides it with one loop that calls no Python function per
        socket."""
        return [n for n, writer in enumerate(writers) if not writer.write_now(frames)]


Reframed = dict[tuple[int, Snapshot, Codec], bytes]
K = TypeVar("K")


class Connection:
    """One socket's subscription: its channels and its bounded outbound queue."""

    # Slots: every open socket has one, idle or not.
    __slots__ = (
        "_backlog_bytes",
        "_fan_outs",
        "_frames",
        "_held",
        "_held_bytes",
        "_max_backlog_bytes",
        "_oldest_woke_at",
        "_on_close_request",
        "_on_queued",
        "_paused",
        "_rosters",
        "_seen_by",
        "_waiting",
        "_write_now",
        "channels",
        "close_request",
        "codec",
        "direct",
        "expires_at",
        "frames_handed_over",
        "session_id",
        "socket_id",
        "user_id",
    )

    def __init__(
        self,
        socket_id: str,
        user_id: int,
        session_id: str | None,
        channels: Iterable[str],
        codec: Codec,
        max_backlog_bytes: int,
        fan_outs: dict[str, FanOut] | None = None,
    ) -> None:
        self.socket_id = socket_id
        self.user_id = user_id
        self.session_id = session_id
        # A tuple: a socket has a few channels and rarely changes them, and an empty set
        # alone is 216 bytes per socket.
        self.channels: tuple[str, ...] = tuple(dict.fromkeys(channels))
        self.codec = codec
        self.close_request: Disconnect | None = None
        # The hub's cached fan-outs, which list this connection's writer while `direct` is.
        self._fan_outs = fan_outs
        self._on_close_request: Callable[[], None] | None = None
        self._on_queued: Callable[[], None] | None = None
        self._max_backlog_bytes = max_backlog_bytes
        # A list and a future made only while waiting, not a deque and an Event: each of
        # those is most of a kilobyte, for every idle socket.
        self._frames: list[bytes] = []
        self._backlog_bytes = 0
        # When the listener woke for the oldest frame still queued (loop time), for lag metrics.
        self._oldest_woke_at: float | None = None
        self._waiting: asyncio.Future[None] | None = None
        # Until the socket has caught up (replay), live events wait here unfiltered.
        self._held: list[Event] | None = []
        self._held_bytes = 0
        self._paused = False
        # Presence channel -> the snapshot of the member list the socket was sent: member
        # events that snapshot saw are in the list, and are not sent after it. None until
        # the first list: most sockets are on no presence channel.
        self._rosters: dict[str, Snapshot] | None = None
        # Events this snapshot saw were already sent by the replay; skip them live.
        self._seen_by: Snapshot | None = None
        self._write_now: DirectWriter | None = None
        # The socket's writer while the hub may hand it a publish's shared bytes as they
        # are: it is live, caught up past every batch it saw during replay, nothing is
        # queued and no close was asked for. None otherwise, and `offer` decides frame by
        # frame. Set only by `_set_direct`, which drops the fan-outs that list it.
        self.direct: DirectWriter | None = None
        self.frames_handed_over = 0
        # Loop time at which its session ends, when it has one (Hub.close_when_expired).
        self.expires_at: float | None = None

    def __repr__(self) -> str:
        return f"Connection({self.socket_id!r}, user={self.user_id}, channels={len(self.channels)})"

    def write_directly_with(self, writer: DirectWriter) -> None:
        """Let `offer` hand frames straight to the socket when none are queued ahead of them:
        a live broadcast then costs each socket one write, with no task to wake."""
        self._write_now = writer
        self._refresh_direct()

    def _refresh_direct(self) -> None:
        if (
            self._held is None
            and self._seen_by is None
            and not self._rosters
            and not self._frames
            and self.close_request is None
        ):
            self._set_direct(self._write_now)
        else:
            self._set_direct(None)

    def _set_direct(self, writer: DirectWriter | None) -> None:
        if writer is not self.direct:
            self.direct = writer
            if self._fan_outs:
                for channel in self.channels:
                    self._fan_outs.pop(channel, None)

    def go_live(self, seen_by: Snapshot | None) -> None:
        """The replay sent everything `seen_by` saw: release what arrived meanwhile."""
        held, self._held = self._held or [], None
        self._seen_by = seen_by
        self._held_bytes = 0
        self._paused = False
        self.offer(held, self._oldest_woke_at)
        self._refresh_direct()

    def pause(self) -> None:
        """Hold live events until `resume`: the transport is about to send something (a
        member list) that the events arriving meanwhile must follow. Nothing happens to a
        connection still catching up, which is held anyway."""
        if self._held is None and self.close_request is None:
            self._held = []
            self._paused = True
            self._refresh_direct()

    def resume(self) -> None:
        """Send what `pause` held, in order, and go on live."""
        if not self._paused:
            return
        self._paused = False
        held, self._held = self._held or [], None
        self._held_bytes = 0
        self.offer(held, self._oldest_woke_at)
        self._refresh_direct()

    def sent_roster(self, roster: Roster) -> None:
        """The socket was sent `roster`: leave out the member events it already reflects
        (live, and in what is held)."""
        if self._rosters is None:
            self._rosters = {}
        self._rosters[roster.channel] = roster.seen_by
        # The shared fast path skips `offer`, and with it the filter.
        self._refresh_direct()

    def offer(
        self,
        events: Sequence[Event],
        woke_at: float | None = None,
        reframed: Reframed | None = None,
    ) -> None:
        """Queue what this socket should get of `events` (all of its channels).

        `reframed` caches frames re-encoded for a catch-up snapshot across the connections
        of one publish: sockets that connected between the same two commits share one.
        """
        if self.close_request is not None:
            return
        if self._held is not None:
            if self._oldest_woke_at is None:
                self._oldest_woke_at = woke_at
            codec = self.codec
            for event in events:
                self._held.append(event)
                self._held_bytes += len(event.encoded(codec))
            if self._held_bytes + self._backlog_bytes > self._max_backlog_bytes:
                self._give_up()
            return
        if self._rosters:
            events = self._not_listed(events)
        codec = self.codec
        socket_id = self.socket_id
        if self._seen_by is None:
            # The usual case, once a socket has caught up: a list of shared bytes.
            wires = [event.encoded(codec) for event in events if event.origin != socket_id]
        else:
            wires = []
            for event in events:
                if event.origin == socket_id:
                    continue
                # Re-read each time: a batch that starts after the snapshot drops it.
                seen_by = self._seen_by
                if seen_by is None or event.cursor is None:
                    wires.append(event.encoded(codec))
                elif not seen_by.sees(event.tx):
                    wires.append(self._frame_after_catch_up(event, seen_by, reframed))
        if not wires:
            if self._seen_by is None:
                self._refresh_direct()
            return
        # Only with nothing queued: queued frames are older and must go out first.
        if (
            not self._frames
            and self._write_now is not None
            and self._write_now.write_now(wires[0] if len(wires) == 1 else b"".join(wires))
        ):
            self.frames_handed_over += len(wires)
            if self._seen_by is None:
                self._refresh_direct()
            return
        queue_was_empty = not self._frames
        self._frames += wires
        self._set_direct(None)
        if queue_was_empty and self._on_queued is not None:
            self._on_queued()
        if self._oldest_woke_at is None:
            self._oldest_woke_at = woke_at
        self._backlog_bytes += sum(len(wire) for wire in wires)
        if self._backlog_bytes > self._max_backlog_bytes:
            self._give_up()
        self._wake()

    def _not_listed(self, events: Sequence[Event]) -> list[Event]:
        rosters = self._rosters
        assert rosters is not None
        kept: list[Event] = []
        for event in events:
            listed_by = rosters.get(event.channel)
            if listed_by is None or event.cursor is None:
                kept.append(event)
            elif event.position.prev.sees_all_of(listed_by):
                # This batch began after the list's snapshot: nothing from here on was in
                # the list, so the filter has done its part.
                del rosters[event.channel]
                kept.append(event)
            elif not listed_already(event, listed_by):
                kept.append(event)
        return kept

    def _wake(self) -> None:
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(None)

    def _frame_after_catch_up(
        self, event: Event, seen_by: Snapshot, reframed: Reframed | None
    ) -> bytes:
        """The frame to send from a batch that began before this socket's catch-up snapshot.

        The shared frame's cursor says "everything before the batch's start, and the batch
        up to here". This socket has more than that: everything `seen_by` saw, some of which
        sorts later in the batch. Its cursor must say so, or resuming from it would send
        those again. Once batches start after `seen_by`, the shared frames are right as
        they are and the filter is dropped.
        """
        position = event.position
        if not seen_by.sees_all_of(position.prev):
            self._seen_by = None
            return event.encoded(self.codec)
        key = (event.id, seen_by, self.codec)
        if reframed is not None and key in reframed:
            return reframed[key]
        # The batch's end seen by the feed may not see all `seen_by` saw (one made from
        # notifications lists as in progress whatever did not broadcast since its last read).
        wire = self.codec.encode_at(
            event,
            Cursor(
                position.database,
                position.taken_at_us,
                seen_by,
                position.next.union(seen_by),
                position.after,
            ),
        )
        if reframed is not None:
            reframed[key] = wire
        return wire

    def when_close_requested(self, callback: Callable[[], None]) -> None:
        """Call `callback` soon after the first close request (at once if there was one).

        A callback rather than a task waiting on an event: an idle socket then costs no
        task of its own for a close that rarely comes.
        """
        self._on_close_request = callback
        if self.close_request is not None:
            asyncio.get_running_loop().call_soon(callback)

    def close(self, disconnect: Disconnect) -> None:
        first = self.close_request is None
        if first:
            self.close_request = disconnect
        self._frames = []
        self._held = None
        self._set_direct(None)
        self._wake()
        if first and self._on_close_request is not None:
            asyncio.get_running_loop().call_soon(self._on_close_request)

    def when_frames_queued(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever frames are queued behind an empty queue: a socket that
        `write_directly_with` cannot write to at once then starts a writer of its own."""
        self._on_queued = callback

    async def take(self) -> tuple[list[bytes], float | None]:
        """Wait for frames (or a close request); then `take_queued`."""
        while not self._frames and self.close_request is None:
            self._waiting = asyncio.get_running_loop().create_future()
            try:
                await self._waiting
            finally:
                self._waiting = None
        return self.take_queued()

    def take_queued(self) -> tuple[list[bytes], float | None]:
        """Take every frame queued (none after a close request), as frames on the wire,
        with the loop time at which the listener woke for the oldest of them."""
        frames = self._frames
        woke_at, self._oldest_woke_at = self._oldest_woke_at, None
        self._frames = []
        self._backlog_bytes = 0
        self.frames_handed_over += len(frames)
        self._refresh_direct()
        return frames, woke_at

    def _give_up(self) -> None:
        self.close(
            Disconnect(
                CloseReason.TOO_SLOW, f"too slow: over {self._max_backlog_bytes} bytes unsent"
            )
        )


class Hub:
    def __init__(self, max_backlog_bytes: int) -> None:
        self._max_backlog_bytes = max_backlog_bytes
        self._by_channel: dict[str, set[Connection]] = {}
        self._by_user: dict[int, set[Connection]] = {}
        self._by_session: dict[str, set[Connection]] = {}
        # Channel -> its subscribers grouped for `publish`, while none of them came, went or
        # changed `direct`: kept only for channels of FanOut.KEPT_FROM subscribers or more.
        self._fan_outs: dict[str, FanOut] = {}
        # Connections that receive every channel (`pgcast tail`).
        self._everything: set[Connection] = set()
        self._count = 0
        self._frames_of_unsubscribed = 0
        self._frames_written_directly = 0
        # One timer per session with sockets that expire, not one per socket: for the
        # earliest expiry among them.
        self._expiry_timers: dict[str, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        return self._count

    @property
    def frames_handed_over(self) -> int:
        """Frames handed to sockets so far (written, or taken by their writer to write)."""
        live = sum(c.frames_handed_over for users in self._by_user.values() for c in users)
        return self._frames_written_directly + self._frames_of_unsubscribed + live

    def subscribe(
        self,
        socket_id: str,
        user_id: int,
        session_id: str | None,
        channels: Iterable[str],
        codec: Codec,
    ) -> Connection:
        connection = Connection(
            socket_id,
            user_id,
            session_id,
            channels,
            codec,
            self._max_backlog_bytes,
            self._fan_outs,
        )
        for channel in connection.channels:
            self._by_channel.setdefault(channel, set()).add(connection)
            self._fan_outs.pop(channel, None)
        self._by_user.setdefault(user_id, set()).add(connection)
        if session_id is not None:
            self._by_session.setdefault(session_id, set()).add(connection)
        self._count += 1
        return connection

    def subscribe_to_everything(self, socket_id: str, codec: Codec) -> Connection:
        """A connection of no user that receives every channel (`pgcast tail`)."""
        connection = Connection(socket_id, 0, None, (), codec, self._max_backlog_bytes)
        self._everything.add(connection)
        return connection

    def add_channel(self, connection: Connection, channel: str) -> None:
        """Subscribe an open connection to one more channel: it gets that channel's events
        from the next publish on (no replay; a transport that wants one runs it itself)."""
        if channel not in connection.channels:
            connection.channels += (channel,)
        self._by_channel.setdefault(channel, set()).add(connection)
        self._fan_outs.pop(channel, None)

    def remove_channel(self, connection: Connection, channel: str) -> None:
        connection.channels = tuple(c for c in connection.channels if c != channel)
        _discard(self._by_channel, channel, connection)
        self._fan_outs.pop(channel, None)

    def subscribers(self, channel: str) -> int:
        return len(self._by_channel.get(channel, ()))

    def channels(self) -> dict[str, int]:
        """Every channel with subscribers here, and how many."""
        return {channel: len(members) for channel, members in self._by_channel.items()}

    def connections_of(self, user_id: int) -> list[Connection]:
        return list(self._by_user.get(user_id, ()))

    def unsubscribe(self, connection: Connection) -> None:
        if connection in self._everything:
            self._everything.discard(connection)
            return
        users = self._by_user.get(connection.user_id)
        if users is None or connection not in users:
            return
        _discard(self._by_user, connection.user_id, connection)
        for channel in connection.channels:
            _discard(self._by_channel, channel, connection)
            self._fan_outs.pop(channel, None)
        session_id = connection.session_id
        if session_id is not None:
            _discard(self._by_session, session_id, connection)
            if session_id not in self._by_session:
                timer = self._expiry_timers.pop(session_id, None)
                if timer is not None:
                    timer.cancel()
        self._count -= 1
        self._frames_of_unsubscribed += connection.frames_handed_over

    def close_when_expired(self, connection: Connection, seconds_left: float) -> None:
        """Close `connection` (signed out) once its session has `seconds_left` no more."""
        session_id = connection.session_id
        if session_id is None:
            raise ValueError("only a session's connections expire")
        loop = asyncio.get_running_loop()
        connection.expires_at = expires_at = loop.time() + seconds_left
        timer = self._expiry_timers.get(session_id)
        if timer is None or timer.when() > expires_at:
            if timer is not None:
                timer.cancel()
            self._expiry_timers[session_id] = loop.call_at(expires_at, self._expire, session_id)

    def expiries_pending(self) -> int:
        """Sessions whose sockets' expiry is waited for."""
        return len(self._expiry_timers)

    def _expire(self, session_id: str) -> None:
        del self._expiry_timers[session_id]
        now = asyncio.get_running_loop().time()
        next_at: float | None = None
        for connection in tuple(self._by_session.get(session_id, ())):
            expires_at = connection.expires_at
            if expires_at is None:
                continue
            if expires_at <= now:
                connection.close(_SESSION_EXPIRED)
            elif next_at is None or expires_at < next_at:
                next_at = expires_at
        if next_at is not None:
            self._expiry_timers[session_id] = asyncio.get_running_loop().call_at(
                next_at, self._expire, session_id
            )

    def publish(self, events: Sequence[Event], woke_at: float | None = None) -> None:
        if not events:
            return
        reframed: Reframed = {}
        channel = events[0].channel
        if all(event.channel == channel for event in events):
            self._publish_to_channel(channel, events, woke_at, reframed)
        else:
            # Each connection gets its channels' events, still in commit order.
            routed: dict[Connection, list[Event]] = {}
            for event in events:
                for connection in self._by_channel.get(event.channel, ()):
                    mine = routed.get(connection)
                    if mine is None:
                        routed[connection] = [event]
                    else:
                        mine.append(event)
            for connection, mine in routed.items():
                connection.offer(mine, woke_at, reframed)
        for connection in tuple(self._everything):
            connection.offer(events, woke_at, reframed)

    def _publish_to_channel(
        self, channel: str, events: Sequence[Event], woke_at: float | None, reframed: Reframed
    ) -> None:
        """The usual wake-up: one channel, so every subscriber gets the same frames. The
        sockets that can take them now get the bytes every socket of their protocol shares,
        joined once per publish, in one `write_each` per group; the others go through
        `offer`."""
        fan_out = self._fan_outs.get(channel)
        if fan_out is None:
            fan_out = FanOut(self._by_channel.get(channel, ()))
            if fan_out.size >= FanOut.KEPT_FROM:
                self._fan_outs[channel] = fan_out
        origins = {event.origin for event in events if event.origin is not None}
        offered = list(fan_out.others)
        written = 0
        for codec, writer_class, writers, connections in fan_out.groups:
            if origins:
                # A client event goes to everyone but the socket that sent it.
                kept = [n for n, c in enumerate(connections) if c.socket_id not in origins]
                offered += [c for c in connections if c.socket_id in origins]
                writers = [writers[n] for n in kept]
                connections = [connections[n] for n in kept]
            payload = b"".join([event.encoded(codec) for event in events])
            refused = writer_class.write_each(writers, payload)
            written += len(writers) - len(refused)
            offered += [connections[n] for n in refused]
        for connection in offered:
            connection.offer(events, woke_at, reframed)
        self._frames_written_directly += written * len(events)

    def users(self) -> list[int]:
        return list(self._by_user)

    def sessions(self) -> list[str]:
        return list(self._by_session)

    def subscriptions(self) -> set[tuple[int, str]]:
        """(user, channel) of every subscription."""
        return {
            (connection.user_id, channel)
            for channel, connections in self._by_channel.items()
            for connection in connections
        }

    def close_user(self, user_id: int, disconnect: Disconnect) -> None:
        for connection in tuple(self._by_user.get(user_id, ())):
            connection.close(disconnect)

    def close_session(self, session_id: str, disconnect: Disconnect) -> None:
        for connection in tuple(self._by_session.get(session_id, ())):
            connection.close(disconnect)

    def close_subscriptions(self, user_id: int, channel: str, disconnect: Disconnect) -> None:
        """End user `user_id`'s subscriptions to `channel` (the rule no longer lets them in)."""
        for connection in tuple(self._by_user.get(user_id, ())):
            if channel in connection.channels:
                connection.close(disconnect)

    def close_all(self, disconnect: Disconnect) -> None:
        for connections in tuple(self._by_user.values()):
            for connection in tuple(connections):
                connection.close(disconnect)


class FanOut:
    """A channel's subscribers as `publish` uses them: those with a `direct` writer grouped
    by codec and writer class, in parallel lists of writers and connections, and the rest."""

    # Below this many subscribers a fan-out is made again for each publish: a channel of a
    # few sockets (a user's own, a chat's) would cost more memory kept than it saves.
    KEPT_FROM = 32

    __slots__ = ("groups", "others", "size")

    def __init__(self, connections: Iterable[Connection]) -> None:
        grouped: dict[
            tuple[Codec, type[DirectWriter]], tuple[list[DirectWriter], list[Connection]]
        ] = {}
        others: list[Connection] = []
        size = 0
        for connection in connections:
            size += 1
            writer = connection.direct
            if writer is None:
                others.append(connection)
                continue
            group = grouped.get((connection.codec, type(writer)))
            if group is None:
                group = grouped[connection.codec, type(writer)] = ([], [])
            group[0].append(writer)
            group[1].append(connection)
        self.groups = [
            (codec, writer_class, writers, members)
            for (codec, writer_class), (writers, members) in grouped.items()
        ]
        self.others = others
        self.size = size


_SESSION_EXPIRED = Disconnect(CloseReason.SIGNED_OUT, "session expired")


def _discard(index: dict[K, set[Connection]], key: K, connection: Connection) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(connection)
        if not members:
            del index[key]
