"""Typed keys for the long-lived resources kept on the aiohttp application."""

from __future__ import annotations

import workos
from aiohttp import web

from server.config import Config
from server.core.channels import ListenPolicy
from server.core.hub import Hub
from server.core.presence import PresenceStore
from server.db import DbPool
from server.metrics import Metrics
from server.pg.listener import Listener
from server.pg.processes import ProcessRegistry
from server.pg.sockets import SocketRegistry
from server.ratelimit import PostLimiter
from server.tokens import AccessTokenVerifier

CONFIG = web.AppKey("config", Config)
POOL = web.AppKey("pool", DbPool)
DATABASE_ID = web.AppKey("database_id", str)
HUB = web.AppKey("hub", Hub)
LISTENER = web.AppKey("listener", Listener)
POLICY = web.AppKey("listen_policy", ListenPolicy)
# This process's row in pgcast_processes; `app[PROCESS].id` is its id (a uuid) for its life.
PROCESS = web.AppKey("process", ProcessRegistry)
# Who is on presence channels, on every process (server/pg/presence.py).
PRESENCE = web.AppKey("presence", PresenceStore)
# Open native sockets, for shutdown. A plain set each handler leaves when its socket ends:
# a weak one costs a weak reference and a callback per socket.
SOCKETS = web.AppKey("sockets", set[web.WebSocketResponse])
# Optional: how often /ws pings a client (server/ws.py HEARTBEAT_SECONDS unless set; tests
# shorten it).
SOCKET_HEARTBEAT_SECONDS = web.AppKey("socket_heartbeat_seconds", float)
METRICS = web.AppKey("metrics", Metrics)
POST_LIMITER = web.AppKey("post_limiter", PostLimiter)
# Every process's open sockets (pgcast_sockets): the socket limits, Pusher's channel counts.
SOCKET_REGISTRY = web.AppKey("socket_registry", SocketRegistry)
# Present only when WorkOS is configured.
WORKOS = web.AppKey("workos", workos.AsyncWorkOSClient)
TOKENS = web.AppKey("tokens", AccessTokenVerifier)
