"""The registry of pgcast processes sharing a database (`pgcast_processes`).

Each process registers a row at start, renews its `seen_at` on a heartbeat (on a connection
of its own, outside the pool), records the
backend of its LISTEN connection every time that connection is (re)established, and deletes
its row on a graceful shutdown. On every heartbeat it also sweeps: a process whose listener
backend is gone from pg_stat_activity (killed: seen at the next sweep) or whose heartbeat is
older than the stale threshold (a lost machine) is dead, and its row is deleted, after the
sweepers registered here (presence) have dealt with what it held. Any process's sweep does
it; row locks taken with SKIP LOCKED keep concurrent sweeps from doing it twice. A sweep is a
few statements, whatever the number of processes' members.

A process whose own row was swept while it lived (it was paused, or cut off from the
database) registers again under the same id, and tells whoever asked, so that what it still
holds is written again."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from server import queries
from server.db import DbConnection, DbPool
from server.pg.listener import Listener

log = logging.getLogger(__name__)

# Called inside the sweep's transaction with the ids of the processes found dead (maybe
# none), before their rows are deleted.
Sweeper = Callable[[DbConnection, list[str]], Awaitable[None]]
Registered = Callable[[], Awaitable[None]]


class ProcessRegistry:
    def __init__(
        self,
        conninfo: str,
        pool: DbPool,
        listener: Listener,
        *,
        port: int | None,
        heartbeat_seconds: float,
        stale_seconds: float,
    ) -> None:
        self._conninfo = conninfo
        self._pool = pool
        # The heartbeat has a connection of its own: a pool busy with requests must not make
        # a live process miss its heartbeats and be taken for dead.
        self._conn: DbConnection | None = None
        self._listener = listener
        self._id = str(uuid.uuid4())
        self._host = socket.gethostname()
        self._port = port or None
        self._heartbeat = heartbeat_seconds
        self._stale = stale_seconds
        self._sweepers: list[Sweeper] = []
        self._registered_again: list[Registered] = []
        self._registering = asyncio.Lock()
        self._recordings: set[asyncio.Task[None]] = set()
        self._closed = False
        self._owed_callbacks = False
        listener.when_listening(self._listener_changed)

    @property
    def id(self) -> str:
        """This process's id (a uuid), the same for its whole life."""
        return self._id

    def when_sweeping(self, sweeper: Sweeper) -> None:
        self._sweepers.append(sweeper)

    def when_registered_again(self, callback: Registered) -> None:
        """Call `callback` after this process's row had been removed and was written again:
        rows that referenced it are gone (or marked gone) and must be written again."""
        self._registered_again.append(callback)

    async def register(self) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(queries.REGISTER_PROCESS, self._row())
        log.info("registered as process %s", self._id)

    async def deregister(self) -> None:
        self._closed = True
        for task in self._recordings:
            task.cancel()
        await asyncio.gather(*self._recordings, return_exceptions=True)
        await self._disconnect()
        try:
            async with self._pool.connection() as conn:
                await conn.execute(queries.DELETE_PROCESSES, {"ids": [self._id]})
        except psycopg.Error as error:
            # The other processes' sweeps remove it once its listener backend is gone.
            log.warning("could not deregister process %s: %s", self._id, str(error).strip())

    async def run(self) -> None:
        """Heartbeat and sweep, every heartbeat_seconds from one start to the next: the bound
        on removing dead processes counts on that rhythm."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            try:
                await self.tick()
            except psycopg.Error as error:
                log.warning("process heartbeat failed: %s", str(error).strip())
                await self._disconnect()
            except Exception:
                log.exception("process heartbeat failed")
            next_tick = max(next_tick + self._heartbeat, loop.time())
            await asyncio.sleep(next_tick - loop.time())

    async def _connection(self) -> DbConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                application_name=queries.HEARTBEAT_APPLICATION_NAME,
                connect_timeout=max(1, round(self._stale)),
            )
        return self._conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def tick(self) -> None:
        conn = await self._connection()
        cursor = await conn.execute(queries.HEARTBEAT, {"id": self._id})
        if await cursor.fetchone() is None:
            await self.ensure_registered(conn)
        elif self._owed_callbacks:
            await self._tell_registered_again()
        async with conn.transaction():
            cursor = await conn.execute(
                queries.DEAD_PROCESSES, {"id": self._id, "stale_seconds": self._stale}
            )
            dead = [str(row[0]) for row in await cursor.fetchall()]
            for sweeper in self._sweepers:
                await sweeper(conn, dead)
            if dead:
                await conn.execute(queries.DELETE_PROCESSES, {"ids": dead})
        for process_id in dead:
            log.info("process %s is gone; removed what it held", process_id)

    async def ensure_registered(self, conn: DbConnection) -> None:
        """Register again if this process's row is gone (it was taken for dead), and tell
        whoever asked (`when_registered_again`)."""
        async with self._registering:
            cursor = await conn.execute(queries.HEARTBEAT, {"id": self._id})
            if await cursor.fetchone() is not None:
                return
            await conn.execute(queries.REGISTER_PROCESS, self._row())
        log.warning("process %s was taken for dead; registered again", self._id)
        self._owed_callbacks = True
        await self._tell_registered_again()

    async def _tell_registered_again(self) -> None:
        # Until every callback has succeeded once, each heartbeat tries again: what they
        # write back would otherwise be missing for as long as this process lives.
        try:
            for callback in self._registered_again:
                await callback()
        except psycopg.Error as error:
            log.warning("writing back after registering again failed: %s", str(error).strip())
        else:
            self._owed_callbacks = False

    def _listener_changed(self) -> None:
        if self._closed:
            return
        task = asyncio.create_task(self._record_listener())
        self._recordings.add(task)
        task.add_done_callback(self._recordings.discard)

    async def _record_listener(self) -> None:
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(queries.RECORD_LISTENER, self._row())
                if cursor.rowcount == 0:
                    await self.ensure_registered(conn)
        except psycopg.Error as error:
            # The next heartbeat registers again if the row went meanwhile; until the
            # listener is recorded, only the stale threshold can take this process for dead.
            log.warning("recording the listener failed: %s", str(error).strip())

    def _row(self) -> dict[str, Any]:
        backend = self._listener.backend
        return {
            "id": self._id,
            "host": self._host,
            "pid": os.getpid(),
            "port": self._port,
            "listener_pid": None if backend is None else backend.pid,
            "listener_started_at": None if backend is None else backend.started_at,
        }
