"""Rate limits: posts per user per minute (moving window), open sockets per user and per IP.

Posts are counted in PostgreSQL (pgcast_post_rates), so the limit holds across every pgcast
process sharing the database.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

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


class SocketLimiter:
    """Counts open sockets per user and per client address."""

    def __init__(self, per_user: int, per_address: int) -> None:
        self._per_user = per_user
        self._per_address = per_address
        self._by_user: Counter[int] = Counter()
        self._by_address: Counter[str] = Counter()

    @contextlib.contextmanager
    def hold(self, user_id: int, address: str) -> Iterator[None]:
        if self._per_user and self._by_user[user_id] >= self._per_user:
            raise ApiError(
                429, "too_many_sockets", f"At most {self._per_user} open sockets per user."
            )
        if self._per_address and self._by_address[address] >= self._per_address:
            raise ApiError(
                429, "too_many_sockets", f"At most {self._per_address} open sockets per address."
            )
        self._by_user[user_id] += 1
        self._by_address[address] += 1
        try:
            yield
        finally:
            self._by_user[user_id] -= 1
            self._by_address[address] -= 1
            if not self._by_user[user_id]:
                del self._by_user[user_id]
            if not self._by_address[address]:
                del self._by_address[address]
