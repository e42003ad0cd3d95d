"""Fan-out: hands each broadcast to every subscribed socket without waiting on any of them.

The hub knows nothing of WebSockets. A transport subscribes and either hands the hub a
`write_directly_with` callable (frames are written during `publish` when the socket can take
them, and queued otherwise; `when_frames_queued` says when to drain with `take_queued`) or
drains its Subscription with `await take()`. It obeys `close_request`, which
`when_close_requested` announces, when the hub gives up on a slow consumer or a session ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

from server.cursor import Cursor, Snapshot
from server.eventlog import Broadcast

SLOW_CONSUMER_CLOSE = 1013
SIGNED_OUT_CLOSE = 4401

WriteNow = Callable[[list[bytes]], bool]
"""Writes frames to a socket at once if it can take them without waiting; False if not."""


class Subscription:
    """One socket's bounded outbound queue."""

    def __init__(
        self, socket_id: str, user_id: int, session_id: str | None, max_backlog_bytes: int
    ) -> None:
        self.socket_id = socket_id
        self.user_id = user_id
        self.session_id = session_id
        self.close_request: tuple[int, str] | None = None
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
        # Until the socket has caught up (replay), live broadcasts wait here unfiltered.
        self._held: list[Broadcast] | None = []
        # Broadcasts this snapshot saw were already sent by the replay; skip them live.
        self._seen_by: Snapshot | None = None
        self._write_now: WriteNow | None = None
        self.frames_handed_over = 0

    def write_directly_with(self, write_now: WriteNow) -> None:
        """Let `offer` hand frames straight to the socket when none are queued ahead of them:
        a live broadcast then costs each socket one write, with no task to wake."""
        self._write_now = write_now

    def go_live(self, seen_by: Snapshot | None) -> None:
        """The replay sent everything `seen_by` saw: release what arrived meanwhile."""
        held, self._held = self._held or [], None
        self._seen_by = seen_by
        self._backlog_bytes = 0
        self.offer(held, self._oldest_woke_at)

    def offer(
        self,
        broadcasts: Iterable[Broadcast],
        woke_at: float | None = None,
        reframed: dict[tuple[int, Snapshot], bytes] | None = None,
    ) -> None:
        """Queue what this socket should get of `broadcasts`.

        `reframed` caches frames re-encoded for a catch-up snapshot across the sockets of
        one publish: sockets that connected between the same two commits share one.
        """
        if self.close_request is not None:
            return
        if self._held is not None:
            if self._oldest_woke_at is None:
                self._oldest_woke_at = woke_at
            for broadcast in broadcasts:
                self._held.append(broadcast)
                self._backlog_bytes += len(broadcast.wire)
            if self._backlog_bytes > self._max_backlog_bytes:
                self._give_up()
            return
        wires: list[bytes] = []
        for broadcast in broadcasts:
            if broadcast.origin_socket_id == self.socket_id:
                continue
            wire = broadcast.wire
            if self._seen_by is not None:
                if self._seen_by.sees(broadcast.tx):
                    continue
                wire = self._frame_after_catch_up(broadcast, self._seen_by, reframed)
            wires.append(wire)
        if not wires:
            return
        # Only with nothing queued: queued frames are older and must go out first.
        if not self._frames and self._write_now is not None and self._write_now(wires):
            self.frames_handed_over += len(wires)
            return
        queue_was_empty = not self._frames
        self._frames += wires
        if queue_was_empty and self._on_queued is not None:
            self._on_queued()
        if self._oldest_woke_at is None:
            self._oldest_woke_at = woke_at
        self._backlog_bytes += sum(len(wire) for wire in wires)
        if self._backlog_bytes > self._max_backlog_bytes:
            self._give_up()
        self._wake()

    def _wake(self) -> None:
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(None)

    def _frame_after_catch_up(
        self,
        broadcast: Broadcast,
        seen_by: Snapshot,
        reframed: dict[tuple[int, Snapshot], bytes] | None,
    ) -> bytes:
        """The frame to send from a batch that began before this socket's catch-up snapshot.

        The shared frame's cursor says "everything before the batch's start, and the batch
        up to here". This socket has more than that: everything `seen_by` saw, some of which
        sorts later in the batch. Its cursor must say so, or resuming from it would send
        those again. Once batches start after `seen_by`, the shared frames are right as
        they are and the filter is dropped.
        """
        position = broadcast.cursor
        if not seen_by.sees_all_of(position.prev):
            self._seen_by = None
            return broadcast.wire
        key = (broadcast.event_id, seen_by)
        if reframed is not None and key in reframed:
            return reframed[key]
        wire = broadcast.framed_with(
            Cursor(position.database, position.taken_at_us, seen_by, position.next, position.after)
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

    def close(self, code: int, reason: str) -> None:
        first = self.close_request is None
        if first:
            self.close_request = (code, reason)
        self._frames = []
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
        """Take every frame queued (none after a close request), as WebSocket frames on the
        wire, with the loop time at which the listener woke for the oldest of them."""
        frames = self._frames
        woke_at, self._oldest_woke_at = self._oldest_woke_at, None
        self._frames = []
        self._backlog_bytes = 0
        self.frames_handed_over += len(frames)
        return frames, woke_at

    def _give_up(self) -> None:
        self._held = None
        self.close(
            SLOW_CONSUMER_CLOSE,
            f"too slow: over {self._max_backlog_bytes} bytes unsent; reconnect with your cursor",
        )


class Hub:
    def __init__(self, max_backlog_bytes: int) -> None:
        self._max_backlog_bytes = max_backlog_bytes
        self._subscriptions: dict[str, Subscription] = {}
        self._frames_of_unsubscribed = 0

    def __len__(self) -> int:
        return len(self._subscriptions)

    @property
    def frames_handed_over(self) -> int:
        """Frames handed to sockets so far (written, or taken by their writer to write)."""
        live = sum(s.frames_handed_over for s in self._subscriptions.values())
        return self._frames_of_unsubscribed + live

    def subscribe(
        self, socket_id: str, user_id: int, session_id: str | None = None
    ) -> Subscription:
        subscription = Subscription(socket_id, user_id, session_id, self._max_backlog_bytes)
        self._subscriptions[socket_id] = subscription
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if self._subscriptions.pop(subscription.socket_id, None) is not None:
            self._frames_of_unsubscribed += subscription.frames_handed_over

    def publish(self, broadcasts: Sequence[Broadcast], woke_at: float | None = None) -> None:
        if not broadcasts:
            return
        reframed: dict[tuple[int, Snapshot], bytes] = {}
        for subscription in list(self._subscriptions.values()):
            subscription.offer(broadcasts, woke_at, reframed)

    def signed_in(self) -> tuple[set[str], set[int]]:
        """The sessions and the users that have sockets here."""
        subscriptions = self._subscriptions.values()
        sessions = {s.session_id for s in subscriptions if s.session_id is not None}
        return sessions, {s.user_id for s in subscriptions}

    def close_user(self, user_id: int, reason: str) -> None:
        for subscription in list(self._subscriptions.values()):
            if subscription.user_id == user_id:
                subscription.close(SIGNED_OUT_CLOSE, reason)

    def close_session(self, session_id: str, reason: str) -> None:
        for subscription in list(self._subscriptions.values()):
            if subscription.session_id == session_id:
                subscription.close(SIGNED_OUT_CLOSE, reason)
