"""The one LISTEN connection of a process: wakes on NOTIFY, reads the event log, feeds the hub.

The listener keeps a position (a cursor) in memory and always reads "everything after it",
so a notification that was missed while reconnecting costs nothing: the next read after
LISTEN is re-established catches up from the table.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import psycopg

from server import queries
from server.cursor import Cursor
from server.db import DbConnection
from server.eventlog import read_page
from server.hub import Hub

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
MAX_BACKOFF_SECONDS = 5.0


class Listener:
    def __init__(
        self,
        conninfo: str,
        hub: Hub,
        start: Cursor,
        published: Callable[[float], None] | None = None,
        batch_window: float = 0.0,
        catch_up_revocations: bool = False,
    ) -> None:
        """`published` is told, after each wake-up that had events, the seconds from waking
        to the last socket that could take them at once having them written.

        While events keep coming, the log is read at most once per `batch_window` seconds:
        each read (a query, and a write per socket) then carries the events of a whole window.
        The first event after a quiet window goes out at once.

        With `catch_up_revocations`, each time LISTEN is (re)established the sessions and
        users of the hub's subscriptions are checked against the tables, because
        revocations announced while it was down are lost like any notification. (`pgcast
        tail`'s one subscription belongs to no user, and must not be closed as one.)
        """
        self.position = start
        self._published = published
        self._batch_window = batch_window
        self._listening = asyncio.Event()
        self.reconnects = 0
        self._conninfo = conninfo
        # Reads go through a connection of the listener's own: a pooled one would cost a
        # checkout and a liveness round trip on every wake-up.
        self._reader: DbConnection | None = None
        self._hub = hub
        self._wake = asyncio.Event()
        self._catch_up_revocations = catch_up_revocations
        self._revocations_owed = False

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    async def wait_listening(self) -> None:
        await self._listening.wait()

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._listen_forever())
                tasks.create_task(self._deliver_forever())
        finally:
            await self._drop_reader()

    async def _listen_forever(self) -> None:
        failures = 0
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo,
                    autocommit=True,
                    application_name=queries.LISTENER_APPLICATION_NAME,
                )
                async with conn:
                    await conn.execute(queries.LISTEN)
                    if failures:
                        log.info("listener reconnected after %d attempt(s)", failures)
                    failures = 0
                    self._listening.set()
                    # Whatever committed while we were not listening is in the tables.
                    self._revocations_owed = self._catch_up_revocations
                    self._wake.set()
                    async for notification in conn.notifies():
                        if notification.channel == queries.REVOCATIONS_CHANNEL:
                            self._revoke(notification.payload)
                        else:
                            self._wake.set()
            except psycopg.Error as error:
                if self.listening:
                    self.reconnects += 1
                log.warning("listener connection lost: %s", str(error).strip() or type(error))
            finally:
                self._listening.clear()
            failures += 1
            await asyncio.sleep(_backoff(failures))

    def _revoke(self, payload: str) -> None:
        kind, _, ident = payload.partition(":")
        if kind == "session" and ident:
            self._hub.close_session(ident, "signed out")
        elif kind == "user" and ident.isdigit():
            self._hub.close_user(int(ident), "account deleted")
        else:
            log.warning("ignoring malformed revocation %r", payload[:100])

    async def _deliver_forever(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            began = loop.time()
            try:
                if self._revocations_owed:
                    # Cleared first: a LISTEN re-established during the check owes another.
                    self._revocations_owed = False
                    try:
                        await self._close_ended_sessions()
                    except BaseException:
                        self._revocations_owed = True
                        raise
                await self.deliver_pending()
                failures = 0
                rest_of_window = began + self._batch_window - loop.time()
                if rest_of_window > 0:
                    await asyncio.sleep(rest_of_window)
            except psycopg.Error as error:
                failures += 1
                log.warning("reading the event log failed: %s", str(error).strip())
                await self._drop_reader()
                self._wake.set()
                await asyncio.sleep(_backoff(failures))
            except Exception:
                # A bug must not end delivery for good: log it, and retry from the same place.
                failures += 1
                log.exception("delivering events failed")
                self._wake.set()
                await asyncio.sleep(_backoff(failures))

    async def _close_ended_sessions(self) -> None:
        """Close the sockets of sessions and users that ended while LISTEN was down."""
        sessions, users = self._hub.signed_in()
        if not sessions and not users:
            return
        conn = await self._connected_reader()
        cursor = await conn.execute(
            queries.ENDED_AMONG, {"session_ids": list(sessions), "user_ids": list(users)}
        )
        for kind, ident, reason in await cursor.fetchall():
            if kind == "user":
                self._hub.close_user(int(ident), reason)
            else:
                self._hub.close_session(ident, reason)

    async def deliver_pending(self) -> None:
        loop = asyncio.get_running_loop()
        woke_at = loop.time()
        published = False
        conn = await self._connected_reader()
        while True:
            page = await read_page(conn, self.position, PAGE_SIZE)
            self._hub.publish(page.broadcasts, woke_at)
            published = published or bool(page.broadcasts)
            self.position = page.end
            if page.complete:
                break
        if published and self._published is not None:
            self._published(loop.time() - woke_at)

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


def _backoff(failures: int) -> float:
    ceiling: float = min(MAX_BACKOFF_SECONDS, 0.05 * 2**failures)
    return random.uniform(ceiling / 2, ceiling)
