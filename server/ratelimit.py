"""Posts per user per minute (a moving window), counted in PostgreSQL (pgcast_post_rates),
so the limit holds across every pgcast process sharing the database. Open sockets per user
and per address are counted in server/pg/sockets.py."""

from __future__ import annotations

import psycopg

from server import queries
from server.db import DbPool
from server.errors import ApiError


class PostLimiter:
    """At most `per_minute` posts per user in any 60 s, by the database's clock; 0 turns it
    off. A refused post counts for nothing."""

    def __init__(self, pool: DbPool, per_minute: int) -> None:
        self._pool = pool
        self._per_minute = per_minute

    async def check(self, user_id: int) -> None:
        if not self._per_minute:
            return
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(
                    queries.TAKE_POST_SLOT, {"user_id": user_id, "per_minute": self._per_minute}
                )
                row = await cursor.fetchone()
        except psycopg.errors.ForeignKeyViolation:
            raise ApiError(401, "not_signed_in", "Your account no longer exists.") from None
        assert row is not None
        allowed, seconds_left = row
        if allowed:
            return
        retry_after = max(1, int(seconds_left))
        raise ApiError(
            429,
            "rate_limited",
            f"Too many messages; try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )
