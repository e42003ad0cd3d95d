"""The Pusher sockets this process holds, by signed-in user: for terminating a user's
connections and for closing every socket on shutdown."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol


class PusherSocket(Protocol):
    socket_id: str

    async def close(self, code: int, reason: str) -> None: ...


@dataclass
class PusherSockets:
    _all: set[PusherSocket] = field(default_factory=set)
    _by_user: dict[str, set[PusherSocket]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._all)

    def add(self, socket: PusherSocket) -> None:
        self._all.add(socket)

    def signed_in(self, socket: PusherSocket, user_id: str) -> None:
        self._by_user.setdefault(user_id, set()).add(socket)

    def remove(self, socket: PusherSocket, user_id: str | None) -> None:
        self._all.discard(socket)
        if user_id is not None:
            sockets = self._by_user.get(user_id)
            if sockets is not None:
                sockets.discard(socket)
                if not sockets:
                    del self._by_user[user_id]

    def of_user(self, user_id: str) -> list[PusherSocket]:
        """The sockets signed in (`pusher:signin`) as `user_id`."""
        return list(self._by_user.get(user_id, ()))

    async def close_user(self, user_id: str, code: int, reason: str) -> int:
        sockets = self.of_user(user_id)
        await asyncio.gather(*(socket.close(code, reason) for socket in sockets))
        return len(sockets)

    async def close_all(self, code: int, reason: str) -> None:
        await asyncio.gather(
            *(socket.close(code, reason) for socket in tuple(self._all)), return_exceptions=True
        )
