"""The baseline for bench/quick.py and bench/resume.py: a bare aiohttp WebSocket server.

`GET /ws` opens a socket (no auth, no database, compress=False). `POST /go` makes every open
socket send the frames of `--frames` (a JSON list of strings), one `send_str` per frame, as
fast as it can, each from its own task like pgcast's per-socket writer. `GET /ready` answers
`{"sockets": N}`.

    python bench/baseline_server.py --port P --frames FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from aiohttp import web

SOCKETS = web.AppKey("sockets", set[web.WebSocketResponse])
TASKS = web.AppKey("tasks", set["asyncio.Task[None]"])
FRAMES = web.AppKey("frames", list[str])


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    try:
        async for _ in ws:
            pass
    finally:
        request.app[SOCKETS].discard(ws)
    return ws


async def send_all(ws: web.WebSocketResponse, frames: list[str]) -> None:
    for text in frames:
        await ws.send_str(text)


async def go(request: web.Request) -> web.Response:
    for ws in list(request.app[SOCKETS]):
        task = asyncio.create_task(send_all(ws, request.app[FRAMES]))
        request.app[TASKS].add(task)
        task.add_done_callback(request.app[TASKS].discard)
    return await ready(request)


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"sockets": len(request.app[SOCKETS])})


async def shutdown(app: web.Application) -> None:
    for task in list(app[TASKS]):
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in list(app[SOCKETS])), return_exceptions=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    args = parser.parse_args()
    app = web.Application()
    app[SOCKETS], app[TASKS], app[FRAMES] = set(), set(), json.loads(args.frames.read_text())
    app.add_routes([web.get("/ws", websocket), web.post("/go", go), web.get("/ready", ready)])
    app.on_shutdown.append(shutdown)
    web.run_app(
        app, host="127.0.0.1", port=args.port, access_log=None, print=None, shutdown_timeout=5
    )
