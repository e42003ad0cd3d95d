"""Liveness and readiness for orchestrators and load balancers."""

from __future__ import annotations

import asyncio

import psycopg
from aiohttp import web

from server import queries
from server.keys import HUB, LISTENER, POOL

READINESS_TIMEOUT_SECONDS = 2.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    listener = request.app[LISTENER]
    checks: dict[str, object] = {"listener": "listening" if listener.listening else "down"}
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            async with request.app[POOL].connection() as conn:
                await conn.execute(queries.DATABASE_ANSWERS)
        checks["database"] = "ok"
    except (psycopg.Error, TimeoutError, OSError) as error:
        checks["database"] = f"unreachable: {type(error).__name__}"
    checks["sockets"] = len(request.app[HUB])
    ready = checks["database"] == "ok" and listener.listening
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
