"""Event retention: broadcasts stay replayable for PGCAST_EVENT_RETENTION, then go. The same
hourly run drops expired sessions and the post counts of users who stopped posting."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import timedelta

import psycopg

from server import queries
from server.db import DbPool

log = logging.getLogger(__name__)

PRUNE_EVERY_SECONDS = 3600.0


async def prune_once(pool: DbPool, retention: timedelta) -> None:
    async with pool.connection() as conn:
        await conn.execute(queries.PRUNE_EVENTS, {"retention": retention})
        await conn.execute(queries.PRUNE_SESSIONS)
        await conn.execute(queries.PRUNE_POST_RATES)


async def prune_forever(pool: DbPool, retention: timedelta) -> None:
    # Spread over the hour, so the processes of a deployment do not all prune at once
    # (and a process that lives a few seconds, like a test's, never does).
    await asyncio.sleep(random.uniform(60, PRUNE_EVERY_SECONDS))
    while True:
        try:
            await prune_once(pool, retention)
        except psycopg.Error as error:
            log.warning("pruning old events failed: %s", str(error).strip())
        await asyncio.sleep(PRUNE_EVERY_SECONDS)
