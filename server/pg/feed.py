"""Live delivery: each statement's broadcasts, from its notification, to the hub in commit
order; the event log is read when a notification cannot be taken as it is.

A statement that adds broadcasts sends a notification carrying its transaction and its events
when they fit in NOTIFY's payload (db/triggers.sql, `pgcast_wake_listeners`), and an empty one
when they do not. PostgreSQL delivers notifications in commit order, so the feed hands a
carried statement to the hub without reading anything, and its position after it is the one
before with that transaction committed (`Snapshot.with_committed`).

The feed reads the log instead, everything after its position, whenever that is not enough:
an empty or unreadable notification, a position whose list of transactions in progress has
grown long, a minute since the last read, and after the LISTEN connection was lost, when
notifications may have been missed. A read covers every notification that had arrived when it
began, and those that arrive later about transactions it saw are dropped, so each event goes
out once whichever way it came.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable

import psycopg

from server import queries
from server.core.cursor import BatchCursors, Cursor
from server.core.events import Event
from server.core.hub import Hub
from server.db import DbConnection
from server.pg.eventlog import read_page
from server.pg.listener import Listener, backoff

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
# A position made from notifications lists as in progress every transaction between two that
# broadcast; past this many, a read replaces it with a snapshot PostgreSQL took. Each frame's
# cursor carries the list.
MAX_IN_PROGRESS = 32
# Reads at least this often while notifications are carried: the position's oldest
# transaction in progress then is at most this much older than PostgreSQL's, and retention
# measures cursors by it.
MAX_SECONDS_BETWEEN_READS = 60.0
# And this often while a transaction the last read saw in progress has not been told
# committed: it may end without a notification and still make events visible (rows that
# another transaction wrote naming it, by hand), which only a read finds.
SECONDS_BETWEEN_READS_WHILE_UNRESOLVED = 1.0
# A carried payload starts with the hex HMAC-SHA256 of the rest.
SIGNATURE_CHARS = 64


class EventFeed:
    def __init__(
        self,
        conninfo: str,
        hub: Hub,
        start: Cursor,
        key: bytes | None,
        published: Callable[[float], None] | None = None,
        batch_window: float = 0.0,
    ) -> None:
        """`key` signs the events notifications carry (eventlog.notify_key); without one,
        every notification is read from the log.

        `published` is told, after each wake-up that had events, the seconds from waking
        to the last socket that could take them at once having them written.

        While events keep coming, the hub is handed them at most once per `batch_window`
        seconds, so each socket gets a whole window's events in one write. The first event
        after a quiet window goes out at once.
        """
        self.position = start
        self.reads = 0
        """Reads of the event log so far (each of one page or more)."""
        self._conninfo = conninfo
        self._key = key
        self._hub = hub
        self._published = published
        self._batch_window = batch_window
        self._wake = asyncio.Event()
        # Payloads of notifications not handed over yet, in the order they came.
        self._notified: list[str] = []
        # Set until a read has begun after LISTEN was (re)established: notifications may
        # have been missed, so none is taken as it is before that read.
        self._catching_up = True
        self._listen_ready = False
        # One more each time the LISTEN connection is lost.
        self._connections_lost = 0
        self._read_requested = True
        self._last_read = 0.0
        # Transactions in progress at the last read that no notification has told of since.
        self._unresolved: frozenset[int] = frozenset()
        # The cursors of the batch the position is in, kept for the transaction's next
        # statement: each is its own notification.
        self._batch: BatchCursors | None = None
        # Reads go through a connection of the feed's own: a pooled one would cost a
        # checkout and a liveness round trip on every wake-up.
        self._reader: DbConnection | None = None
        self._listener: Listener | None = None

    def listen_with(self, listener: Listener) -> None:
        """Take the broadcast channel's notifications from `listener`, and hear of each
        LISTEN connection lost before any of the next one's notifications arrive."""
        self._listener = listener
        listener.route(queries.NOTIFY_CHANNEL, self.notified)
        listener.when_lost(self.lost)
        listener.when_listening(self.listening)

    def notified(self, payload: str) -> None:
        """A notification on the broadcast channel (Listener.route)."""
        self._notified.append(payload)
        self._wake.set()

    def lost(self) -> None:
        """The LISTEN connection is gone, or not there yet (Listener.when_lost): until a
        read after the next LISTEN, what arrives may follow notifications that never came."""
        self._catching_up = True
        self._listen_ready = False
        self._connections_lost += 1

    def listening(self) -> None:
        """LISTEN is in place (Listener.when_listening): read whatever it missed."""
        self._listen_ready = True
        self._read_requested = True
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        # Nothing is handed over before this loop time: the window the last one opened.
        window_ends = 0.0
        # While events keep coming, the feed wakes once per window, with the listener held,
        # rather than once per notification; a window in which none came ends that.
        busy = False
        try:
            while True:
                if busy:
                    await self._wait_out(window_ends - loop.time())
                    if not self._wake.is_set():
                        busy = False
                        continue
                else:
                    await self._woken(loop)
                    # A wake-up within the window waits for its end, and carries what came
                    # meanwhile. One after a quiet window goes at once, with no timer: at a
                    # few messages a second, a timer per message was a wake-up per message.
                    rest_of_window = window_ends - loop.time()
                    busy = rest_of_window > 0
                    if busy:
                        await self._wait_out(rest_of_window)
                self._wake.clear()
                began = loop.time()
                try:
                    await self.deliver_pending()
                    failures = 0
                    window_ends = began + self._batch_window
                except psycopg.Error as error:
                    failures += 1
                    log.warning("reading the event log failed: %s", str(error).strip())
                    await self._drop_reader()
                    self._read_requested = True
                    self._wake.set()
                    await asyncio.sleep(backoff(failures))
                except Exception:
                    # A bug must not end delivery for good: log it, and read from the same
                    # place again.
                    failures += 1
                    log.exception("delivering events failed")
                    self._read_requested = True
                    self._wake.set()
                    await asyncio.sleep(backoff(failures))
        finally:
            await self._drop_reader()

    async def _woken(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for a notification, or for the read due while a transaction is unresolved."""
        if not self._unresolved:
            await self._wake.wait()
            return
        due = self._last_read + SECONDS_BETWEEN_READS_WHILE_UNRESOLVED
        try:
            await asyncio.wait_for(self._wake.wait(), max(0.0, due - loop.time()))
        except TimeoutError:
            self._read_requested = True

    async def _wait_out(self, seconds: float) -> None:
        """Sleep out the window with the listener held: what arrives meanwhile is read once,
        at its end, instead of waking the process for each notification."""
        listener = self._listener
        if listener is None:
            await asyncio.sleep(seconds)
            return
        listener.hold()
        try:
            await asyncio.sleep(seconds)
        finally:
            listener.release()

    async def deliver_pending(self) -> None:
        loop = asyncio.get_running_loop()
        woke_at = loop.time()
        published = False
        while True:
            events = self._take_notified(loop.time())
            if events:
                self._hub.publish(events, woke_at)
                published = True
            if not self._read_requested:
                break
            published = await self._read_log(woke_at) or published
        if published and self._published is not None:
            self._published(loop.time() - woke_at)

    def _take_notified(self, now: float) -> list[Event]:
        """The events of the notifications that can be taken as they are, in order, up to
        the first that cannot (which asks for a read)."""
        events: list[Event] = []
        if self._read_requested:
            return events
        if self._catching_up:
            self._read_requested = bool(self._notified)
            return events
        taken = 0
        for payload in self._notified:
            carried = self._carried(payload, now)
            if carried is None:
                self._read_requested = True
                break
            events += carried
            taken += 1
        del self._notified[:taken]
        return events

    def _carried(self, payload: str, now: float) -> list[Event] | None:
        """The events a notification carries that the position does not have yet, the
        position moved past them; None if it cannot be taken as it is."""
        read_every = (
            SECONDS_BETWEEN_READS_WHILE_UNRESOLVED
            if self._unresolved
            else MAX_SECONDS_BETWEEN_READS
        )
        if (
            self._key is None
            or len(payload) <= SIGNATURE_CHARS
            or now > self._last_read + read_every
        ):
            return None
        signature, body = payload[:SIGNATURE_CHARS], payload[SIGNATURE_CHARS:]
        expected = hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            # Anyone who can connect may NOTIFY: what pgcast did not sign is read from the log.
            log.debug("notification not signed: %.200s", payload)
            return None
        try:
            tx, taken_at_us, rows = json.loads(body)
            if not isinstance(tx, int) or not isinstance(taken_at_us, int) or tx <= 0:
                raise ValueError("not a broadcast notification")
            position = self.position
            batch = self._batch
            if position.after is not None and position.after[0] == tx and batch is not None:
                # The transaction's next statement: more of the same batch.
                after_id = position.after[1]
            elif position.next.sees(tx):
                # A read has already delivered it.
                return []
            else:
                committed = position.next.with_committed(tx)
                if len(committed.xip) > MAX_IN_PROGRESS:
                    return None
                batch = BatchCursors(position.database, taken_at_us, position.next, committed)
                after_id = -1
            events = [
                Event(event_id, tx, channel, name, data, origin, batch)
                for event_id, channel, name, data, origin in rows
                if event_id > after_id
            ]
        except (ValueError, TypeError) as error:
            log.debug("notification not taken as it is (%s): %.200s", error, payload)
            return None
        if events:
            # Told committed: no longer one the last read saw in progress.
            self._unresolved = self._unresolved - {tx}
            self._batch = batch
            self.position = events[-1].position
        return events

    async def _read_log(self, woke_at: float) -> bool:
        """Read everything after the position; whether it had events."""
        # Everything notified so far committed before the read's snapshot: the read has it.
        self._notified.clear()
        self._read_requested = False
        listen_ready, connections_lost = self._listen_ready, self._connections_lost
        published = False
        conn = await self._connected_reader()
        self.reads += 1
        while True:
            page = await read_page(conn, self.position, PAGE_SIZE)
            self._hub.publish(page.events, woke_at)
            published = published or bool(page.events)
            self.position = page.end
            if page.complete:
                break
        self._batch = None
        self._last_read = asyncio.get_running_loop().time()
        self._unresolved = self.position.next.xip
        # Begun with LISTEN in place, and not lost since: from here on, notifications
        # follow each other with none missing.
        if listen_ready and connections_lost == self._connections_lost:
            self._catching_up = False
        return published

    async def _connected_reader(self) -> DbConnection:
        if self._reader is None or self._reader.closed:
            self._reader = await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                application_name=queries.LISTENER_READER_APPLICATION_NAME,
            )
        return self._reader

    async def _drop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()
