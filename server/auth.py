"""Who is asking: session cookies (browsers) or bearer tokens (scripts and apps), CSRF
checks for browsers, revocable sessions, and dev login."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg
from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp_session import get_session, new_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from server import queries
from server.config import LOOPBACK_HOSTS, Config
from server.errors import ApiError
from server.keys import CONFIG, POOL, TOKENS
from server.protocol import JsonObject
from server.text import NotJson, NotText, parse_json, text_problem
from server.tokens import InvalidToken

SESSION_COOKIE = "pgcast_session"
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


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in caller and how they proved it."""

    user: User
    session_id: str | None
    """The cookie session; None for a bearer token (no cookie, so no CSRF exposure)."""
    workos_session_id: str | None = None
    session_seconds_left: float | None = None
    """How long the cookie session had left when it was checked (the database's clock)."""


def user_from_row(row: tuple[Any, ...]) -> User:
    return User(id=row[0], name=row[1], avatar_url=row[2], email=row[3])


class _SessionCookieStorage(EncryptedCookieStorage):
    def load_cookie(self, request: web.Request) -> str | None:
        cookie = super().load_cookie(request)
        # A Fernet token is ASCII. Anything else (invalid UTF-8 arrives as lone surrogates)
        # is no session at all, as a cookie that fails to decrypt is.
        return cookie if cookie is None or cookie.isascii() else None


def cookie_session_middleware(config: Config) -> Middleware:
    storage = _SessionCookieStorage(
        config.session_key.value,
        cookie_name=SESSION_COOKIE,
        max_age=config.session_max_age,
        httponly=True,
        samesite="Lax",
        secure=config.secure_cookies,
    )
    return session_middleware(storage)


async def authenticate(request: web.Request) -> Principal | None:
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        return await _bearer_principal(request, authorization)
    session = await get_session(request)
    session_id = session.get("session_id")
    if not isinstance(session_id, str):
        return None
    # Checked against the table on every request: logout, expiry and user deletion take
    # effect at once even though the cookie itself cannot be recalled.
    async with request.app[POOL].connection() as conn:
        cursor = await conn.execute(queries.SESSION_USER, {"session_id": session_id})
        row = await cursor.fetchone()
    if row is None:
        return None
    return Principal(
        user_from_row(row), session_id, workos_session_id=row[4], session_seconds_left=row[5]
    )


async def _bearer_principal(request: web.Request, authorization: str) -> Principal:
    scheme, _, token = authorization.partition(" ")
    verifier = request.app.get(TOKENS)
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "invalid_token", "Authorization must be 'Bearer <access token>'")
    if verifier is None:
        raise ApiError(401, "invalid_token", "bearer tokens need WorkOS to be configured")
    try:
        workos_id = await verifier.subject(token.strip())
    except InvalidToken as error:
        raise ApiError(401, "invalid_token", f"access token refused: {error}") from None
    async with request.app[POOL].connection() as conn:
        cursor = await conn.execute(queries.USER_BY_WORKOS_ID, {"workos_id": workos_id})
        row = await cursor.fetchone()
    if row is None:
        raise ApiError(401, "unknown_user", "sign in to pgcast in a browser once first")
    return Principal(user_from_row(row), None)


async def require_user(request: web.Request) -> Principal:
    principal = await authenticate(request)
    if principal is None:
        raise ApiError(401, "not_signed_in", "Sign in first.")
    return principal


async def start_session(
    request: web.Request, user: User, workos_session_id: str | None = None
) -> None:
    # A fresh session on every sign-in, so a cookie planted before it is worth nothing.
    session_id = secrets.token_urlsafe(24)
    async with request.app[POOL].connection() as conn:
        await conn.execute(
            queries.CREATE_SESSION,
            {
                "session_id": session_id,
                "user_id": user.id,
                "workos_session_id": workos_session_id,
                "max_age": request.app[CONFIG].session_max_age,
            },
        )
    session = await new_session(request)
    session["session_id"] = session_id


async def end_session(request: web.Request) -> str | None:
    """Revoke this browser's session; return its WorkOS session id, if it had one."""
    principal = await authenticate(request)
    session = await get_session(request)
    session_id = session.get("session_id")
    session.invalidate()
    if isinstance(session_id, str):
        try:
            async with request.app[POOL].connection() as conn:
                await conn.execute(queries.REVOKE_SESSION, {"session_id": session_id})
        except psycopg.Error:
            raise ApiError(503, "database_unavailable", "Could not sign out; try again.") from None
    return None if principal is None else principal.workos_session_id


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_key(url: str, *, bare: bool) -> tuple[str, str, int] | None:
    """Scheme, host and port, as browsers compare origins (default ports filled in).

    `bare`: the URL must be an origin and nothing more, as an `Origin` header is."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not host or scheme not in _DEFAULT_PORTS or "@" in parts.netloc:
        return None
    if bare and (parts.path or parts.query or parts.fragment):
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


def _is_our_origin(config: Config, url: str, *, bare: bool) -> bool:
    ours, theirs = _origin_key(config.public_origin, bare=True), _origin_key(url, bare=bare)
    if ours is None or theirs is None:
        return False
    if ours == theirs:
        return True
    # In dev mode the public origin is loopback (config makes sure), and a browser opened on
    # http://localhost:8080 instead of 127.0.0.1 is the same person at the same server.
    return (
        config.dev_login
        and ours[0::2] == theirs[0::2]
        and ours[1] in LOOPBACK_HOSTS
        and theirs[1] in LOOPBACK_HOSTS
    )


def is_same_origin(request: web.Request) -> bool:
    """Whether a browser sent this request from our own pages.

    `Origin` decides when present (browsers send it on every cross-site request and on
    same-site POSTs); otherwise `Sec-Fetch-Site`, then `Referer`. With none, it is refused.
    """
    config = request.app[CONFIG]
    origin = request.headers.get("Origin")
    if origin is not None:
        return _is_our_origin(config, origin, bare=True)
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site == "same-origin"
    referer = request.headers.get("Referer")
    return referer is not None and _is_our_origin(config, referer, bare=False)


def require_same_origin(request: web.Request) -> None:
    if not is_same_origin(request):
        expected = request.app[CONFIG].public_origin
        raise ApiError(
            403,
            "cross_site_request",
            f"This request did not come from this site; pgcast expects pages from {expected} "
            "(PGCAST_PUBLIC_URL).",
        )


async def read_json_object(request: web.Request) -> JsonObject:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    try:
        body = parse_json(await request.read())
    except NotJson as error:
        raise ApiError(400, "malformed_json", str(error)) from None
    except NotText as error:
        raise ApiError(422, "invalid_text", str(error)) from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_shape", "The body must be a JSON object.")
    return body


def _required_text(body: JsonObject, field: str, max_length: int) -> str:
    value = body.get(field)
    if not isinstance(value, str):
        raise ApiError(400, "invalid_shape", f'"{field}" must be a string.')
    value = value.strip()
    if not value or len(value) > max_length:
        raise ApiError(422, f"invalid_{field}", f'"{field}" must be 1 to {max_length} characters.')
    problem = text_problem(value)
    if problem is not None:
        raise ApiError(422, f"invalid_{field}", f'"{field}" {problem}.')
    return value


async def dev_login(request: web.Request) -> web.Response:
    if not request.app[CONFIG].dev_login:
        raise ApiError(404, "not_found", "Dev login is off.")
    require_same_origin(request)
    body = await read_json_object(request)
    email = _required_text(body, "email", 254)
    name = _required_text(body, "name", 100)
    if _EMAIL.match(email) is None:
        raise ApiError(422, "invalid_email", '"email" must be an e-mail address.')
    async with request.app[POOL].connection() as conn:
        cursor = await conn.execute(queries.UPSERT_LOCAL_USER, {"email": email, "name": name})
        row = await cursor.fetchone()
    assert row is not None
    user = user_from_row(row)
    await start_session(request, user)
    return web.json_response({"user": user.public_json()})


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/auth/dev-login", dev_login)
