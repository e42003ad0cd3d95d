"""The Pusher Channels protocol (Laravel Echo, pusher-js): `GET /app/{key}` and the
`/broadcasting/auth` routes."""

from __future__ import annotations

from aiohttp import web

from server.transports.pusher import auth, handler


def setup_routes(app: web.Application) -> None:
    handler.setup_routes(app)
    auth.setup_routes(app)
