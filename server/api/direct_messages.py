"""Private chat: `/api/direct-messages` and `/api/conversations`. Rows only: the database
broadcasts each one to its two people."""

from __future__ import annotations

import json

import psycopg
from aiohttp import web

from server import queries
from server.api.messages import (
    DEFAULT_PAGE,
    MAX_ID,
    MAX_PAGE,
    content_of,
    origin_socket,
    query_int,
    signed_in_writer,
)
from server.auth import read_json_object, require_user
from server.errors import ApiError
from server.keys import POOL
from server.protocol import JsonObject


def _user_id(body: JsonObject, field: str) -> int:
    value = body.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_ID:
        raise ApiError(400, "invalid_shape", f'"{field}" must be a user id.')
    return value


async def post_direct_message(request: web.Request) -> web.Response:
    principal = await signed_in_writer(request)
    socket_id = origin_socket(request)
    body = await read_json_object(request)
    recipient_id = _user_id(body, "recipient_id")
    content = content_of(request, body, '{"recipient_id": USER_ID, "content": "..."}')
    if recipient_id == principal.user.id:
        raise ApiError(422, "invalid_recipient", "You cannot write to yourself.")
    try:
        async with request.app[POOL].connection() as conn, conn.transaction():
            if socket_id is not None:
                await conn.execute(queries.SET_ORIGIN_SOCKET, {"socket_id": socket_id})
            cursor = await conn.execute(
                queries.INSERT_DIRECT_MESSAGE,
                {
                    "sender_id": principal.user.id,
                    "recipient_id": recipient_id,
                    "content": content,
                },
            )
            row = await cursor.fetchone()
    except psycopg.errors.ForeignKeyViolation:
        # The sender was deleted between signing in and writing.
        raise ApiError(401, "not_signed_in", "Your account no longer exists.") from None
    if row is None:
        raise ApiError(422, "invalid_recipient", "There is no such user to write to.")
    return web.json_response({"direct_message": json.loads(row[0])}, status=201)


async def list_direct_messages(request: web.Request) -> web.Response:
    principal = await require_user(request)
    other = query_int(request, "with", 1, MAX_ID)
    if other is None:
        raise ApiError(400, "invalid_with", "with must be the id of the other person.")
    before = query_int(request, "before", 1, MAX_ID)
    limit = query_int(request, "limit", 1, MAX_PAGE) or DEFAULT_PAGE
    async with request.app[POOL].connection() as conn:
        cursor = await conn.execute(
            queries.CONVERSATION_PAGE,
            {"me": principal.user.id, "other": other, "before": before, "limit": limit + 1},
        )
        rows = await cursor.fetchall()
    has_older = len(rows) > limit
    page = list(reversed(rows[:limit]))
    return web.json_response(
        {
            "direct_messages": [json.loads(text) for _, text in page],
            "next_before": page[0][0] if has_older else None,
        }
    )


async def list_conversations(request: web.Request) -> web.Response:
    principal = await require_user(request)
    async with request.app[POOL].connection() as conn:
        cursor = await conn.execute(queries.CONVERSATIONS, {"me": principal.user.id})
        rows = await cursor.fetchall()
    return web.json_response(
        {
            "conversations": [
                {
                    "user": json.loads(user),
                    "last_message": json.loads(last),
                    "unread_count": unread,
                }
                for user, last, unread in rows
                # A person deleted since has no user; their messages go with them.
                if user is not None
            ]
        }
    )


async def mark_conversation_read(request: web.Request) -> web.Response:
    principal = await signed_in_writer(request, rate_limited=False)
    body = await read_json_object(request)
    other = _user_id(body, "with")
    async with request.app[POOL].connection() as conn:
        cursor = await conn.execute(
            queries.MARK_CONVERSATION_READ, {"me": principal.user.id, "other": other}
        )
    return web.json_response({"marked_read": cursor.rowcount})


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/api/direct-messages", post_direct_message)
    app.router.add_get("/api/direct-messages", list_direct_messages)
    app.router.add_post("/api/direct-messages/read", mark_conversation_read)
    app.router.add_get("/api/conversations", list_conversations)
