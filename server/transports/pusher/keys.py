"""Typed keys for what the Pusher transport keeps on the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from server.transports.pusher.registry import PusherSockets


@dataclass(frozen=True)
class Timing:
    activity_timeout: float = 30.0
    """Seconds of silence from a client before the server pings it (and what
    `connection_established` tells clients)."""
    pong_timeout: float = 30.0
    """Seconds a pinged client has to answer before it is closed with 4201."""
    replay_timeout: float = 120.0
    """Longest a resumed channel's replay may take before the socket is closed with 4100."""


PUSHER_SOCKETS = web.AppKey("pusher_sockets", PusherSockets)
PUSHER_TIMING = web.AppKey("pusher_timing", Timing)
