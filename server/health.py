"""Liveness and readiness for orchestrators and load balancers."""

from __future__ import annotations

import asyncio

import psycopg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest

from server import queries
from server.keys import HUB, LISTENER, METRICS, POOL

READINESS_TIMEOUT_SECONDS = 2.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    listener = request.app[LISTENER]
    checks: dict[str, object] = {"listener": "listening" if listener.listening else "down"}
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            async with request.app[POOL].connection() as conn:
                cursor = await conn.execute(queries.NOTIFY_QUEUE_USAGE)
                row = await cursor.fetchone()
        checks["database"] = "ok"
        checks["notify_queue_usage"] = float(row[0]) if row else None
    except (psycopg.Error, TimeoutError, OSError) as error:
        checks["database"] = f"unreachable: {type(error).__name__}"
    checks["sockets"] = len(request.app[HUB])
    ready = checks["database"] == "ok" and listener.listening
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


async def metrics_page(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            async with request.app[POOL].connection() as conn:
                cursor = await conn.execute(queries.NOTIFY_QUEUE_USAGE)
                row = await cursor.fetchone()
        if row is not None:
            metrics.notify_queue_usage.set(float(row[0]))
    except (psycopg.Error, TimeoutError):
        pass  # The other metrics are still worth a scrape; /readyz reports the database.
    return web.Response(
        body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
