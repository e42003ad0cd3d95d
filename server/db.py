"""Connections to PostgreSQL: typing, the pool (which knows whether its database answers),
and conninfo helpers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, TypeAlias

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from server import queries

DbConnection: TypeAlias = AsyncConnection[tuple[Any, ...]]

log = logging.getLogger(__name__)

HEALTH_APPLICATION_NAME = "pgcast-health"
POOL_TIMEOUT_SECONDS = 5.0
# While the database is known to be away, a request waits this long for a connection, not
# POOL_TIMEOUT_SECONDS: long enough to be served by a database that has just come back.
UNAVAILABLE_TIMEOUT_SECONDS = 0.5
# psycopg_pool retries a lost connection with exponential backoff until this much time has
# passed (its default is 5 minutes). Left long, the backoff outgrows an outage and the pool
# comes back tens of seconds after the database; past it, the slot is freed, and the pool
# grows anew, at once, when asked for a connection (the probe below asks).
RECONNECT_TIMEOUT_SECONDS = 2.0
PROBE_TIMEOUT_SECONDS = 2.0
# /readyz and /metrics share one probe result for this long, however many ask.
PROBE_CACHE_SECONDS = 1.0
RECOVERY_PROBE_INTERVAL_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    notify_queue_usage: float | None
    error: str | None
    at: float


class Pool(AsyncConnectionPool[DbConnection]):
    """The connection pool, and whether its database answers.

    Whether it answers is decided by a probe on a connection of its own, outside the pool, so
    health checks never wait for, or take, a connection that a request needs. One probe runs
    at a time; everyone who asks meanwhile shares its result. A probe runs when asked (by
    /readyz and /metrics), when a pooled connection fails its check, when the pool times out,
    when a connection comes back broken, and every RECOVERY_PROBE_INTERVAL_SECONDS while the
    database is away; the first probe that succeeds again refills the pool at once."""

    def __init__(
        self, conninfo: str, application_name: str, max_size: int, prepare: bool = True
    ) -> None:
        # Through a pooler in transaction mode (PgBouncer before 1.21, or without
        # max_prepared_statements) a statement psycopg prepared on one server connection is
        # missing, or already there, on the next: `prepare=False` never prepares any.
        connection_kwargs: dict[str, Any] = {} if prepare else {"prepare_threshold": None}
        self._connection_kwargs = connection_kwargs
        super().__init__(
            conninfo,
            min_size=1,
            max_size=max_size,
            # Autocommit: a single statement needs no BEGIN/COMMIT round trips; writes that
            # need a transaction open one explicitly with `conn.transaction()`.
            kwargs={
                "application_name": application_name,
                "autocommit": True,
                **connection_kwargs,
            },
            # A connection that died with a database restart is replaced, not handed out.
            check=self._check_or_suspect,
            timeout=POOL_TIMEOUT_SECONDS,
            reconnect_timeout=RECONNECT_TIMEOUT_SECONDS,
            open=False,
        )
        self._probe_conninfo = make_conninfo(
            conninfo,
            application_name=HEALTH_APPLICATION_NAME,
            connect_timeout=str(int(PROBE_TIMEOUT_SECONDS)),
        )
        self._probe_conn: DbConnection | None = None
        self._last_probe: ProbeResult | None = None
        self._probing: asyncio.Task[ProbeResult] | None = None
        self._recovering: asyncio.Task[None] | None = None
        self._unavailable = False

    @property
    def unavailable(self) -> bool:
        """The last probe failed and none has succeeded since."""
        return self._unavailable

    async def getconn(self, timeout: float | None = None) -> DbConnection:  # noqa: ASYNC109 (psycopg_pool's signature)
        if timeout is None and self._unavailable:
            timeout = UNAVAILABLE_TIMEOUT_SECONDS
        try:
            return await super().getconn(timeout)
        except PoolTimeout:
            self.suspect()
            raise

    async def putconn(self, conn: DbConnection) -> None:
        if conn.broken:  # it died under a request: perhaps with the database
            self.suspect()
        await super().putconn(conn)

    async def probe(self, max_age: float = PROBE_CACHE_SECONDS) -> ProbeResult:
        """Whether the database answers, at most `max_age` seconds old."""
        loop = asyncio.get_running_loop()
        last = self._last_probe
        if last is not None and loop.time() - last.at < max_age:
            return last
        if self._probing is None:
            self._probing = loop.create_task(self._run_probe())
            self._probing.add_done_callback(self._probe_done)
        # Shielded: a client that disconnects must not cancel the probe the others await.
        return await asyncio.shield(self._probing)

    def suspect(self) -> None:
        """Something failed on the database: find out whether it is away, without waiting."""
        if self._probing is None and not self.closed:
            self._probing = asyncio.get_running_loop().create_task(self._run_probe())
            self._probing.add_done_callback(self._probe_done)

    async def reconnect_failed(self) -> None:
        self.suspect()
        await super().reconnect_failed()

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (psycopg_pool's signature)
        for task in (self._recovering, self._probing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._probe_conn is not None:
            await self._probe_conn.close()
            self._probe_conn = None
        await super().close(timeout)

    async def _check_or_suspect(self, conn: DbConnection) -> None:
        try:
            await AsyncConnectionPool.check_connection(conn)
        except psycopg.Error:
            self.suspect()
            raise

    def _probe_done(self, task: asyncio.Task[ProbeResult]) -> None:
        self._probing = None

    async def _run_probe(self) -> ProbeResult:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                if self._probe_conn is None or self._probe_conn.closed:
                    self._probe_conn = await AsyncConnection.connect(
                        self._probe_conninfo, autocommit=True, **self._connection_kwargs
                    )
                cursor = await self._probe_conn.execute(queries.NOTIFY_QUEUE_USAGE)
                row = await cursor.fetchone()
        except (psycopg.Error, OSError, TimeoutError) as error:
            if self._probe_conn is not None:
                await self._probe_conn.close()
                self._probe_conn = None
            result = ProbeResult(False, None, type(error).__name__, loop.time())
        else:
            usage = float(row[0]) if row is not None else None
            result = ProbeResult(True, usage, None, loop.time())
        self._last_probe = result
        await self._note(result)
        return result

    async def _note(self, result: ProbeResult) -> None:
        if not result.ok and not self._unavailable:
            self._unavailable = True
            log.warning("database unavailable (%s); answering 503 until it is back", result.error)
            if self._recovering is None or self._recovering.done():
                self._recovering = asyncio.get_running_loop().create_task(self._recover())
        elif result.ok and self._unavailable:
            self._unavailable = False
            log.info("database is back")
            # Broken connections out, and a new one started at once, instead of waiting out
            # the pool's reconnection backoff.
            await self.check()

    async def _recover(self) -> None:
        while self._unavailable:
            await asyncio.sleep(RECOVERY_PROBE_INTERVAL_SECONDS)
            await self.probe(max_age=0)


DbPool: TypeAlias = Pool


def with_database(conninfo: str, dbname: str) -> str:
    return make_conninfo(conninfo, dbname=dbname)


def describe(conninfo: str) -> str:
    """Where a conninfo points, without its password, for log lines and errors."""
    params = conninfo_to_dict(conninfo)
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"{params.get('user') or ''}@{host}:{port}/{params.get('dbname') or ''}"


def create_pool(
    conninfo: str, application_name: str, max_size: int = 10, prepare: bool = True
) -> Pool:
    return Pool(conninfo, application_name, max_size, prepare)
