"""The application factory: wires resources (in dependency order) and routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import workos
from aiohttp import web

from server import api, auth, health, login, queries, webhooks
from server.background import running
from server.config import Config, ConfigError
from server.core.hub import Hub
from server.db import create_pool, describe
from server.errors import error_middleware, request_limits_middleware, server_handler_args
from server.headers import security_headers_hook
from server.keys import (
    CONFIG,
    DATABASE_ID,
    HUB,
    LISTENER,
    METRICS,
    POLICY,
    POOL,
    POST_LIMITER,
    PRESENCE,
    PROCESS,
    SOCKET_REGISTRY,
    SOCKETS,
    TOKENS,
    WORKOS,
)
from server.metrics import create_metrics
from server.pg.eventlog import current_position, database_identity, notify_key
from server.pg.feed import EventFeed
from server.pg.listener import Listener, check_listen_connection
from server.pg.policy import DatabaseListenPolicy
from server.pg.presence import PgPresence
from server.pg.processes import ProcessRegistry
from server.pg.revocations import Revocations
from server.pg.sockets import SocketRegistry
from server.ratelimit import PostLimiter
from server.resources import UI_DIST
from server.retention import prune_forever
from server.tokens import AccessTokenVerifier
from server.transports import pusher
from server.transports.native import handler as native
from server.transports.pusher import api as pusher_api
from server.transports.pusher import client_events
from server.transports.websocket import close_all_sockets

LISTEN_STARTUP_TIMEOUT_SECONDS = 30.0
DEFAULT_WORKOS_BASE_URL = "https://api.workos.com/"
WORKOS_TIMEOUT_SECONDS = 10

log = logging.getLogger(__name__)


async def listen_check_ctx(app: web.Application) -> AsyncIterator[None]:
    # First of all: a listen URL that cannot deliver notifications is refused before
    # anything is started on it.
    config = app[CONFIG]
    assert config.listen_conninfo is not None
    await check_listen_connection(config.listen_conninfo, config.listen_setting)
    yield


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    assert config.database_url is not None
    async with create_pool(
        config.database_url, "pgcast", prepare=not config.pooled_database_url
    ) as pool:
        await pool.wait(timeout=10)
        app[POOL] = pool
        async with pool.connection() as conn:
            cursor = await conn.execute(queries.IN_RECOVERY)
            if (await cursor.fetchone()) == (True,):
                raise ConfigError(
                    f"DATABASE_URL ({describe(config.database_url)}) is a hot standby "
                    "(pg_is_in_recovery() is true), which takes no writes; point it at the "
                    "primary"
                )
            app[DATABASE_ID] = await database_identity(conn)
        yield


async def listener_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    pool = app[POOL]
    assert config.listen_conninfo is not None
    app[HUB] = hub = Hub(config.socket_backlog_bytes)
    app[POLICY] = DatabaseListenPolicy(pool)
    # The feed's starting point is fixed before any socket can subscribe.
    async with pool.connection() as conn:
        start = await current_position(conn, app[DATABASE_ID])
        key = await notify_key(conn)
    # The feed's reader is a connection of its own, always open and used at every wake-up:
    # a pooler would save nothing on it, and it goes beside LISTEN, where its statements
    # may be prepared.
    feed = EventFeed(
        config.listen_conninfo,
        hub,
        start,
        key,
        published=lambda seconds: app[METRICS].notify_to_send_seconds.observe(seconds),
        batch_window=config.batch_window_ms / 1000,
    )
    revocations = Revocations(pool, hub)
    app[LISTENER] = listener = Listener(config.listen_conninfo)
    feed.listen_with(listener)
    listener.route(queries.REVOCATIONS_CHANNEL, revocations.announced)
    listener.route(queries.CLIENT_EVENTS_CHANNEL, client_events.router(hub))
    # Whatever committed or was revoked while LISTEN was down is in the tables.
    listener.when_listening(revocations.check_everything)
    app[METRICS] = create_metrics(
        sockets=hub.__len__,
        reconnects=lambda: listener.reconnects,
        frames=lambda: hub.frames_handed_over,
        event_log_reads=lambda: feed.reads,
        listener_wakeups=lambda: listener.wakeups,
    )
    async with running(feed.run(), "event feed"), running(listener.run(), "listener"):
        try:
            # Serve only once LISTEN is in place, so the process is ready as soon as it accepts.
            async with asyncio.timeout(LISTEN_STARTUP_TIMEOUT_SECONDS):
                await listener.wait_listening()
            yield
        finally:
            await revocations.close()


async def processes_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    # A connection held for the process's life, like the listener's: the direct one, never
    # a transaction-mode pooler.
    assert config.listen_conninfo is not None
    registry = ProcessRegistry(
        config.listen_conninfo,
        app[POOL],
        app[LISTENER],
        port=config.port,
        heartbeat_seconds=config.heartbeat_seconds,
        stale_seconds=config.stale_seconds,
    )
    await registry.register()
    app[PROCESS] = registry
    # Made before the heartbeat starts, so that the first sweep already sweeps presence.
    app[PRESENCE] = presence = PgPresence(app[POOL], registry, config.presence_grace)
    try:
        async with running(registry.run(), "process registry"):
            try:
                yield
            finally:
                # Before the process row goes: this process's members start their grace
                # rather than vanish with it.
                await presence.close()
    finally:
        await registry.deregister()


async def workos_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    if config.workos_api_key is None or config.workos_client_id is None:
        yield
        return
    base_url = config.workos_base_url or DEFAULT_WORKOS_BASE_URL
    client = workos.AsyncWorkOSClient(
        api_key=config.workos_api_key.value,
        client_id=config.workos_client_id,
        base_url=base_url,
        request_timeout=WORKOS_TIMEOUT_SECONDS,
        # One retry for a passing 5xx; more would keep a browser waiting on the callback.
        max_retries=1,
    )
    async with aiohttp.ClientSession() as http:
        app[WORKOS] = client
        app[TOKENS] = AccessTokenVerifier(
            http,
            jwks_url=client.user_management.get_jwks_url(),
            issuer=config.workos_issuer or base_url,
            client_id=config.workos_client_id,
        )
        try:
            yield
        finally:
            await client.close()


async def rate_limits_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    app[POST_LIMITER] = PostLimiter(app[POOL], config.rate_posts_per_minute)
    process = app[PROCESS]
    app[SOCKET_REGISTRY] = sockets = SocketRegistry(
        app[POOL], process.id, config.rate_sockets_per_user, config.rate_sockets_per_ip
    )
    process.when_registered_again(sockets.write_again)
    try:
        yield
    finally:
        await sockets.close()


async def _sockets_stopping(app: web.Application) -> None:
    # Before any socket closes: their rows go with this process's row, in one statement.
    sockets = app.get(SOCKET_REGISTRY)
    if sockets is not None:
        sockets.stopping()


async def retention_ctx(app: web.Application) -> AsyncIterator[None]:
    async with running(prune_forever(app[POOL], app[CONFIG].event_retention), "retention"):
        yield


async def _close_sockets(app: web.Application) -> None:
    await close_all_sockets(app[SOCKETS])


async def index(request: web.Request) -> web.FileResponse:
    page = UI_DIST / "index.html"
    if not page.exists():
        raise web.HTTPServiceUnavailable(reason="the UI is not built; run `make run`")
    return web.FileResponse(page, headers={"Cache-Control": "no-cache"})


def client_max_size(config: Config) -> int:
    # Room for the longest message even if every character arrives as a \uXXXX escape.
    return max(64 * 1024, config.max_message_chars * 12 + 4096)


def create_app(config: Config) -> web.Application:
    app = web.Application(
        # Sessions outermost: a change made before an error (a spent login state) is saved.
        middlewares=[
            auth.cookie_session_middleware(config),
            error_middleware,
            request_limits_middleware,
        ],
        client_max_size=client_max_size(config),
        handler_args=server_handler_args(),
    )
    app[CONFIG] = config
    app[SOCKETS] = set()
    app.on_shutdown.append(_sockets_stopping)
    app.on_shutdown.append(_close_sockets)
    app.on_response_prepare.append(security_headers_hook(config))
    app.cleanup_ctx.extend(
        [
            listen_check_ctx,
            pool_ctx,
            listener_ctx,
            processes_ctx,
            workos_ctx,
            rate_limits_ctx,
            retention_ctx,
        ]
    )
    api.setup_routes(app)
    auth.setup_routes(app)
    login.setup_routes(app)
    webhooks.setup_routes(app)
    native.setup_routes(app)
    pusher_api.setup_routes(app)
    pusher.setup_routes(app)
    health.setup_routes(app)
    app.router.add_get("/", index)
    if (UI_DIST / "assets").is_dir():
        app.router.add_static("/assets", UI_DIST / "assets")
    return app
