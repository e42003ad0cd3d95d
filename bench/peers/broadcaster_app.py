"""Comparison peer for bench/compare.py: encode/broadcaster's Postgres backend behind
Starlette on uvicorn, the endpoint of broadcaster's README. bench/peers/README.md says how it
works, how to run it and what `GET /ws` and `GET /ready` answer."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

CHANNEL = os.environ.get("NOTIFY_CHANNEL", "broadcaster_messages")
CONNECTED = '{"event":"connected","channel":"","data":{}}'
NEW_MESSAGE = '{"event":"new-message","channel":"messages","data":{"message":'

broadcast = Broadcast(os.environ["DATABASE_URL"])
subscribed: set[WebSocket] = set()


async def messages_ws(websocket: WebSocket) -> None:
    await websocket.accept()

    async with anyio.create_task_group() as task_group:
        # As in broadcaster's README: run until the client goes away.
        async def run_receiver() -> None:
            await receiver(websocket)
            task_group.cancel_scope.cancel()

        task_group.start_soon(run_receiver)
        await sender(websocket)


async def receiver(websocket: WebSocket) -> None:
    # Clients send nothing; reading is how a closed socket is noticed.
    async for _ in websocket.iter_text():
        pass


async def sender(websocket: WebSocket) -> None:
    async with broadcast.subscribe(channel=CHANNEL) as subscriber:
        subscribed.add(websocket)
        try:
            await websocket.send_text(CONNECTED)
            async for event in subscriber:  # type: ignore[union-attr]
                await websocket.send_text(f"{NEW_MESSAGE}{event.message}}}}}")  # type: ignore[union-attr]
        finally:
            subscribed.discard(websocket)


async def ready(request: Request) -> JSONResponse:
    return JSONResponse({"sockets": len(subscribed)})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with broadcast:
        yield


app = Starlette(
    routes=[Route("/ready", ready), WebSocketRoute("/ws", messages_ws)],
    lifespan=lifespan,
)
