"""`/api/notifications`: the signed-in user's own, and marking them read (each marked row is
broadcast as notification-updated, so every tab's unread count follows)."""

from __future__ import annotations

import json
import uuid

from aiohttp import web

from server import queries
from server.api.messages import DEFAULT_PAGE, MAX_PAGE, query_int, signed_in_writer
from server.auth import require_user
from server.errors import ApiError
from server.keys import POOL


def _notification_id(raw: str | None, name: str) -> str | None:
    if raw is None:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise ApiError(400, f"invalid_{name}", f"{name} must be a notification id.") from None


async def list_notifications(request: web.Request) -> web.Response:
    principal = await require_user(request)
    before = _notification_id(request.query.get("before"), "before")
    limit = query_int(request, "limit", 1, MAX_PAGE) or DEFAULT_PAGE
    async with request.app[POOL].connection() as conn:
        cursor = await conn.execute(
            queries.NOTIFICATIONS_PAGE,
            {"me": principal.user.id, "before": before, "limit": limit + 1},
        )
        rows = await cursor.fetchall()
    # With no notifications, the one row is there only to carry the count.
    listed = [(notification_id, text) for _, notification_id, text in rows if text is not None]
    page = listed[:limit]
    return web.json_response(
        {
            "notifications": [json.loads(text) for _, text in page],
            "next_before": page[-1][0] if len(listed) > limit else None,
            "unread_count": rows[0][0],
        }
    )


async def mark_notification_read(request: web.Request) -> web.Response:
    principal = await signed_in_writer(request, rate_limited=False)
    notification_id = _notification_id(request.match_info["id"], "id")
    async with request.app[POOL].connection() as conn:
        cursor = await conn.execute(
            queries.MARK_NOTIFICATION_READ, {"me": principal.user.id, "id": notification_id}
        )
        row = await cursor.fetchone()
    if row is None:
        # Someone else's is as unknown to you as one that never existed.
        raise ApiError(404, "not_found", "You have no such notification.")
    return web.json_response({"notification": json.loads(row[0])})


async def mark_all_notifications_read(request: web.Request) -> web.Response:
    principal = await signed_in_writer(request, rate_limited=False)
    async with request.app[POOL].connection() as conn:
        cursor = await conn.execute(queries.MARK_ALL_NOTIFICATIONS_READ, {"me": principal.user.id})
    return web.json_response({"marked_read": cursor.rowcount})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/notifications", list_notifications)
    app.router.add_post("/api/notifications/read-all", mark_all_notifications_read)
    app.router.add_post("/api/notifications/{id}/read", mark_notification_read)
