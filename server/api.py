"""REST handlers. They write rows and read them; they never publish (the database does)."""

from __future__ import annotations

import re

import psycopg
from aiohttp import web

from server import queries
from server.auth import read_json_object, require_same_origin, require_user
from server.errors import ApiError
from server.keys import CONFIG, POOL, POST_LIMITER
from server.protocol import message_json
from server.text import MESSAGE_CONTROLS_ALLOWED, text_problem

DEFAULT_PAGE = 50
MAX_PAGE = 200
_SOCKET_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


async def get_config(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    return web.json_response(
        {
            "auth": {"workos": config.workos_enabled, "dev_login": config.dev_login},
            "max_message_chars": config.max_message_chars,
        }
    )


async def get_me(request: web.Request) -> web.Response:
    principal = await require_user(request)
    return web.json_response({"user": principal.user.public_json()})


class ContentError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def validated_content(content: str, max_chars: int) -> str:
    """The rules for a message written through pgcast (the API and `pgcast send`)."""
    if not content.strip():
        raise ContentError("content_empty", "The message is empty.")
    if len(content) > max_chars:
        raise ContentError(
            "content_too_long", f"The message is longer than {max_chars} characters."
        )
    problem = text_problem(content, allowed_controls=MESSAGE_CONTROLS_ALLOWED)
    if problem is not None:
        raise ContentError("content_invalid", f"The message {problem}.")
    return content


async def post_message(request: web.Request) -> web.Response:
    principal = await require_user(request)
    if principal.session_id is not None:
        require_same_origin(request)
    await request.app[POST_LIMITER].check(principal.user.id)
    socket_id = request.headers.get("X-Socket-ID")
    if socket_id is not None and _SOCKET_ID.match(socket_id) is None:
        raise ApiError(400, "invalid_socket_id", "X-Socket-ID is not a socket id.")
    body = await read_json_object(request)
    raw_content = body.get("content")
    if not isinstance(raw_content, str):
        raise ApiError(400, "invalid_shape", 'The body must be {"content": "..."}.')
    try:
        content = validated_content(raw_content, request.app[CONFIG].max_message_chars)
    except ContentError as error:
        raise ApiError(422, error.code, str(error)) from None
    try:
        async with request.app[POOL].connection() as conn, conn.transaction():
            if socket_id is not None:
                await conn.execute(queries.SET_ORIGIN_SOCKET, {"socket_id": socket_id})
            cursor = await conn.execute(
                queries.INSERT_MESSAGE, {"user_id": principal.user.id, "content": content}
            )
            row = await cursor.fetchone()
    except psycopg.errors.ForeignKeyViolation:
        raise ApiError(401, "not_signed_in", "Your account no longer exists.") from None
    assert row is not None
    return web.json_response(message_json(*row), status=201)


def _query_int(request: web.Request, name: str, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        message = f"{name} must be a whole number from {low} to {high}."
        raise ApiError(400, f"invalid_{name}", message)
    return int(raw)


async def list_messages(request: web.Request) -> web.Response:
    await require_user(request)
    before = _query_int(request, "before", 1, 2**63 - 1)
    limit = _query_int(request, "limit", 1, MAX_PAGE) or DEFAULT_PAGE
    async with request.app[POOL].connection() as conn:
        cursor = await conn.execute(queries.LIST_MESSAGES, {"before": before, "limit": limit + 1})
        rows = await cursor.fetchall()
    has_older = len(rows) > limit
    page = list(reversed(rows[:limit]))
    return web.json_response(
        {
            "messages": [message_json(*row) for row in page],
            "next_before": page[0][0] if has_older else None,
        }
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/config", get_config)
    app.router.add_get("/api/me", get_me)
    app.router.add_post("/api/messages", post_message)
    app.router.add_get("/api/messages", list_messages)
