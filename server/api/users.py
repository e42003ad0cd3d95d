"""`/api/users?query=TEXT`: people to write to, by name. Never their e-mails."""

from __future__ import annotations

import json

from aiohttp import web

from server import queries
from server.auth import require_user
from server.errors import ApiError
from server.keys import POOL

MAX_RESULTS = 20
MAX_QUERY_CHARS = 100


def like_pattern(text: str) -> str:
    """`%text%` with LIKE's own wildcards in `text` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_users(request: web.Request) -> web.Response:
    principal = await require_user(request)
    text = request.query.get("query", "").strip()
    if len(text) > MAX_QUERY_CHARS or "\x00" in text:
        raise ApiError(400, "invalid_query", f"query must be at most {MAX_QUERY_CHARS} characters.")
    async with request.app[POOL].connection() as conn:
        cursor = await conn.execute(
            queries.SEARCH_USERS,
            {"me": principal.user.id, "pattern": like_pattern(text), "limit": MAX_RESULTS},
        )
        rows = await cursor.fetchall()
    return web.json_response({"users": [json.loads(user) for (user,) in rows]})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/users", search_users)
