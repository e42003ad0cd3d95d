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
from server.db import DbPool
from server.eventlog import read_page
from server.hub import Hub

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
MAX_BACKOFF_SECONDS = 5.0


class Listener:
    def __init__(
        self,
        conninfo: str,
        pool: DbPool,
        hub: Hub,
        start: Cursor,
        published: Callable[[float], None] | None = None,
    ) -> None:
        """`published` is told, after each wake-up that had events, the seconds from waking
        to the last socket that could take them at once having them written."""
        self.position = start
        self._published = published
        self._listening = asyncio.Event()
        self.reconnects = 0
        self._conninfo = conninfo
        self._pool = pool
        self._hub = hub
        self._wake = asyncio.Event()

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    async def wait_listening(self) -> None:
        await self._listening.wait()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._listen_forever())
            tasks.create_task(self._deliver_forever())

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
                    # Whatever committed while we were not listening is in the table.
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
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.deliver_pending()
                failures = 0
            except psycopg.Error as error:
                failures += 1
                log.warning("reading the event log failed: %s", str(error).strip())
                self._wake.set()
                await asyncio.sleep(_backoff(failures))
            except Exception:
                # A bug must not end delivery for good: log it, and retry from the same place.
                failures += 1
                log.exception("delivering events failed")
                self._wake.set()
                await asyncio.sleep(_backoff(failures))

    async def deliver_pending(self) -> None:
        loop = asyncio.get_running_loop()
        woke_at = loop.time()
        published = False
        async with self._pool.connection() as conn:
            while True:
                page = await read_page(conn, self.position, PAGE_SIZE)
                self._hub.publish(page.broadcasts, woke_at)
                published = published or bool(page.broadcasts)
                self.position = page.end
                if page.complete:
                    break
        if published and self._published is not None:
            self._published(loop.time() - woke_at)


def _backoff(failures: int) -> float:
    ceiling: float = min(MAX_BACKOFF_SECONDS, 0.05 * 2**failures)
    return random.uniform(ceiling / 2, ceiling)
