"""Who is asking: the session cookie, same-origin checks for browsers, and dev login."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp_session import get_session, new_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from server import queries
from server.config import Config
from server.errors import ApiError
from server.keys import CONFIG, POOL
from server.protocol import JsonObject

SESSION_COOKIE = "pgcast_session"
MAX_JSON_DEPTH_ERRORS = (RecursionError, ValueError)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    avatar_url: str | None
    email: str

    def public_json(self) -> JsonObject:
        """What other users may see: no e-mail."""
        return {"id": self.id, "name": self.name, "avatar_url": self.avatar_url}


def user_from_row(row: tuple[Any, ...]) -> User:
    return User(id=row[0], name=row[1], avatar_url=row[2], email=row[3])


def cookie_session_middleware(config: Config) -> Middleware:
    storage = EncryptedCookieStorage(
        config.session_key.value,
        cookie_name=SESSION_COOKIE,
        max_age=config.session_max_age,
        httponly=True,
        samesite="Lax",
        secure=config.secure_cookies,
    )
    return session_middleware(storage)


async def signed_in_user(request: web.Request) -> User | None:
    session = await get_session(request)
    user_id = session.get("user_id")
    if not isinstance(user_id, int):
        return None
    # Checked against the table on every request: a deleted user's cookie stops working.
    async with request.app[POOL].connection() as conn:
        cursor = await conn.execute(queries.USER_BY_ID, {"user_id": user_id})
        row = await cursor.fetchone()
    return None if row is None else user_from_row(row)


async def require_user(request: web.Request) -> User:
    user = await signed_in_user(request)
    if user is None:
        raise ApiError(401, "not_signed_in", "sign in first")
    return user


async def start_session(request: web.Request, user: User) -> None:
    # A fresh session on every sign-in, so a cookie planted before it is worth nothing.
    session = await new_session(request)
    session["user_id"] = user.id
    session["session_id"] = secrets.token_urlsafe(16)


def origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def is_same_origin(request: web.Request) -> bool:
    """Whether a browser sent this request from our own pages.

    `Origin` decides when present (browsers send it on every cross-site request and on
    same-site POSTs); otherwise `Sec-Fetch-Site`, then `Referer`. With none, it is refused.
    """
    expected = request.app[CONFIG].public_origin
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin == expected
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site == "same-origin"
    referer = request.headers.get("Referer")
    return referer is not None and origin_of(referer) == expected


def require_same_origin(request: web.Request) -> None:
    if not is_same_origin(request):
        raise ApiError(403, "cross_site_request", "this request did not come from this site")


async def read_json_object(request: web.Request) -> JsonObject:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    raw = await request.read()
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_json", "the body is not valid UTF-8") from None
    except MAX_JSON_DEPTH_ERRORS:
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_shape", "the body must be a JSON object")
    return body


def _required_text(body: JsonObject, field: str, max_length: int) -> str:
    value = body.get(field)
    if not isinstance(value, str):
        raise ApiError(400, "invalid_shape", f'"{field}" must be a string')
    value = value.strip()
    if not value or len(value) > max_length or "\x00" in value:
        raise ApiError(422, f"invalid_{field}", f'"{field}" must be 1 to {max_length} characters')
    return value


async def dev_login(request: web.Request) -> web.Response:
    if not request.app[CONFIG].dev_login:
        raise ApiError(404, "not_found", "dev login is off")
    require_same_origin(request)
    body = await read_json_object(request)
    email = _required_text(body, "email", 254)
    name = _required_text(body, "name", 100)
    if _EMAIL.match(email) is None:
        raise ApiError(422, "invalid_email", '"email" must be an e-mail address')
    async with request.app[POOL].connection() as conn:
        cursor = await conn.execute(queries.UPSERT_LOCAL_USER, {"email": email, "name": name})
        row = await cursor.fetchone()
    assert row is not None
    user = user_from_row(row)
    await start_session(request, user)
    return web.json_response({"user": user.public_json()})


async def logout(request: web.Request) -> web.Response:
    require_same_origin(request)
    session = await get_session(request)
    session.invalidate()
    raise web.HTTPSeeOther("/")


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/auth/dev-login", dev_login)
    app.router.add_post("/auth/logout", logout)
