"""Channel authorization for Pusher clients: the signatures Pusher's reference defines, and
`POST /broadcasting/auth` and `/broadcasting/user-auth` for pgcast's own signed-in users.

A signature is `key:HMAC-SHA256-hex(secret, text)`, where the text is `socket_id:channel_name`,
`socket_id:channel_name:channel_data` for a presence channel, or `socket_id::user::user_data`
for a user signing in. It is checked over the raw strings received, never over a re-encoding
of them, and compared in constant time."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping

from aiohttp import web

from server.auth import Principal, read_json_object, require_same_origin, require_user
from server.core.channels import is_channel_name
from server.errors import ApiError
from server.keys import CONFIG, POLICY
from server.protocol import JsonObject, to_json
from server.transports.pusher.channels import Kind, kind_of
from server.transports.pusher.signature import sign, signatures_match

_SOCKET_ID = re.compile(r"[0-9]{1,20}\.[0-9]{1,20}")


def new_socket_id() -> str:
    """A socket id as Pusher writes one ("123.456"): two random numbers, so ids made by
    different processes do not collide."""
    return f"{secrets.randbelow(10**10)}.{secrets.randbelow(10**10)}"


def is_socket_id(text: str) -> bool:
    return _SOCKET_ID.fullmatch(text) is not None


def channel_auth(
    key: str, secret: str, socket_id: str, channel: str, channel_data: str | None = None
) -> str:
    text = (
        f"{socket_id}:{channel}"
        if channel_data is None
        else f"{socket_id}:{channel}:{channel_data}"
    )
    return f"{key}:{sign(secret, text)}"


def user_auth(key: str, secret: str, socket_id: str, user_data: str) -> str:
    return f"{key}:{sign(secret, f'{socket_id}::user::{user_data}')}"


def _matches(expected: str, given: object) -> bool:
    return isinstance(given, str) and signatures_match(expected, given)


def valid_channel_auth(
    key: str,
    secret: str,
    socket_id: str,
    channel: str,
    channel_data: str | None,
    auth: object,
) -> bool:
    return _matches(channel_auth(key, secret, socket_id, channel, channel_data), auth)


def valid_user_auth(key: str, secret: str, socket_id: str, user_data: str, auth: object) -> bool:
    return _matches(user_auth(key, secret, socket_id, user_data), auth)


async def _form(request: web.Request) -> Mapping[str, object]:
    """The fields pusher-js posts (form-encoded); a JSON object is taken too."""
    if request.content_type == "application/json":
        return await read_json_object(request)
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise ApiError(
            415, "unsupported_media_type", "Send the fields form-encoded, as pusher-js does."
        )
    return await request.post()


def _socket_id(fields: Mapping[str, object]) -> str:
    socket_id = fields.get("socket_id")
    if not isinstance(socket_id, str) or not is_socket_id(socket_id):
        raise ApiError(400, "invalid_socket_id", '"socket_id" must be a socket id like "123.456".')
    return socket_id


async def _caller(request: web.Request) -> Principal:
    # These answers are credentials: a cookie-carrying request must come from our own site.
    principal = await require_user(request)
    if principal.session_id is not None:
        require_same_origin(request)
    return principal


def _user_info(principal: Principal) -> JsonObject:
    user = principal.user
    return {"name": user.name, "avatar_url": user.avatar_url}


async def broadcasting_auth(request: web.Request) -> web.Response:
    """A signed authorization for one private or presence channel, when the listen rule
    lets the caller in."""
    principal = await _caller(request)
    fields = await _form(request)
    socket_id = _socket_id(fields)
    channel = fields.get("channel_name")
    if not isinstance(channel, str) or not is_channel_name(channel):
        raise ApiError(
            400,
            "invalid_channel",
            '"channel_name" must be 1 to 164 characters of a-z A-Z 0-9 - _ = @ , . ;',
        )
    kind = kind_of(channel)
    if kind is Kind.PUBLIC:
        raise ApiError(400, "public_channel", "Public channels need no authorization.")
    if kind is Kind.ENCRYPTED:
        raise ApiError(
            403,
            "encrypted_channel",
            "pgcast holds no encryption keys: the backend that encrypts authorizes these.",
        )
    if await request.app[POLICY].forbidden(principal.user.id, [channel]):
        raise ApiError(403, "not_allowed", f"You may not listen to {channel}.")
    settings = request.app[CONFIG].pusher
    if kind is Kind.PRESENCE:
        channel_data = to_json(
            {"user_id": str(principal.user.id), "user_info": _user_info(principal)}
        )
        auth = channel_auth(settings.key, settings.secret.value, socket_id, channel, channel_data)
        return web.json_response({"auth": auth, "channel_data": channel_data})
    auth = channel_auth(settings.key, settings.secret.value, socket_id, channel)
    return web.json_response({"auth": auth})


async def broadcasting_user_auth(request: web.Request) -> web.Response:
    """A signed `pusher:signin` for the caller, as pgcast user {id}."""
    principal = await _caller(request)
    socket_id = _socket_id(await _form(request))
    settings = request.app[CONFIG].pusher
    user_data = to_json({"id": str(principal.user.id), "user_info": _user_info(principal)})
    auth = user_auth(settings.key, settings.secret.value, socket_id, user_data)
    return web.json_response({"auth": auth, "user_data": user_data})


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/broadcasting/auth", broadcasting_auth)
    app.router.add_post("/broadcasting/user-auth", broadcasting_user_auth)
