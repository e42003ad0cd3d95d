"""Liveness and readiness for orchestrators and load balancers."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest

from server.keys import HUB, LISTENER, METRICS, POOL


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    listener = request.app[LISTENER]
    checks: dict[str, object] = {"listener": "listening" if listener.listening else "down"}
    # Shared and cached: a flood of probes costs one query a second, on a connection of its
    # own, and never waits for or takes a pooled connection that a request needs.
    probe = await request.app[POOL].probe()
    if probe.ok:
        checks["database"] = "ok"
        checks["notify_queue_usage"] = probe.notify_queue_usage
    else:
        checks["database"] = f"unreachable: {probe.error}"
    checks["sockets"] = len(request.app[HUB])
    ready = probe.ok and listener.listening
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


async def metrics_page(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    probe = await request.app[POOL].probe()
    # Without an answer the other metrics are still worth a scrape; /readyz reports it.
    if probe.notify_queue_usage is not None:
        metrics.notify_queue_usage.set(probe.notify_queue_usage)
    return web.Response(
        body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
