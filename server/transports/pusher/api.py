"""Pusher's HTTP API, so a backend keeps publishing with its Pusher SDK (Laravel's `pusher`
broadcast driver, pusher-http-python, ...) while the database stays the only publisher.

    POST /apps/{app_id}/events                    one event to 1-100 channels
    POST /apps/{app_id}/batch_events              1-10 events, each to one channel
    GET  /apps/{app_id}/channels                  occupied channels [filter_by_prefix, info]
    GET  /apps/{app_id}/channels/{channel}        one channel's state [info]
    GET  /apps/{app_id}/channels/{channel}/users  a presence channel's users
    POST /apps/{app_id}/users/{user_id}/terminate_connections
    POST /users/{user_id}/terminate_connections   (the path pusher-http-python 3.3 sends)

Every request is signed as Pusher signs (signature.py) and checked over exactly what it
carries; errors are pgcast's JSON error body with Pusher's status codes (401 for anything
about the signature, 404 for another app id, 413 for data over 10 KB, 400 for the rest).

A publish is one INSERT into `broadcasts` (a row per event and channel, in the order given),
so it is ordered, resumable and in `broadcast_audit` like any other broadcast, and reaches
every process through the event log. `socket_id` becomes the rows' `origin_socket_id`, so
that socket (of either protocol) does not get the event back: Laravel's `toOthers()`.

How Pusher's `data` is stored. Pusher's `data` is a string; `broadcasts.data` is a JSON
object. The JSON text of an object is stored as that object (equal JSON, not necessarily the
same bytes: jsonb reorders keys and drops whitespace). Any other string, and an object that
is itself exactly `{"pusher_data": <string>}`, is stored wrapped as `{"pusher_data": data}`.
So a transport that speaks Pusher gives the string back with `data.pusher_data_from_stored()`
(from the stored JSON text, as an Event carries it): a stored object that is exactly
`{"pusher_data": <string>}` is sent as that string, any other object as its JSON text.

`#server-to-user-{id}` (`send_to_user`) is written to `private-user.{id}`, the channel that
carries it (channels.stored_channel): that user's own channel, which their `/ws` sockets may
join and a Pusher socket signed in as them receives.

terminate_connections announces `terminate:{user_id}` on `pgcast_revocations`, so every
process closes that pgcast user's sockets (server/pg/revocations.py).

Subscriptions are counted over every process's sockets, from their rows in pgcast_sockets
(server/pg/sockets.py). A presence channel's users are read from PostgreSQL
(`presence_online`): the members of every process, joined over either protocol, each user
once, users in their grace (left less than PGCAST_PRESENCE_GRACE ago) included, as the member
lists clients get include them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import psycopg
from aiohttp import web

from server import queries
from server.core.channels import PRESENCE_PREFIX, is_channel_name, is_event_name
from server.core.presence import MEMBER_EVENTS
from server.errors import ApiError
from server.keys import CONFIG, POOL, PRESENCE
from server.pg.sockets import occupied_channels, subscription_counts
from server.protocol import JsonObject
from server.transports.pusher.channels import (
    ENCRYPTED_PREFIX,
    SERVER_TO_USER_PREFIX,
    stored_channel,
)
from server.transports.pusher.data import refuse_constant, stored_data
from server.transports.pusher.signature import SignatureError, verify_request

MAX_DATA_BYTES: Final = 10 * 1024
MAX_CHANNELS: Final = 100
MAX_BATCH_EVENTS: Final = 10
# Room for a full batch whose data is written with \uXXXX escapes, and nothing like a flood.
MAX_BODY_BYTES: Final = 1024 * 1024

INFO_ATTRIBUTES: Final = ("user_count", "subscription_count")
# What pgcast_revocations carries to close a user's sockets on every process.
TERMINATE_PREFIX: Final = "terminate:"

# Pusher's own events: a backend may not make clients see one of these.
_RESERVED_EVENT_PREFIXES = ("pusher:", "pusher_internal:")
# Pusher's rule for user ids (pusher-http-python's validate_user_id).
_USER_ID = re.compile(r"[-a-zA-Z0-9_=@,.;]{1,200}")
# A socket id of either protocol: Pusher's "123.456" or a native one (as X-Socket-ID takes).
_SOCKET_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


# --- requests ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signed:
    """A request whose signature checked out: its signed query parameters and its body."""

    params: dict[str, str]
    body: bytes


async def signed_request(request: web.Request) -> Signed:
    app = request.app[CONFIG].pusher
    app_id = request.match_info.get("app_id")
    if app_id is not None and app_id != app.app_id:
        raise ApiError(404, "unknown_app", f"There is no app {app_id[:40]!r} here.")
    body = await _read_body(request)
    # The request target exactly as received: aiohttp's own views of it are decoded.
    raw_path, _, raw_query = request.raw_path.partition("?")
    try:
        params = verify_request(
            request.method,
            [raw_path, request.path],
            raw_query,
            body,
            key=app.key,
            secret=app.secret.value,
            now=time.time(),
        )
    except SignatureError as error:
        raise ApiError(401, error.code, error.message) from None
    # Of a parameter given twice, the last counts (it was signed all the same).
    return Signed({name.lower(): value for name, value in params}, body)


async def _read_body(request: web.Request) -> bytes:
    # Read here rather than with request.read(): the app's client_max_size is sized for
    # messages, and a batch of ten 10 KB events written with escapes can be larger.
    too_large = ApiError(413, "body_too_large", f"The request body is over {MAX_BODY_BYTES} bytes.")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(body: bytes) -> JsonObject:
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "The body is not a JSON object.") from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_json", "The body is not a JSON object.")
    return value


# --- publishing ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Publication:
    """One event as the API received it, checked: Pusher channel names, its event name,
    the JSON text to store, the socket to leave out, and the info asked for."""

    channels: tuple[str, ...]
    name: str
    data: str
    socket_id: str | None
    info: tuple[str, ...]


def _publication(fields: JsonObject, channels: Sequence[str]) -> Publication:
    name = fields.get("name")
    if not isinstance(name, str):
        raise ApiError(400, "invalid_event", "name must be a string: the event name.")
    if not is_event_name(name) or not _encodable(name):
        raise ApiError(
            400, "invalid_event_name", "An event name is 1 to 200 characters, none a control."
        )
    if name.startswith(_RESERVED_EVENT_PREFIXES):
        raise ApiError(400, "invalid_event_name", "Event names starting pusher: are Pusher's own.")
    for channel in channels:
        _check_channel(channel)
    if name in MEMBER_EVENTS and any(c.startswith(PRESENCE_PREFIX) for c in channels):
        # Clients would take it for a member joining or leaving, and the member lists of
        # every socket would drift from the database's.
        raise ApiError(
            400,
            "invalid_event_name",
            f"{name} on a presence- channel is pgcast's own announcement of a member change.",
        )
    if len(channels) > 1 and any(c.startswith(ENCRYPTED_PREFIX) for c in channels):
        raise ApiError(
            400,
            "invalid_channel",
            "An event for a private-encrypted- channel must name that channel alone.",
        )
    data = fields.get("data")
    if not isinstance(data, str):
        raise ApiError(400, "invalid_data", "data must be a string (JSON text, typically).")
    if not _encodable(data):
        raise ApiError(
            400,
            "invalid_data",
            "data holds a NUL character or an unpaired surrogate, which PostgreSQL cannot store.",
        )
    if len(data.encode()) > MAX_DATA_BYTES:
        raise ApiError(
            413,
            "data_too_large",
            f"data is over {MAX_DATA_BYTES} bytes ({MAX_DATA_BYTES // 1024} KB).",
        )
    socket_id = fields.get("socket_id")
    if socket_id is not None and (
        not isinstance(socket_id, str) or _SOCKET_ID.fullmatch(socket_id) is None
    ):
        raise ApiError(400, "invalid_socket_id", "socket_id is not a socket id.")
    info = _info(fields.get("info"))
    return Publication(tuple(channels), name, stored_data(data), socket_id or None, info)


def _check_channel(channel: str) -> None:
    stored = stored_channel(channel)
    if not is_channel_name(stored) or (
        channel.startswith(SERVER_TO_USER_PREFIX)
        and not channel.removeprefix(SERVER_TO_USER_PREFIX)
    ):
        shown = channel if len(channel) <= 40 else channel[:40] + "..."
        raise ApiError(
            400,
            "invalid_channel",
            f"{shown!r} is not a channel name: 1 to 164 characters of a-z A-Z 0-9 - _ = @ , . ;",
        )


def _encodable(text: str) -> bool:
    # A lone surrogate (from a \ud800 escape) decodes from JSON but is not text PostgreSQL
    # can hold.
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _info(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, str):
        raise ApiError(400, "invalid_info", "info must be a comma-separated list of attributes.")
    attributes = tuple(dict.fromkeys(a for a in raw.split(",") if a))
    for attribute in attributes:
        if attribute not in INFO_ATTRIBUTES:
            shown = attribute[:40]
            raise ApiError(
                400,
                "invalid_info",
                f"{shown!r} is not an attribute pgcast reports: user_count, subscription_count.",
            )
    return attributes


def _event_channels(body: JsonObject) -> list[str]:
    channels = body.get("channels")
    channel = body.get("channel")
    if channels is not None and channel is not None:
        raise ApiError(400, "invalid_event", "Give channels or channel, not both.")
    if channel is not None:
        channels = [channel]
    if not isinstance(channels, list) or not channels:
        raise ApiError(400, "invalid_event", "channels must list 1 to 100 channel names.")
    if not all(isinstance(c, str) for c in channels):
        raise ApiError(400, "invalid_channel", "channels must list channel names (strings).")
    if len(channels) > MAX_CHANNELS:
        raise ApiError(
            400, "too_many_channels", f"An event goes to at most {MAX_CHANNELS} channels."
        )
    return list(dict.fromkeys(channels))


async def _insert(request: web.Request, publications: Iterable[Publication]) -> None:
    rows = [
        (stored_channel(channel), p.name, p.data, p.socket_id)
        for p in publications
        for channel in p.channels
    ]
    try:
        async with request.app[POOL].connection() as conn:
            await conn.execute(
                queries.INSERT_PUSHER_EVENTS,
                {
                    "channels": [row[0] for row in rows],
                    "events": [row[1] for row in rows],
                    "data": [row[2] for row in rows],
                    "origins": [row[3] for row in rows],
                },
            )
    except (psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded) as error:
        # JSON that Python parses but PostgreSQL refuses: a \u0000 escape, an unpaired
        # surrogate, a number past numeric's range, nesting too deep.
        detail = error.diag.message_primary or "refused by PostgreSQL"
        raise ApiError(400, "invalid_data", f"data cannot be stored as JSON: {detail}") from None
    except psycopg.errors.CheckViolation:
        raise ApiError(
            400, "invalid_event", "The database refused a channel or event name."
        ) from None


async def trigger_event(request: web.Request) -> web.Response:
    signed = await signed_request(request)
    body = _json_object(signed.body)
    publication = _publication(body, _event_channels(body))
    await _insert(request, [publication])
    if not publication.info:
        return web.json_response({})
    state = _State(request.app)
    await state.count_subscriptions(publication.channels)
    return web.json_response(
        {
            "channels": {
                c: await state.trigger_info(c, publication.info) for c in publication.channels
            }
        }
    )


async def trigger_batch(request: web.Request) -> web.Response:
    signed = await signed_request(request)
    batch = _json_object(signed.body).get("batch")
    if not isinstance(batch, list) or not batch:
        raise ApiError(400, "invalid_event", 'The body must be {"batch": [event, ...]}.')
    if len(batch) > MAX_BATCH_EVENTS:
        raise ApiError(400, "too_many_events", f"A batch holds at most {MAX_BATCH_EVENTS} events.")
    publications = []
    for event in batch:
        if not isinstance(event, dict):
            raise ApiError(400, "invalid_event", "Each event of a batch is a JSON object.")
        channel = event.get("channel")
        if not isinstance(channel, str):
            raise ApiError(400, "invalid_channel", "Each event of a batch names its channel.")
        publications.append(_publication(event, [channel]))
    await _insert(request, publications)
    if not any(p.info for p in publications):
        return web.json_response({})
    state = _State(request.app)
    await state.count_subscriptions(p.channels[0] for p in publications)
    return web.json_response(
        {"batch": [await state.trigger_info(p.channels[0], p.info) for p in publications]}
    )


# --- channel state -------------------------------------------------------------------------


class _State:
    """Channel state for one request, read from PostgreSQL, so every process's: the
    subscriptions from pgcast_sockets, a presence channel's users from its members."""

    def __init__(self, app: web.Application) -> None:
        self._pool = app[POOL]
        self._presence = app[PRESENCE]
        self._subscriptions: dict[str, int] = {}
        self._users: dict[str, list[str]] = {}

    async def count_subscriptions(self, channels: Iterable[str]) -> None:
        """Count the subscriptions of all of `channels` in one query, for what follows."""
        stored = {stored_channel(channel) for channel in channels} - self._subscriptions.keys()
        if stored:
            counts = await subscription_counts(self._pool, stored)
            self._subscriptions.update({channel: counts.get(channel, 0) for channel in stored})

    async def subscriptions(self, channel: str) -> int:
        """Sockets subscribed to `channel`, of either protocol, on every process."""
        await self.count_subscriptions([channel])
        return self._subscriptions[stored_channel(channel)]

    async def channels(self, prefix: str) -> dict[str, int]:
        return await occupied_channels(self._pool, prefix)

    async def read_users(self, channels: Iterable[str]) -> None:
        """Read the users of every presence channel among `channels` in one query."""
        wanted = [c for c in channels if c.startswith(PRESENCE_PREFIX) and c not in self._users]
        if wanted:
            found = await self._presence.users(wanted)
            for channel in wanted:
                self._users[channel] = found.get(channel, [])

    async def users(self, channel: str) -> list[str]:
        """A presence channel's users, each once, whichever protocol and process they
        joined through."""
        await self.read_users([channel])
        return sorted(self._users[channel], key=lambda u: (not u.isdigit(), len(u), u))

    async def trigger_info(self, channel: str, info: Sequence[str]) -> JsonObject:
        """The attributes asked for that apply to `channel`, as a trigger reports them:
        user_count of a channel that is not presence is left out."""
        attributes: JsonObject = {}
        if "user_count" in info and channel.startswith(PRESENCE_PREFIX):
            attributes["user_count"] = len(await self.users(channel))
        if "subscription_count" in info:
            attributes["subscription_count"] = await self.subscriptions(channel)
        return attributes


def _path_channel(request: web.Request) -> str:
    channel = request.match_info["channel_name"]
    _check_channel(channel)
    return channel


async def list_channels(request: web.Request) -> web.Response:
    signed = await signed_request(request)
    prefix = signed.params.get("filter_by_prefix", "")
    info = _info(signed.params.get("info"))
    if "user_count" in info and not prefix.startswith(PRESENCE_PREFIX):
        raise ApiError(
            400,
            "invalid_info",
            "user_count is only for presence channels: add filter_by_prefix=presence-.",
        )
    state = _State(request.app)
    occupied = await state.channels(prefix)
    if "user_count" in info:
        await state.read_users(occupied)
    channels: JsonObject = {}
    for channel, count in occupied.items():
        attributes: JsonObject = {}
        if "user_count" in info:
            attributes["user_count"] = len(await state.users(channel))
        if "subscription_count" in info:
            attributes["subscription_count"] = count
        channels[channel] = attributes
    return web.json_response({"channels": channels})


async def channel_state(request: web.Request) -> web.Response:
    signed = await signed_request(request)
    channel = _path_channel(request)
    info = _info(signed.params.get("info"))
    if "user_count" in info and not channel.startswith(PRESENCE_PREFIX):
        raise ApiError(400, "invalid_info", "user_count is only for presence channels.")
    state = _State(request.app)
    body: JsonObject = {"occupied": await state.subscriptions(channel) > 0}
    body.update(await state.trigger_info(channel, info))
    return web.json_response(body)


async def presence_users(request: web.Request) -> web.Response:
    await signed_request(request)
    channel = _path_channel(request)
    if not channel.startswith(PRESENCE_PREFIX):
        raise ApiError(
            400, "not_a_presence_channel", "Users are listed for presence- channels only."
        )
    users = await _State(request.app).users(channel)
    return web.json_response({"users": [{"id": user_id} for user_id in users]})


async def terminate_connections(request: web.Request) -> web.Response:
    signed = await signed_request(request)
    if signed.body.strip():
        _json_object(signed.body)
    user_id = request.match_info["user_id"]
    if _USER_ID.fullmatch(user_id) is None:
        raise ApiError(
            400,
            "invalid_user_id",
            "A user id is 1 to 200 characters of a-z A-Z 0-9 - _ = @ , . ;",
        )
    # Through the database, so every process closes that user's sockets, not only this one.
    async with request.app[POOL].connection() as conn:
        await conn.execute(
            queries.ANNOUNCE_REVOCATION,
            {"channel": queries.REVOCATIONS_CHANNEL, "payload": TERMINATE_PREFIX + user_id},
        )
    return web.json_response({})


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/apps/{app_id}/events", trigger_event)
    app.router.add_post("/apps/{app_id}/batch_events", trigger_batch)
    app.router.add_get("/apps/{app_id}/channels", list_channels)
    app.router.add_get("/apps/{app_id}/channels/{channel_name}", channel_state)
    app.router.add_get("/apps/{app_id}/channels/{channel_name}/users", presence_users)
    app.router.add_post(
        "/apps/{app_id}/users/{user_id}/terminate_connections", terminate_connections
    )
    app.router.add_post("/users/{user_id}/terminate_connections", terminate_connections)
