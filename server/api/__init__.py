"""REST handlers. They write rows and read them; they never publish (the database does)."""

from __future__ import annotations

from aiohttp import web

from server.api import direct_messages, messages, notifications, users


def setup_routes(app: web.Application) -> None:
    messages.setup_routes(app)
    direct_messages.setup_routes(app)
    notifications.setup_routes(app)
    users.setup_routes(app)
