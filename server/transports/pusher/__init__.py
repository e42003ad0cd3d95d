"""The Pusher Channels protocol (Laravel Echo, pusher-js): `GET /app/{key}` (handler.py,
codec.py) and the `/broadcasting/auth` routes (auth.py).

What the rest of the transport offers the HTTP API beside it:
- auth.py: `channel_auth`, `user_auth` and their constant-time checks (Pusher's signatures);
  `is_socket_id` for a `socket_id` parameter.
- channels.py: `stored_channel(name)`, the pgcast channel a publish to a Pusher channel
  writes to (`#server-to-user-{id}` is `private-user.{id}`); `kind_of(name)`.
- keys.py: `PUSHER_SOCKETS` (`close_user(user_id, code, reason)` closes the sockets signed
  in as that user, e.g. with codec.UNAUTHORIZED for terminate_connections). Presence members
  are server.keys.PRESENCE, shared with the native protocol and every process.
"""

from __future__ import annotations

from aiohttp import web

from server.transports.pusher import auth, handler


def setup_routes(app: web.Application) -> None:
    handler.setup_routes(app)
    auth.setup_routes(app)
