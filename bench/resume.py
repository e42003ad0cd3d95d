"""Replay: one client resumes from a cursor taken before a backlog of N events.

One socket keeps its `connected` frame's cursor; N messages are written, 1,000 rows per
INSERT, and the server is left to go quiet (its listener reads every batch as it commits).
Autovacuum is off for `broadcasts`, so the replay's plan is that of the empty table's
statistics unless `--analyze`. Then one socket opens `/ws?after=<cursor>`: events/s from the
connection to the last frame, every id once, in id order. Set against the same pages read by
`server.pg.eventlog.read_page` in this process (no socket), and against the bare aiohttp
baseline sending the replay's very frames to one socket. The aim: 50,000 events/s.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from dataclasses import dataclass
from datetime import UTC
from urllib.parse import quote

import psutil
import psycopg

from bench.lib import render, runner
from bench.lib.database import create_user
from bench.lib.meters import Meter, usage_notes, wait_quiet
from bench.lib.receivers import check_delivery, close_sockets, open_sockets, wait_delivered
from bench.lib.results import BenchError, Burst, Result, Usage, ratio
from bench.lib.servers import PgcastProcess, baseline_burst
from bench.lib.writers import connect
from server.core.cursor import CursorError
from server.pg.eventlog import database_identity, read_page, resumable_position
from server.pg.feed import PAGE_SIZE as LISTENER_PAGE_SIZE
from server.pg.replay import REPLAY_PAGE_SIZE

TARGET = 50_000.0
BACKLOG_BATCH = 1000
# A duplicate sent after the last expected frame would otherwise go unseen.
DUPLICATE_GRACE_SECONDS = 0.3
INSERT_BACKLOG = """
INSERT INTO messages (user_id, content)
SELECT %(user_id)s, rpad('backlog ' || n, %(chars)s::int, 'x')
FROM generate_series(%(first)s::int, %(last)s::int) AS n ORDER BY n RETURNING id
"""


@dataclass
class Options(runner.Options):
    events: int = runner.option(100_000, 2_000, "backlog events to replay")
    content_bytes: int = runner.option(200, None, "bytes of each message's content")
    analyze: bool = runner.option(False, None, "ANALYZE broadcasts after the backlog")


@dataclass
class Replay:
    events: int
    seconds: float
    """Connection made -> last frame read."""
    streaming_seconds: float
    """First event frame -> last frame read: comparable with the bare socket's figure."""
    first_frame_ms: float
    connected_frame_ms: float
    completed: bool
    burst: Burst

    @property
    def events_per_second(self) -> float:
        return ratio(self.events, self.seconds) if self.completed else math.nan

    @property
    def streaming_events_per_second(self) -> float:
        return ratio(self.events - 1, self.streaming_seconds) if self.completed else math.nan


@dataclass
class DbRead:
    page_size: int
    events: int
    pages: int
    seconds: float
    usage: Usage

    @property
    def events_per_second(self) -> float:
        return ratio(self.events, self.seconds)


@dataclass
class ResumeResult(Result):
    events: int
    content_bytes: int
    analyze: bool
    backlog_seconds: float
    quiet_after_seconds: float | None
    statistics: str
    replay: Replay
    db_reads: list[DbRead]
    bare: Burst
    server_warnings: int

    @property
    def ratio_to_bare_socket(self) -> float:
        return ratio(self.replay.events_per_second, self.bare.frames_per_second)

    def us_per_event(self, name: str) -> float:
        return self.replay.burst.usage.us_per(name, self.events)

    @property
    def ok(self) -> bool:
        return self.replay.completed and self.replay.burst.delivery.ok

    def render(self) -> list[str]:
        replay, bare, d = self.replay, self.bare, self.replay.burst.delivery
        usage, cpu = replay.burst.usage, self.us_per_event
        target = "reached" if replay.events_per_second >= TARGET else "NOT reached"
        quiet = self.quiet_after_seconds
        rows = [
            f"setup | {self.events:,} events of {self.content_bytes}-byte messages, "
            f"{BACKLOG_BATCH:,} per INSERT (written in {self.backlog_seconds:.1f} s), 1 socket",
            f"event-log statistics at the replay | {self.statistics}",
            "server quiet after the backlog | "
            + ("no (gave up)" if quiet is None else f"after {quiet:.1f} s"),
            "**replay events/s** (connection made → last frame) | "
            f"**{render.rate(replay.events_per_second)}** ({replay.burst.frames:,} frames in "
            f"{replay.seconds:.2f} s); target {TARGET:,.0f}: {target}",
            "replay events/s, first event frame → last | "
            + render.rate(replay.streaming_events_per_second),
            "connected frame / first event frame after the connection (ms) | "
            f"{replay.connected_frame_ms:.1f} / {replay.first_frame_ms:.1f}",
            f"replay CPU (% of one core) | {render.cpu(usage, 'server', 'postgres', 'loadgen')}",
            "replay CPU per event (µs): server / postgres | "
            f"{render.us(cpu('server'))} / {render.us(cpu('postgres'))}",
        ]
        for read in self.db_reads:
            rows += [
                f"**database read events/s, pages of {read.page_size}** (read_page, no socket) "
                f"| **{render.rate(read.events_per_second)}** ({read.events:,} events, "
                f"{read.pages:,} pages in {read.seconds:.2f} s; "
                f"{render.cpu(read.usage, 'postgres', 'loadgen')})",
                f"replay / database read ({read.page_size}) | "
                + render.x(replay.events_per_second, read.events_per_second),
            ]
        return render.figures(
            [
                *rows,
                "**bare socket events/s** (bare aiohttp, the same frames, 1 socket) | "
                f"**{render.rate(bare.frames_per_second)}** ({bare.frames:,} frames in "
                f"{bare.seconds:.2f} s; {render.cpu(bare.usage, 'server', 'loadgen')})",
                f"**replay / bare socket** | **{render.num(self.ratio_to_bare_socket, 2)}**",
                "server CPU per event (µs): pgcast replay / bare socket | "
                f"{render.us(cpu('server'))} / {render.us(bare.server_us_per_frame)}",
                "delivery check replay / bare socket | "
                f"{render.ok(self.ok)} / {render.ok(bare.ok)}",
                "replay losses / duplicates / out-of-order | "
                f"{d.losses} / {d.duplicates} / {d.out_of_order}",
                f"server log warnings/errors | {self.server_warnings}",
            ]
        )


def write_backlog(conninfo: str, events: int, chars: int, analyze: bool) -> tuple[list[int], float]:
    """`events` messages by their own user, BACKLOG_BATCH rows per transaction; their ids and
    the seconds it took. With `analyze`, the event log's statistics are brought up to date."""
    ids: list[int] = []
    began = time.monotonic()
    with connect(conninfo, autocommit=True) as conn:
        # The replay's plan depends on these statistics; autoanalyze would change them at a
        # moment of its choosing, so the replay and the reads could run different plans.
        conn.execute("ALTER TABLE broadcasts SET (autovacuum_enabled = off)")
        user_id = create_user(conn, "backlog@example.com", "Backlog")
        for first in range(1, events + 1, BACKLOG_BATCH):
            last = min(first + BACKLOG_BATCH - 1, events)
            params = {"user_id": user_id, "chars": chars, "first": first, "last": last}
            ids += [found for (found,) in conn.execute(INSERT_BACKLOG, params).fetchall()]
        if analyze:
            conn.execute("ANALYZE broadcasts")
    return sorted(ids), time.monotonic() - began


def statistics(conninfo: str) -> str:
    """When `broadcasts` was last analyzed, and the row count its plans assume."""
    with connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT greatest(s.last_analyze, s.last_autoanalyze), c.reltuples FROM pg_class c "
            "JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = 'broadcasts'::regclass"
        ).fetchone()
    if row is None or row[0] is None:
        return "never analyzed (planned as a table of unknown size)"
    return f"analyzed at {row[0].astimezone(UTC):%H:%M:%S} UTC, planned as {row[1]:,.0f} rows"


async def replay_phase(
    server: PgcastProcess, cookie: str, cursor: str | None, ids: list[int], meter: Meter
) -> tuple[Replay, list[str]]:
    """One socket resuming from `cursor`; every id once, in order. Its phase starts before it
    connects: replayed frames may come in the same read as the connected frame."""
    path = "/ws?after=" + quote(cursor or "", safe="")
    meter.start()
    [receiver] = await open_sockets(server.port, path, cookie, 1, expected=len(ids), keep_text=True)
    try:
        completed = await wait_delivered([receiver], 15 + len(ids) / 5000)
        usage = await meter.stop()
        await asyncio.sleep(DUPLICATE_GRACE_SECONDS)  # a window for a late duplicate to show
        delivery = check_delivery([receiver], ids)
    finally:
        await close_sockets([receiver])
    began, times = receiver.connection_made_at, receiver.times or [math.nan]
    burst = Burst(delivery, usage, completed)
    first_ms, connected_ms = 1000 * (times[0] - began), 1000 * (receiver.connected_at - began)
    streaming = times[-1] - times[0]
    replay = Replay(
        len(ids), times[-1] - began, streaming, first_ms, connected_ms, completed, burst
    )
    return replay, receiver.texts


async def read_database(
    conninfo: str, cursor: str | None, page_size: int, postmaster: psutil.Process | None
) -> DbRead:
    """What the replay reads, page by page from `cursor` to the end, as server/pg/replay.py
    does for a socket of every channel, with no socket and no pool."""
    meter = Meter(
        {"loadgen": (psutil.Process(), False)}
        | ({"postgres": (postmaster, True)} if postmaster else {})
    )
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        try:
            position = await resumable_position(conn, cursor or "", await database_identity(conn))
        except CursorError as error:
            raise BenchError(f"the database refused the cursor: {error}") from None
        events = pages = 0
        meter.start()
        began = time.perf_counter()
        while True:
            page = await read_page(conn, position, page_size)
            pages, events, position = pages + 1, events + len(page), page.end
            if page.complete:
                break
        seconds = time.perf_counter() - began
        return DbRead(page_size, events, pages, seconds, await meter.stop())


async def measure(run: runner.Run[Options]) -> ResumeResult:
    o = run.options
    async with await PgcastProcess.start(run.conninfo, run.workdir) as server:
        meter = Meter.for_server(server.pid, run.postmaster)
        _, cookie = await server.sign_in()
        [before] = await open_sockets(server.port, "/ws", cookie, 1)
        await close_sockets([before])
        backlog = (run.conninfo, o.events, o.content_bytes, o.analyze)
        ids, seconds = await asyncio.to_thread(write_backlog, *backlog)
        quiet = await wait_quiet(server.pid)
        stats = await asyncio.to_thread(statistics, run.conninfo)
        replay, texts = await replay_phase(server, cookie, before.cursor, ids, meter)
    reads = [
        await read_database(run.conninfo, before.cursor, size, run.postmaster)
        for size in dict.fromkeys((REPLAY_PAGE_SIZE, LISTENER_PAGE_SIZE))
    ]
    bare, bare_exit = await baseline_burst(texts, ids, 1, run.workdir)
    problems = replay.burst.delivery.problems("replay") + bare.delivery.problems("bare socket")
    if not replay.completed:
        problems.append(f"replay incomplete: {replay.burst.frames} of {len(ids)} frames arrived")
    problems += [
        f"database read ({r.page_size}) found {r.events} events of {len(ids)}"
        for r in reads
        if r.events != len(ids)
    ]
    problems += server.exit_problems() + ([] if bare_exit == 0 else [f"bare exited {bare_exit}"])
    notes = usage_notes([("replay", replay.burst.usage), ("bare socket", bare.usage)])
    if quiet is None:
        notes.append("the server did not go quiet after the backlog: its listener was busy")
    if not o.analyze:
        notes.append(
            "broadcasts was not analyzed after the backlog: the replay's query was planned "
            "with the statistics of the empty table, as right after a first burst, and the "
            "replay (pooled connections) and the database reads (a new one) may run different "
            "plans; --analyze measures the plan autovacuum's ANALYZE leads to"
        )
    if not replay.events_per_second >= TARGET:
        notes.append(f"replay below the target of {TARGET:,.0f} events/s to one client")
    return ResumeResult(
        o.events,
        o.content_bytes,
        o.analyze,
        seconds,
        quiet,
        stats,
        replay,
        reads,
        bare,
        server.warning_count,
        problems=problems,
        notes=notes,
    )


SCENARIO = runner.Scenario("resume", "resume bench", __doc__, Options, measure)

if __name__ == "__main__":
    sys.exit(runner.main(SCENARIO))
