"""Revocations: a session that ended, a user deleted, a channel membership revoked. The
database announces each on `pgcast_revocations` (db/triggers.sql) and every process closes
what it holds; after the LISTEN connection was down, each process re-checks everything it
holds instead, since the announcements of that window are gone."""

from __future__ import annotations

import asyncio
import logging

import psycopg

from server import queries
from server.core.events import CloseReason, Disconnect
from server.core.hub import Hub
from server.db import DbPool
from server.pg.listener import backoff

log = logging.getLogger(__name__)

SESSION_ENDED = Disconnect(CloseReason.SIGNED_OUT, "signed out")
USER_DELETED = Disconnect(CloseReason.SIGNED_OUT, "account deleted")
TERMINATED = Disconnect(CloseReason.SIGNED_OUT, "connections terminated by the server")


def channel_revoked(channel: str) -> Disconnect:
    return Disconnect(CloseReason.FORBIDDEN, f"no longer allowed to listen to {channel}")


class Revocations:
    def __init__(self, pool: DbPool, hub: Hub) -> None:
        self._pool = pool
        self._hub = hub
        self._checks: set[asyncio.Task[None]] = set()

    def announced(self, payload: str) -> None:
        """One notification: `session:ID`, `user:ID`, `membership:USER_ID:CHANNEL`,
        `terminate:USER_ID` (the Pusher HTTP API's terminate_connections: the user may
        connect again), or `recheck` (a DBA changed the listen rule: check every
        subscription again)."""
        kind, _, ident = payload.partition(":")
        if kind == "session" and ident:
            self._hub.close_session(ident, SESSION_ENDED)
        elif kind == "user" and ident.isdigit():
            self._hub.close_user(int(ident), USER_DELETED)
        elif kind == "membership" and ident.partition(":")[0].isdigit():
            user_id, _, channel = ident.partition(":")
            self._check({(int(user_id), channel)})
        elif kind == "terminate":
            # Any Pusher user id is valid; only pgcast's (numeric) users have sockets here.
            if ident.isascii() and ident.isdigit():
                self._hub.close_user(int(ident), TERMINATED)
        elif kind == "recheck":
            self.check_everything()
        else:
            log.warning("ignoring malformed revocation %r", payload[:100])

    def check_everything(self) -> None:
        """Close whatever the database no longer allows (called after LISTEN reconnects)."""
        self._check(None)

    def _check(self, subscriptions: set[tuple[int, str]] | None) -> None:
        task = asyncio.create_task(self._close_what_ended(subscriptions))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _close_what_ended(self, subscriptions: set[tuple[int, str]] | None) -> None:
        failures = 0
        while True:
            try:
                await self._check_once(subscriptions)
                return
            except psycopg.Error as error:
                # Until it succeeds, what it would close stays open: keep trying.
                failures += 1
                log.warning("checking revocations failed: %s", str(error).strip())
                await asyncio.sleep(backoff(failures))

    async def _check_once(self, subscriptions: set[tuple[int, str]] | None) -> None:
        everything = subscriptions is None
        pairs = sorted(self._hub.subscriptions() if subscriptions is None else subscriptions)
        async with self._pool.connection() as conn:
            if everything:
                cursor = await conn.execute(
                    queries.ENDED_AMONG,
                    {"session_ids": self._hub.sessions(), "user_ids": self._hub.users()},
                )
                for kind, ident, reason in await cursor.fetchall():
                    ended = Disconnect(CloseReason.SIGNED_OUT, reason)
                    if kind == "user":
                        self._hub.close_user(int(ident), ended)
                    else:
                        self._hub.close_session(ident, ended)
            cursor = await conn.execute(
                queries.FORBIDDEN_SUBSCRIPTIONS,
                {
                    "user_ids": [user_id for user_id, _ in pairs],
                    "channels": [channel for _, channel in pairs],
                },
            )
            for user_id, channel in await cursor.fetchall():
                self._hub.close_subscriptions(user_id, channel, channel_revoked(channel))

    async def close(self) -> None:
        for task in self._checks:
            task.cancel()
        await asyncio.gather(*self._checks, return_exceptions=True)
