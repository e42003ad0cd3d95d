"""The listen rule as the core asks for it: `pgcast_may_listen` in the database decides."""

from __future__ import annotations

from collections.abc import Iterable

from server import queries
from server.db import DbPool


class DatabaseListenPolicy:
    def __init__(self, pool: DbPool) -> None:
        self._pool = pool

    async def forbidden(self, user_id: int, channels: Iterable[str]) -> list[str]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                queries.FORBIDDEN_CHANNELS, {"user_id": user_id, "channels": list(channels)}
            )
            return [row[0] for row in await cursor.fetchall()]
