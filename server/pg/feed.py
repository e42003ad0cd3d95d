"""Live delivery: on every wake-up, read what the event log gained since the last read and
hand it to the hub.

The feed keeps a position (a cursor) in memory and always reads "everything after it", so
a notification that was missed while the listener reconnected costs nothing: the next read
catches up from the table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

from server import queries
from server.core.cursor import Cursor
from server.core.hub import Hub
from server.db import DbConnection
from server.pg.eventlog import read_page
from server.pg.listener import backoff

log = logging.getLogger(__name__)

PAGE_SIZE = 1000


class EventFeed:
    def __init__(
        self,
        conninfo: str,
        hub: Hub,
        start: Cursor,
        published: Callable[[float], None] | None = None,
        batch_window: float = 0.0,
    ) -> None:
        """`published` is told, after each wake-up that had events, the seconds from waking
        to the last socket that could take them at once having them written.

        While events keep coming, the log is read at most once per `batch_window` seconds:
        each read (a query, and a write per socket) then carries the events of a whole window.
        The first event after a quiet window goes out at once.
        """
        self.position = start
        self._conninfo = conninfo
        self._hub = hub
        self._published = published
        self._batch_window = batch_window
        self._wake = asyncio.Event()
        # Reads go through a connection of the feed's own: a pooled one would cost a
        # checkout and a liveness round trip on every wake-up.
        self._reader: DbConnection | None = None

    def wake(self, _payload: str = "") -> None:
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        # No read before this loop time: the window the last read opened.
        window_ends = 0.0
        try:
            while True:
                await self._wake.wait()
                # A wake-up within the window waits for its end, and its read carries what
                # came meanwhile. One after a quiet window is read at once, with no timer:
                # at a few messages a second, a timer per read was a wake-up per message.
                rest_of_window = window_ends - loop.time()
                if rest_of_window > 0:
                    await asyncio.sleep(rest_of_window)
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
                    self._wake.set()
                    await asyncio.sleep(backoff(failures))
                except Exception:
                    # A bug must not end delivery for good: log it, and retry from the same place.
                    failures += 1
                    log.exception("delivering events failed")
                    self._wake.set()
                    await asyncio.sleep(backoff(failures))
        finally:
            await self._drop_reader()

    async def deliver_pending(self) -> None:
        loop = asyncio.get_running_loop()
        woke_at = loop.time()
        published = False
        conn = await self._connected_reader()
        while True:
            page = await read_page(conn, self.position, PAGE_SIZE)
            self._hub.publish(page.events, woke_at)
            published = published or bool(page.events)
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
