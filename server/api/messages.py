"""`/api/messages` and what every REST write shares: the signed-in writer, the rules for text
written through pgcast, and paging."""

from __future__ import annotations

import re

import psycopg
from aiohttp import web

from server import queries
from server.auth import (
    Principal,
    authenticate,
    read_json_object,
    require_same_origin,
    require_user,
)
from server.errors import ApiError
from server.keys import CONFIG, POOL, POST_LIMITER
from server.protocol import JsonObject, message_json
from server.text import MESSAGE_CONTROLS_ALLOWED, text_problem

DEFAULT_PAGE = 50
MAX_PAGE = 200
MAX_ID = 2**63 - 1
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


async def get_session(request: web.Request) -> web.Response:
    """Who is signed in, if anyone: a signed-out browser is not an error (no 401 to log)."""
    principal = await authenticate(request)
    return web.json_response({"user": None if principal is None else principal.user.public_json()})


async def signed_in_writer(request: web.Request, *, rate_limited: bool = True) -> Principal:
    """The caller of a request that writes: signed in, from our own site when it came with
    the session cookie, and within the post rate limit."""
    principal = await require_user(request)
    if principal.session_id is not None:
        require_same_origin(request)
    if rate_limited:
        await request.app[POST_LIMITER].check(principal.user.id)
    return principal


def origin_socket(request: web.Request) -> str | None:
    """`X-Socket-ID`: the socket (of either protocol) that must not get its own write back."""
    socket_id = request.headers.get("X-Socket-ID")
    if socket_id is not None and _SOCKET_ID.match(socket_id) is None:
        raise ApiError(400, "invalid_socket_id", "X-Socket-ID is not a socket id.")
    return socket_id


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


def content_of(request: web.Request, body: JsonObject, shape: str) -> str:
    raw_content = body.get("content")
    if not isinstance(raw_content, str):
        raise ApiError(400, "invalid_shape", f"The body must be {shape}.")
    try:
        return validated_content(raw_content, request.app[CONFIG].max_message_chars)
    except ContentError as error:
        raise ApiError(422, error.code, str(error)) from None


async def post_message(request: web.Request) -> web.Response:
    principal = await signed_in_writer(request)
    socket_id = origin_socket(request)
    body = await read_json_object(request)
    content = content_of(request, body, '{"content": "..."}')
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


def query_int(request: web.Request, name: str, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        message = f"{name} must be a whole number from {low} to {high}."
        raise ApiError(400, f"invalid_{name}", message)
    return int(raw)


async def list_messages(request: web.Request) -> web.Response:
    await require_user(request)
    before = query_int(request, "before", 1, MAX_ID)
    limit = query_int(request, "limit", 1, MAX_PAGE) or DEFAULT_PAGE
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
    app.router.add_get("/api/session", get_session)
    app.router.add_post("/api/messages", post_message)
    app.router.add_get("/api/messages", list_messages)
