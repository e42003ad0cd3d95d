"""Signing in with WorkOS AuthKit, and signing out."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import jwt
import workos
from aiohttp import web
from aiohttp_session import get_session

from server import queries
from server.auth import end_session, require_same_origin, start_session, user_from_row
from server.errors import ApiError
from server.keys import CONFIG, POOL, WORKOS

log = logging.getLogger(__name__)

LOGIN_STATE_SECONDS = 600


def safe_return_path(raw: str | None) -> str:
    """A local path to go back to after sign-in; anything that could leave the site is '/'."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in raw):
        return "/"
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc:
        return "/"
    return raw


def display_name(first_name: str | None, last_name: str | None, email: str) -> str:
    name = " ".join(part for part in (first_name, last_name) if part)
    return name or email.split("@")[0]


def workos_user_params(user: Any) -> dict[str, Any]:
    return {
        "workos_id": user.id,
        "email": user.email,
        "name": display_name(user.first_name, user.last_name, user.email),
        "avatar_url": user.profile_picture_url,
        "workos_updated_at": user.updated_at,
    }


def _client(request: web.Request) -> workos.AsyncWorkOSClient:
    client = request.app.get(WORKOS)
    if client is None:
        raise ApiError(404, "not_found", "WorkOS sign-in is not configured.")
    return client


def _redirect_uri(request: web.Request) -> str:
    return request.app[CONFIG].public_url + "/auth/callback"


async def login(request: web.Request) -> web.Response:
    client = _client(request)
    state = secrets.token_urlsafe(32)
    # The state lives in the encrypted, SameSite=Lax session cookie: it survives the
    # top-level redirect back from WorkOS and binds the callback to this browser.
    session = await get_session(request)
    session["login_state"] = {
        "state": state,
        "return_to": safe_return_path(request.query.get("return_to")),
        "issued_at": int(time.time()),
    }
    url = client.user_management.get_authorization_url(
        provider="authkit", redirect_uri=_redirect_uri(request), state=state
    )
    raise web.HTTPFound(url)


async def callback(request: web.Request) -> web.Response:
    client = _client(request)
    session = await get_session(request)
    pending = session.pop("login_state", None)  # single use, whatever happens next
    state = request.query.get("state")
    code = request.query.get("code")
    if request.query.get("error"):
        raise ApiError(400, "login_refused", "Sign-in was cancelled or refused by WorkOS.")
    if not isinstance(pending, dict) or not state or not code:
        raise ApiError(400, "invalid_login_state", "This sign-in link is not valid; start again.")
    expected = pending.get("state")
    issued_at = pending.get("issued_at")
    if (
        not isinstance(expected, str)
        # compare_digest raises TypeError on non-ASCII text; ours is ASCII, so theirs must be.
        or not state.isascii()
        or not secrets.compare_digest(expected, state)
        or not isinstance(issued_at, int)
        or time.time() - issued_at > LOGIN_STATE_SECONDS
    ):
        raise ApiError(400, "invalid_login_state", "This sign-in link is not valid; start again.")

    try:
        result = await client.user_management.authenticate_with_code(code=code)
    except workos.BadRequestError:
        raise ApiError(
            400, "invalid_login_code", "The sign-in code was refused; start again."
        ) from None
    except (workos.WorkOSError, workos.TransportError) as error:
        log.warning("WorkOS authentication failed: %s", type(error).__name__)
        raise ApiError(502, "workos_unavailable", "WorkOS did not answer; try again.") from None

    async with request.app[POOL].connection() as conn:
        cursor = await conn.execute(queries.UPSERT_WORKOS_USER, workos_user_params(result.user))
        row = await cursor.fetchone()
    assert row is not None
    await start_session(request, user_from_row(row), _session_id_of(result.access_token))
    raise web.HTTPFound(safe_return_path(pending.get("return_to")))


def _session_id_of(access_token: str) -> str | None:
    # The token came straight from WorkOS over its API, so reading its claims unverified
    # is safe here; it only names the session to end at logout.
    try:
        claims = jwt.decode(access_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    sid = claims.get("sid")
    return sid if isinstance(sid, str) else None


async def logout(request: web.Request) -> web.Response:
    require_same_origin(request)
    workos_session_id = await end_session(request)
    client = request.app.get(WORKOS)
    if workos_session_id is not None and client is not None:
        raise web.HTTPSeeOther(
            client.user_management.get_logout_url(
                session_id=workos_session_id, return_to=request.app[CONFIG].public_url + "/"
            )
        )
    raise web.HTTPSeeOther("/")


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/auth/login", login)
    app.router.add_get("/auth/callback", callback)
    app.router.add_post("/auth/logout", logout)
