"""Replay: bring a connection that has just subscribed up to date from its cursor, then let
it go live. The one catch-up every transport and `pgcast tail` use (docs/delivery.md, "No
gap and no duplicate at the seam")."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from server.core.cursor import Cursor
from server.core.events import Event
from server.core.hub import Connection
from server.db import DbPool
from server.pg.eventlog import Page, current_position, read_page, resumable_position

# A replay reads a first page of REPLAY_PAGE_SIZE events, then pages twice as long each time
# up to REPLAY_MAX_PAGE_SIZE (fewer pages: less planning, fewer round trips and wake-ups for
# both sides, about a tenth of the CPU per event from 1,000 to 4,000; a short replay still
# starts after a short read), and reads the next while it sends this one. So a replaying
# socket holds at most two pages, 2 x REPLAY_MAX_PAGE_SIZE events, besides what its socket's
# flow control lets through. Each channel's branches return up to a page each before the
# page is sorted, so with k channels pages grow only to REPLAY_MAX_PAGE_SIZE / k (at 4,000
# per channel for two, the sort went to disk). A replay of every channel (`pgcast tail`)
# keeps to REPLAY_PAGE_SIZE: its query runs without the planner settings, and on a table
# never analyzed a LIMIT of 4,000 turned its seek into a bitmap scan and sort of the whole
# log. Encoding holds the event loop, so it hands REPLAY_EVENTS_PER_SEND events at a time to
# the transport, with a yield in between: a long replay never delays every other socket for
# long.
REPLAY_PAGE_SIZE = 1000
REPLAY_MAX_PAGE_SIZE = 4000
REPLAY_EVENTS_PER_SEND = 100

SendEvents = Callable[[list[Event]], Awaitable[None]]


async def replay(
    pool: DbPool, position: Cursor, channels: Sequence[str] | None, send: SendEvents
) -> Cursor:
    """Send every event of `channels` (None: of every channel) committed after `position`,
    in commit order; return the position reached."""

    async def read_from(start: Cursor, size: int) -> Page:
        # The connection goes back to the pool before the page is sent: a slow client must
        # not hold one for the length of its replay.
        async with pool.connection() as conn:
            return await read_page(conn, start, size, channels)

    # PostgreSQL reads the next page while this one is sent, instead of the two taking
    # turns; one page ahead at most.
    size = REPLAY_PAGE_SIZE
    largest = size if channels is None else max(size, REPLAY_MAX_PAGE_SIZE // max(len(channels), 1))
    reading = asyncio.create_task(read_from(position, size))
    try:
        while True:
            page = await reading
            if not page.complete:
                size = min(2 * size, largest)
                reading = asyncio.create_task(read_from(page.end, size))
            events = page.events
            for start in range(0, len(events), REPLAY_EVENTS_PER_SEND):
                await send(events[start : start + REPLAY_EVENTS_PER_SEND])
                await asyncio.sleep(0)
            if page.complete:
                return page.end
    finally:
        # A socket that failed mid-replay leaves a read behind: stop it, and wait for it to
        # give its connection back.
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)


async def catch_up(
    pool: DbPool,
    database_id: str,
    connection: Connection,
    after: str | None,
    channels: Sequence[str] | None,
    *,
    started: Callable[[str], Awaitable[None]],
    send: SendEvents,
    before_live: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Catch `connection` up and let it go live.

    `connection` must already be subscribed to the hub: every event committed after the
    snapshot the replay ends on then reaches it live. `started` is told the cursor the
    connection starts from (a fresh one, or `after` as given) before anything is sent.
    `before_live` runs after the replay, before anything live is sent (the member lists of
    presence channels go there). CursorError when `after` cannot be honoured.
    """
    async with pool.connection() as conn:
        if after is None:
            position = await current_position(conn, database_id)
        else:
            position = await resumable_position(conn, after, database_id)
    await started(position.encode() if after is None else after)
    if after is not None:
        position = await replay(pool, position, channels, send)
    if before_live is not None:
        await before_live()
    connection.go_live(position.next)
