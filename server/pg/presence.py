"""Presence in PostgreSQL (`presence_members`), the same for every process sharing the
database. A row per socket and channel; the triggers of db/triggers.sql announce users, not
sockets. This process keeps in memory only what it must write again: the sockets it holds
(in case its row in pgcast_processes was swept while it lived) and the timers that end the
grace of the sockets that left here.

A leave sets the row's `left_at`; the row is deleted `grace` seconds later, by a timer here
and, should this process be gone by then, by any process's sweep. A dead process's rows get
`left_at` from the sweep that finds it dead, and are deleted by a later sweep once the grace
is over (README, "Presence across processes", has the bound)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence

import psycopg
from psycopg_pool import PoolTimeout

from server import queries
from server.core.cursor import Snapshot
from server.core.presence import Member, Roster
from server.db import DbConnection, DbPool
from server.pg.processes import ProcessRegistry

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(channel, socket_id)"""


def _info_text(member: Member) -> str | None:
    return None if member.user_info is None else json.dumps(member.user_info, ensure_ascii=False)


class PgPresence:
    def __init__(self, pool: DbPool, registry: ProcessRegistry, grace_seconds: float) -> None:
        self._pool = pool
        self._registry = registry
        self._grace = grace_seconds
        self._joined: dict[Key, Member] = {}
        self._graces: dict[Key, asyncio.TimerHandle] = {}
        # Leaves the database did not take (it was away): written by the next sweep.
        self._unsaved_leaves: set[Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        registry.when_sweeping(self._sweep)
        registry.when_registered_again(self._write_again)

    async def join(self, channel: str, socket_id: str, member: Member) -> Roster:
        key = (channel, socket_id)
        grace = self._graces.pop(key, None)
        if grace is not None:
            grace.cancel()
        self._unsaved_leaves.discard(key)
        row = {
            "channel": channel,
            "socket_id": socket_id,
            "user_id": member.user_id,
            "user_info": _info_text(member),
            "process_id": self._registry.id,
        }
        async with self._pool.connection() as conn:
            try:
                await conn.execute(queries.JOIN_PRESENCE, row)
            except psycopg.errors.ForeignKeyViolation:
                # This process was taken for dead a moment ago: register again, then join.
                await self._registry.ensure_registered(conn)
                await conn.execute(queries.JOIN_PRESENCE, row)
            self._joined[key] = member
            return await _roster(conn, channel)

    async def leave(self, channel: str, socket_id: str) -> None:
        key = (channel, socket_id)
        if self._joined.pop(key, None) is None:
            return
        try:
            async with self._pool.connection() as conn:
                await conn.execute(
                    queries.LEAVE_PRESENCE, {"channels": [channel], "socket_ids": [socket_id]}
                )
        except (psycopg.Error, PoolTimeout) as error:
            log.warning("recording a presence leave failed: %s", str(error).strip())
            self._unsaved_leaves.add(key)
            return
        self._graces[key] = asyncio.get_running_loop().call_later(
            self._grace, self._spawn_expiry, key
        )

    async def roster(self, channel: str) -> Roster:
        async with self._pool.connection() as conn:
            return await _roster(conn, channel)

    async def users(self, channels: Sequence[str]) -> dict[str, list[str]]:
        users: dict[str, list[str]] = {}
        async with self._pool.connection() as conn:
            cursor = await conn.execute(queries.PRESENCE_USERS, {"channels": list(channels)})
            for channel, user_id in await cursor.fetchall():
                users.setdefault(channel, []).append(user_id)
        return users

    async def close(self) -> None:
        """Stop the timers and start the grace of every member still here: the other
        processes' sweeps end it (their members see member_removed unless the users come
        back, to any process, within the grace)."""
        for grace in self._graces.values():
            grace.cancel()
        self._graces.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._joined.clear()
        try:
            async with self._pool.connection() as conn:
                await conn.execute(queries.PROCESSES_LEFT, {"ids": [self._registry.id]})
        except (psycopg.Error, PoolTimeout) as error:
            # Once this process's row is gone, or its listener is, a sweep does it.
            log.warning("leaving presence channels failed: %s", str(error).strip())

    def _spawn_expiry(self, key: Key) -> None:
        self._graces.pop(key, None)
        task = asyncio.create_task(self._expire(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(self, key: Key) -> None:
        channel, socket_id = key
        try:
            async with self._pool.connection() as conn:
                await conn.execute(
                    queries.EXPIRE_LEFT_SOCKET,
                    {"channel": channel, "socket_id": socket_id, "grace_seconds": self._grace},
                )
        except (psycopg.Error, PoolTimeout) as error:
            log.warning("ending a presence grace failed (a sweep will): %s", str(error).strip())

    async def _sweep(self, conn: DbConnection, dead: list[str]) -> None:
        if dead:
            await conn.execute(queries.PROCESSES_LEFT, {"ids": dead})
        if self._unsaved_leaves:
            unsaved = sorted(self._unsaved_leaves)
            await conn.execute(
                queries.LEAVE_PRESENCE,
                {"channels": [c for c, _ in unsaved], "socket_ids": [s for _, s in unsaved]},
            )
            self._unsaved_leaves.difference_update(unsaved)
        await conn.execute(queries.EXPIRE_LEFT, {"grace_seconds": self._grace})

    async def _write_again(self) -> None:
        """This process's row had been swept, its members marked as leaving (or deleted, if
        that was longer ago than the grace): write back the sockets it still holds."""
        joined = sorted(self._joined.items())
        if not joined:
            return
        async with self._pool.connection() as conn:
            await conn.execute(
                queries.RESTORE_PRESENCE,
                {
                    "process_id": self._registry.id,
                    "channels": [channel for (channel, _), _ in joined],
                    "socket_ids": [socket_id for (_, socket_id), _ in joined],
                    "user_ids": [member.user_id for _, member in joined],
                    "user_infos": [_info_text(member) for _, member in joined],
                },
            )
        log.info("wrote back %d presence member socket(s)", len(joined))


async def _roster(conn: DbConnection, channel: str) -> Roster:
    cursor = await conn.execute(queries.ROSTER, {"channel": channel})
    rows = await cursor.fetchall()
    members = [
        Member(user_id, None if info is None else json.loads(info))
        for _, user_id, info in rows
        if user_id is not None
    ]
    return Roster(channel, members, Snapshot.parse(rows[0][0]))
