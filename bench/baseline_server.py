"""The baseline for bench/quick.py: a bare aiohttp WebSocket server and nothing else.

`GET /ws` opens a socket (no auth, no database, compress=False). `POST /go` makes every open
socket send the frames of `--frames` (a JSON list of strings), one `send_str` per frame, as fast
as it can, each socket from its own task, like pgcast's per-socket writer. Whatever pgcast does
beyond this costs the difference in frames/s.

    python bench/baseline_server.py --port P --frames FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from aiohttp import WSMsgType, web

SOCKETS = web.AppKey("sockets", set[web.WebSocketResponse])
FRAMES = web.AppKey("frames", list[str])
TASKS = web.AppKey("tasks", set["asyncio.Task[None]"])


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    try:
        async for message in ws:
            if message.type == WSMsgType.ERROR:
                break
    finally:
        request.app[SOCKETS].discard(ws)
    return ws


async def _send_all(ws: web.WebSocketResponse, frames: list[str]) -> None:
    for text in frames:
        await ws.send_str(text)


async def go(request: web.Request) -> web.Response:
    frames = request.app[FRAMES]
    tasks = request.app[TASKS]
    sockets = request.app[SOCKETS]
    for ws in list(sockets):
        task = asyncio.create_task(_send_all(ws, frames))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    return web.json_response({"sockets": len(sockets), "frames": len(frames)})


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"sockets": len(request.app[SOCKETS])})


async def close_sockets(app: web.Application) -> None:
    tasks = app[TASKS]
    sockets = app[SOCKETS]
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in list(sockets)), return_exceptions=True)


def create_app(frames: list[str]) -> web.Application:
    app = web.Application()
    app[SOCKETS] = set()
    app[FRAMES] = frames
    app[TASKS] = set()
    app.router.add_get("/ws", websocket)
    app.router.add_post("/go", go)
    app.router.add_get("/ready", ready)
    app.on_shutdown.append(close_sockets)
    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--frames", type=Path, required=True)
    args = parser.parse_args()
    frames = json.loads(args.frames.read_text())
    if not isinstance(frames, list) or not all(isinstance(f, str) for f in frames):
        print("baseline: --frames must hold a JSON list of strings", file=sys.stderr)
        return 2
    print(f"baseline serving 127.0.0.1:{args.port} ({len(frames)} frames)", file=sys.stderr)
    web.run_app(
        create_app(frames),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        shutdown_timeout=5.0,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
