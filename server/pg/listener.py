"""The one LISTEN connection of a process. It routes each NOTIFY channel to the handler
registered for it, and tells whoever asked each time LISTEN is (re)established, since
notifications sent while it was away are gone."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from server import queries
from server.config import ConfigError
from server.db import describe

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 5.0
# How long the start-up check waits for its own notification: it takes milliseconds when
# LISTEN works, and never comes when it does not.
LISTEN_CHECK_TIMEOUT_SECONDS = 5.0

NotifyHandler = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Backend:
    """The server process of the LISTEN connection, as pg_stat_activity names it: a process
    whose listener backend is gone has lost its connection, or died."""

    pid: int
    started_at: datetime


class Listener:
    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._routes: dict[str, NotifyHandler] = {}
        self._on_listening: list[Callable[[], None]] = []
        self._on_lost: list[Callable[[], None]] = []
        self._listening = asyncio.Event()
        self._backend: Backend | None = None
        self.reconnects = 0
        self.wakeups = 0
        """Times the socket was read because it had become readable."""
        self._held = False
        # The current connection's socket and what reads it; None while there is none.
        self._reading: tuple[int, Callable[[], bool]] | None = None

    def route(self, channel: str, handler: NotifyHandler) -> None:
        """Call `handler(payload)` for every notification on `channel`."""
        self._routes[channel] = handler

    def when_listening(self, callback: Callable[[], None]) -> None:
        """Call `callback` each time LISTEN is in place, the first time and after every
        reconnect: whatever it missed meanwhile must be caught up from the tables."""
        self._on_listening.append(callback)

    def when_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback` before each LISTEN connection is made, the first and every
        reconnect: notifications may have been missed from then until the next
        `when_listening` callback, even those that come with the replies to LISTEN."""
        self._on_lost.append(callback)

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    @property
    def backend(self) -> Backend | None:
        """The backend of the current LISTEN connection; None while there is none."""
        return self._backend if self.listening else None

    async def wait_listening(self) -> None:
        await self._listening.wait()

    def hold(self) -> None:
        """Stop reading notifications until `release`: they wait in the socket meanwhile.

        For a reader that will not act on them before a time it knows (the feed's batch
        window): reading each as it came would wake the process once per notification, and
        at hundreds a second those wake-ups were most of what a message cost.
        """
        if not self._held:
            self._held = True
            if self._reading is not None:
                asyncio.get_running_loop().remove_reader(self._reading[0])

    def release(self) -> None:
        """Route, at once, every notification that arrived while held; then read as they
        come again. A connection lost meanwhile is found here."""
        if self._held:
            self._held = False
            if self._reading is not None:
                fd, read = self._reading
                # Read before watching again: a connection found lost is closed by libpq,
                # and the event loop must not be handed its socket.
                if read():
                    asyncio.get_running_loop().add_reader(fd, self._read_on_wakeup, read)

    async def run(self) -> None:
        failures = 0
        while True:
            for callback in self._on_lost:
                self._call(callback, "losing LISTEN")
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo,
                    autocommit=True,
                    application_name=queries.LISTENER_APPLICATION_NAME,
                )
                async with conn:
                    # Notifications that come with the replies to LISTEN.
                    conn.add_notify_handler(lambda n: self._dispatch(n.channel, n.payload))
                    for channel in self._routes:
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    cursor = await conn.execute(queries.OWN_BACKEND)
                    row = await cursor.fetchone()
                    assert row is not None
                    self._backend = Backend(pid=row[0], started_at=row[1])
                    if failures:
                        log.info("listener reconnected after %d attempt(s)", failures)
                    failures = 0
                    self._listening.set()
                    for callback in self._on_listening:
                        self._call(callback, "catching up after LISTEN")
                    await self._receive(conn)
            except psycopg.Error as error:
                if self.listening:
                    self.reconnects += 1
                log.warning("listener connection lost: %s", str(error).strip() or type(error))
            finally:
                self._listening.clear()
            failures += 1
            await asyncio.sleep(backoff(failures))

    async def _receive(self, conn: psycopg.AsyncConnection[object]) -> None:
        """Route notifications as they arrive, until the connection fails.

        The socket stays registered with the event loop and each wake-up reads whatever
        has arrived, instead of `conn.notifies()`, which registers and unregisters it, and
        steps an async generator, for every notification: with one writer committing
        hundreds of transactions a second, that was a large share of pgcast's CPU per
        message (bench/profile.md).
        """
        loop = asyncio.get_running_loop()
        pgconn = conn.pgconn
        encoding = conn.info.encoding
        lost: asyncio.Future[None] = loop.create_future()

        def readable() -> bool:
            """Route what has arrived; False once the connection is found lost."""
            try:
                pgconn.consume_input()
                while (notification := pgconn.notifies()) is not None:
                    self._dispatch(
                        notification.relname.decode(encoding), notification.extra.decode(encoding)
                    )
            except psycopg.Error as error:
                if not lost.done():
                    lost.set_exception(error)
                return False
            return True

        fd = pgconn.socket
        self._reading = (fd, readable)
        if not self._held:
            loop.add_reader(fd, self._read_on_wakeup, readable)
        try:
            # Whatever libpq read along with the last reply is not on the socket any more.
            readable()
            await lost
        finally:
            self._reading = None
            loop.remove_reader(fd)

    def _read_on_wakeup(self, read: Callable[[], bool]) -> None:
        self.wakeups += 1
        read()

    def _dispatch(self, channel: str, payload: str) -> None:
        handler = self._routes.get(channel)
        if handler is not None:
            self._call(handler, channel, payload)

    @staticmethod
    def _call(handler: Callable[..., None], what: str, *args: str) -> None:
        # A handler that fails must not end the listener, or every process would stop
        # delivering on one bad payload.
        try:
            handler(*args)
        except Exception:
            log.exception("handling %s failed", what)


def backoff(failures: int) -> float:
    ceiling: float = min(MAX_BACKOFF_SECONDS, 0.05 * 2**failures)
    return random.uniform(ceiling / 2, ceiling)


class ListenConnectionError(ConfigError):
    """The listen URL cannot carry LISTEN: the message is one line naming the setting."""


async def check_listen_connection(conninfo: str, setting: str) -> None:
    """Refuse a listen URL that would LISTEN and silently receive nothing.

    On a hot standby LISTEN and NOTIFY do not work at all. Through a pooler in
    transaction mode (PgBouncer's `pool_mode = transaction`) LISTEN succeeds on whichever
    server connection the statement got, which then goes back to the pooler's pool, and
    its notifications never reach this client. So: LISTEN a channel of the check's own,
    notify it from a second connection, and wait for the notification. `setting` names the
    variable the URL came from, for the error.
    """
    where = f"{setting} ({describe(conninfo)})"
    channel = f"pgcast_listen_check_{secrets.token_hex(8)}"
    async with await psycopg.AsyncConnection.connect(
        conninfo, autocommit=True, application_name=queries.LISTEN_CHECK_APPLICATION_NAME
    ) as listening:
        cursor = await listening.execute(queries.IN_RECOVERY)
        row = await cursor.fetchone()
        if row is not None and row[0]:
            raise ListenConnectionError(
                f"{where} is a hot standby (pg_is_in_recovery() is true), where LISTEN and "
                f"NOTIFY do not work; point {setting} at the primary"
            )
        await listening.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        async with await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, application_name=queries.LISTEN_CHECK_APPLICATION_NAME
        ) as notifying:
            await notifying.execute(queries.NOTIFY_ONE, {"channel": channel, "payload": ""})
        async for _ in listening.notifies(timeout=LISTEN_CHECK_TIMEOUT_SECONDS, stop_after=1):
            return
    fix = (
        "set PGCAST_LISTEN_DATABASE_URL to a direct connection to PostgreSQL"
        if setting == "DATABASE_URL"
        else "point it at PostgreSQL itself or at a pool in session mode"
    )
    raise ListenConnectionError(
        f"LISTEN through {where} received no notification of its own within "
        f"{LISTEN_CHECK_TIMEOUT_SECONDS:.0f} s, as happens through a pooler in transaction "
        f"mode (PgBouncer pool_mode=transaction), which cannot carry LISTEN; {fix}"
    )
