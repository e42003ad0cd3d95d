"""Client events (`client-…`, Echo's whisper): from one socket to the other subscribers of
a private or presence channel, on every process, never stored.

A process sends one with `pg_notify('pgcast_client_events', payload)` and every process,
the sender's included, LISTENs there and publishes it to its hub as an ephemeral event,
which skips the sending socket. NOTIFY refuses payloads of 8000 bytes or more, so a client
event whose payload would be that big is refused with an error frame instead.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable

from server import queries
from server.core.hub import Hub
from server.db import DbPool
from server.protocol import JsonObject, to_json
from server.transports.pusher.codec import ClientEvent

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 7999
PER_SECOND = 10


class TooLarge(ValueError):
    pass


def payload(channel: str, name: str, data: JsonObject, socket_id: str, user_id: str | None) -> str:
    text = to_json(
        {
            "channel": channel,
            "event": name,
            "data": data,
            "socket_id": socket_id,
            "user_id": user_id,
        }
    )
    if len(text.encode()) > MAX_PAYLOAD_BYTES:
        raise TooLarge(f"client events are limited to {MAX_PAYLOAD_BYTES + 1} bytes in all")
    return text


def parse(text: str) -> ClientEvent:
    """The event a payload carries; ValueError if it is not one `payload` made."""
    body = json.loads(text)
    if not isinstance(body, dict):
        raise ValueError("not an object")
    channel, name, data = body.get("channel"), body.get("event"), body.get("data")
    socket_id, user_id = body.get("socket_id"), body.get("user_id")
    if not (isinstance(channel, str) and isinstance(name, str) and isinstance(socket_id, str)):
        raise ValueError("channel, event and socket_id must be strings")
    if not isinstance(data, dict) or not (user_id is None or isinstance(user_id, str)):
        raise ValueError("data must be an object and user_id a string")
    return ClientEvent(channel, name, to_json(data), socket_id, user_id)


def router(hub: Hub) -> Callable[[str], None]:
    """The listener's handler for `pgcast_client_events`."""

    def publish(text: str) -> None:
        try:
            event = parse(text)
        except ValueError:
            log.warning("ignoring a malformed client event notification")
            return
        hub.publish([event])

    return publish


async def send(pool: DbPool, text: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(queries.NOTIFY_CLIENT_EVENT, {"payload": text})


class RateLimit:
    """At most PER_SECOND client events in any second, per socket."""

    def __init__(self, per_second: int = PER_SECOND) -> None:
        self._per_second = per_second
        self._times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        times = self._times
        while times and times[0] <= now - 1.0:
            times.popleft()
        if len(times) >= self._per_second:
            return False
        times.append(now)
        return True
