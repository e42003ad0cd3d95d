"""Rate limits: posts per user per minute (moving window), open sockets per user and per IP.

Limits are per process: with `--workers N` a client may get up to N times the figures.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from server.errors import ApiError


class PostLimiter:
    def __init__(self, per_minute: int) -> None:
        self._item = RateLimitItemPerMinute(per_minute) if per_minute else None
        self._storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)

    async def check(self, user_id: int) -> None:
        if self._item is None:
            return
        key = str(user_id)
        if await self._limiter.hit(self._item, key):
            return
        stats = await self._limiter.get_window_stats(self._item, key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise ApiError(
            429,
            "rate_limited",
            f"Too many messages; try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )

    async def close(self) -> None:
        # The storage expires old hits in a task of its own; it must not outlive the app.
        timer = self._storage.timer
        if timer is not None and not timer.done():
            timer.cancel()
            with contextlib.suppress(BaseException):
                await timer


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


@contextlib.asynccontextmanager
async def post_limiter(per_minute: int) -> AsyncIterator[PostLimiter]:
    limiter = PostLimiter(per_minute)
    try:
        yield limiter
    finally:
        await limiter.close()
