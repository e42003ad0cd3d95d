"""Replay bench: one client resumes from a cursor taken before a backlog of N events.

    .venv/bin/python bench/resume.py [--events 100000] [--content-bytes 200] [--analyze]
        [--smoke] [--no-write]

One run, against limits measured in the same run so the figure is read as a ratio:

1. PostgreSQL (embedded, or a fresh database on DATABASE_URL's server) and `pgcast serve
   --no-migrate` as a child process, started as in bench/quick.py; one user signs in.
2. Cursor: one socket opens, keeps its `connected` frame's cursor, and closes.
3. Backlog: N messages of `--content-bytes` bytes, 1,000 rows per INSERT (one transaction
   each), written by another user. Then the server is left to go quiet: its listener reads
   every batch as it commits, and that work must not overlap the replay. Autovacuum is off for
   `broadcasts` during the run, so its statistics (which choose the replay query's plan)
   stay those of the empty table, unless `--analyze` runs ANALYZE after the backlog.
4. Replay: one socket opens `/ws?after=<cursor>`. Events/s = N / (connection made -> last frame
   read); also the time to the first event frame. The socket must get every id once, in id
   order (one writer, one transaction at a time: id order is commit order). CPU of the server,
   PostgreSQL and this process over the replay.
5. Database read limit: the same pages the server reads (`server.eventlog.read_page` from the
   same cursor to the end) in this process on one connection, at the replay's page size and
   the listener's: events/s of reading and building frames, no socket.
6. Socket limit: bench/baseline_server.py (bare aiohttp) sends the very frames the replay
   received to one socket (quick.py's `run_baseline`).

The target is 50,000 events/s to one client; the figure and both ratios are reported whether or
not it is reached. `run(parse_args([...]))` returns every figure as a dict; `problems` lists
delivery failures (empty = ok).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import psutil
import psycopg

# Run as a script, only bench/ is on sys.path: make the repository's `bench` package importable.
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.quick import (
    CONNECT_TIMEOUT,
    HOST,
    SETTLE_TIMEOUT,
    BenchError,
    Delivery,
    FanoutResult,
    Meter,
    Receiver,
    ServerProcess,
    Usage,
    _cpu,
    _delivery_dict,
    _usage_dict,
    add_report_options,
    bench_main,
    check_delivery,
    close_sockets,
    finish_report,
    free_port,
    handshake,
    pgcast_env,
    run_baseline,
    run_bench,
    settle_options,
    sign_in,
    usage_notes,
    wait_delivered,
)
from server.core.cursor import CursorError
from server.pg.eventlog import database_identity, read_page, resumable_position
from server.pg.feed import PAGE_SIZE as LISTENER_PAGE_SIZE
from server.pg.replay import REPLAY_PAGE_SIZE

DEFAULTS: dict[str, Any] = {"events": 100_000, "content_bytes": 200}
SMOKE: dict[str, Any] = {"events": 2_000, "content_bytes": 200}
TARGET_EVENTS_PER_SECOND = 50_000.0
BACKLOG_BATCH = 1000
DB_READ_PAGE_SIZES = tuple(dict.fromkeys((REPLAY_PAGE_SIZE, LISTENER_PAGE_SIZE)))
# A duplicate sent after the last expected frame would otherwise go unseen.
DUPLICATE_GRACE_SECONDS = 0.3
# The listener reads the backlog as it commits; the replay starts once the server's CPU stays
# under this share of a core for QUIET_SAMPLES samples in a row (at most QUIET_TIMEOUT).
QUIET_PERCENT = 5.0
QUIET_SAMPLES = 3
QUIET_INTERVAL = 0.2
QUIET_TIMEOUT = 30.0

INSERT_BACKLOG = """
INSERT INTO messages (user_id, content)
SELECT %(user_id)s, rpad('backlog ' || n, %(content_bytes)s::int, 'x')
FROM generate_series(%(first)s::int, %(last)s::int) AS n
ORDER BY n
RETURNING id
"""


# --------------------------------------------------------------------------------------------
# The resuming client


class CursorReceiver(Receiver):
    """bench/quick.py's Receiver that also keeps its `connected` frame and when the TCP
    connection was made, the start of the replay's clock."""

    def __init__(self, request: bytes, accept: str) -> None:
        super().__init__(0, request, accept, expect_connected=True)
        self.connection_made_at = math.nan
        self.connected_at = math.nan
        self.connected_text: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connection_made_at = time.time()
        super().connection_made(transport)

    def _text(self, payload: bytes, now: float) -> None:
        if not self.opened.done():
            self.connected_text = payload.decode(errors="replace")
            self.connected_at = now
        super()._text(payload, now)

    @property
    def cursor(self) -> str:
        try:
            found = json.loads(self.connected_text or "")["data"]["cursor"]
        except (ValueError, KeyError, TypeError) as error:
            raise BenchError(f"no cursor in the connected frame: {error!r}") from None
        if not isinstance(found, str):
            raise BenchError("the connected frame's cursor is not a string")
        return found


async def open_receiver(
    port: int, path: str, origin: str, cookie: str, expected: int, keep_text: bool
) -> CursorReceiver:
    """One socket, its phase started before it connects: replayed frames may arrive in the same
    read as the `connected` frame, and start_phase would drop them if called after."""
    loop = asyncio.get_running_loop()
    request, accept = handshake(port, path, origin, cookie)
    receiver = CursorReceiver(request, accept)
    receiver.start_phase(expected, keep_text=keep_text)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await loop.create_connection(lambda: receiver, HOST, port)
            await receiver.opened
    except (OSError, TimeoutError, BenchError) as error:
        await close_sockets([receiver])
        raise BenchError(f"socket {path[:60]} failed to open: {error!r}") from None
    return receiver


# --------------------------------------------------------------------------------------------
# Backlog


def write_backlog(
    conninfo: str, events: int, content_bytes: int, analyze: bool
) -> tuple[list[int], float]:
    """`events` messages by their own user, BACKLOG_BATCH rows per transaction; their ids and
    the seconds it took. With `analyze`, the event log's statistics are brought up to date."""
    ids: list[int] = []
    began = time.monotonic()
    with psycopg.connect(conninfo, autocommit=True, application_name="pgcast-bench") as conn:
        # The plan of the replay's query depends on these statistics (a never-analyzed table
        # gets a bitmap scan of the whole rest of the batch per page). Autoanalyze would update
        # them at a moment of its choosing, so the replay and the database reads could be
        # measured under different plans; only --analyze changes them, and before both.
        conn.execute("ALTER TABLE broadcasts SET (autovacuum_enabled = off)")
        row = conn.execute(
            "INSERT INTO users (email, name) VALUES ('backlog@example.com', 'Backlog') RETURNING id"
        ).fetchone()
        assert row is not None
        for first in range(1, events + 1, BACKLOG_BATCH):
            rows = conn.execute(
                INSERT_BACKLOG,
                {
                    "user_id": row[0],
                    "content_bytes": content_bytes,
                    "first": first,
                    "last": min(first + BACKLOG_BATCH - 1, events),
                },
            ).fetchall()
            ids.extend(found for (found,) in rows)
        if analyze:
            conn.execute("ANALYZE broadcasts")
    return sorted(ids), time.monotonic() - began


def event_log_statistics(conninfo: str) -> str:
    """When `broadcasts` was last analyzed, and the row count its plans assume."""
    with psycopg.connect(conninfo, autocommit=True, application_name="pgcast-bench") as conn:
        row = conn.execute(
            "SELECT greatest(s.last_analyze, s.last_autoanalyze), c.reltuples "
            "FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid "
            "WHERE c.oid = 'broadcasts'::regclass"
        ).fetchone()
    if row is None:
        return "unknown"
    analyzed, planned_rows = row
    if analyzed is None:
        return "never analyzed (planned as a table of unknown size)"
    return (
        f"analyzed at {analyzed.astimezone(UTC):%H:%M:%S} UTC, planned as {planned_rows:,.0f} rows"
    )


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def wait_quiet(process: psutil.Process) -> float | None:
    """Seconds until `process` went quiet, None if it did not within QUIET_TIMEOUT."""
    began = time.monotonic()
    quiet = 0
    before = _cpu_seconds(process)
    while time.monotonic() - began < QUIET_TIMEOUT:
        await asyncio.sleep(QUIET_INTERVAL)
        now = _cpu_seconds(process)
        quiet = quiet + 1 if 100 * (now - before) / QUIET_INTERVAL < QUIET_PERCENT else 0
        before = now
        if quiet >= QUIET_SAMPLES:
            return time.monotonic() - began
    return None


# --------------------------------------------------------------------------------------------
# Phases


@dataclass
class Replay:
    events: int
    frames: int
    seconds: float
    """Connection made -> last frame read."""
    events_per_second: float
    streaming_events_per_second: float
    """First event frame -> last frame read: comparable with the bare socket's figure."""
    first_frame_ms: float
    connected_frame_ms: float
    completed: bool
    delivery: Delivery
    usage: Usage
    texts: list[str]


@dataclass
class DbRead:
    page_size: int
    events: int
    pages: int
    seconds: float
    events_per_second: float
    usage: Usage


@dataclass
class PgcastRun:
    replay: Replay
    ids: list[int]
    insert_seconds: float
    quiet_after_seconds: float | None
    statistics: str
    """The event log's statistics when the replay began."""
    cursor: str
    server: ServerProcess


def _us_per_event(usage: Usage, name: str, events: int) -> float:
    cpu_seconds = usage.cpu_percent.get(name, math.nan) / 100 * usage.seconds
    return 1e6 * cpu_seconds / events if events else math.nan


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else math.nan


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


async def replay_phase(
    port: int, url: str, cookie: str, cursor: str, ids: list[int], meter: Meter
) -> Replay:
    path = "/ws?after=" + quote(cursor, safe="")
    meter.start()
    receiver = await open_receiver(port, path, url, cookie, len(ids), keep_text=True)
    try:
        completed = await wait_delivered([receiver], SETTLE_TIMEOUT + len(ids) / 5000)
        usage = await meter.stop()
        await asyncio.sleep(DUPLICATE_GRACE_SECONDS)
        delivery = check_delivery([receiver], ids)
    finally:
        await close_sockets([receiver])
    began = receiver.connection_made_at
    frames = len(receiver.times)
    seconds = receiver.times[-1] - began if frames else math.nan
    streaming = receiver.times[-1] - receiver.times[0] if frames > 1 else math.nan
    return Replay(
        events=len(ids),
        frames=frames,
        seconds=seconds,
        events_per_second=_rate(len(ids), seconds) if completed else math.nan,
        streaming_events_per_second=_rate(frames - 1, streaming) if completed else math.nan,
        first_frame_ms=1000 * (receiver.times[0] - began) if frames else math.nan,
        connected_frame_ms=1000 * (receiver.connected_at - began),
        completed=completed,
        delivery=delivery,
        usage=usage,
        texts=receiver.texts,
    )


async def run_pgcast(
    args: argparse.Namespace, conninfo: str, workdir: Path, postmaster: psutil.Process | None
) -> PgcastRun:
    port = free_port()
    url = f"http://{HOST}:{port}"
    server = await ServerProcess.start(
        "pgcast serve",
        [sys.executable, "-m", "server", "serve", "--no-migrate"],
        pgcast_env(conninfo, workdir / "server-data", port),
    )
    try:
        await server.wait_ready(url + "/readyz")
        server_process = psutil.Process(server.pid)
        watched = {"server": (server_process, False), "loadgen": (psutil.Process(), False)}
        if postmaster is not None:
            watched["postgres"] = (postmaster, True)
        meter = Meter(watched)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            _, cookie = await sign_in(http, url)
        before = await open_receiver(port, "/ws", url, cookie, 0, keep_text=False)
        await close_sockets([before])
        cursor = before.cursor
        ids, insert_seconds = await asyncio.to_thread(
            write_backlog, conninfo, args.events, args.content_bytes, args.analyze
        )
        quiet_after = await wait_quiet(server_process)
        statistics = await asyncio.to_thread(event_log_statistics, conninfo)
        replay = await replay_phase(port, url, cookie, cursor, ids, meter)
    finally:
        await server.stop()
    return PgcastRun(replay, ids, insert_seconds, quiet_after, statistics, cursor, server)


async def read_database(
    conninfo: str, cursor: str, page_size: int, postmaster: psutil.Process | None
) -> DbRead:
    """What the replay reads, page by page from `cursor` to the end, as server/pg/replay.py
    does it for a socket of every channel, with no socket and no pool."""
    watched = {"loadgen": (psutil.Process(), False)}
    if postmaster is not None:
        watched["postgres"] = (postmaster, True)
    meter = Meter(watched)
    conn = await psycopg.AsyncConnection.connect(
        conninfo, autocommit=True, application_name="pgcast-bench"
    )
    async with conn:
        database = await database_identity(conn)
        try:
            position = await resumable_position(conn, cursor, database)
        except CursorError as error:
            raise BenchError(f"the database refused the cursor: {error}") from None
        events = pages = 0
        meter.start()
        began = time.perf_counter()
        while True:
            page = await read_page(conn, position, page_size)
            pages += 1
            events += len(page)
            position = page.end
            if page.complete:
                break
        seconds = time.perf_counter() - began
        usage = await meter.stop()
    return DbRead(page_size, events, pages, seconds, _rate(events, seconds), usage)


# --------------------------------------------------------------------------------------------
# Report


def _figure(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def render_report(result: dict[str, Any]) -> str:
    replay: Replay = result["_replay"]
    reads: list[DbRead] = result["_db_reads"]
    bare: FanoutResult = result["_bare"]
    args: argparse.Namespace = result["_args"]
    target = "reached" if result["target_met"] else "NOT reached"
    quiet = result["server_quiet_after_seconds"]
    rows = [
        (
            "setup",
            f"{args.events:,} events of {args.content_bytes}-byte messages, "
            f"{BACKLOG_BATCH:,} per INSERT (written in {result['backlog_insert_seconds']:.1f} s), "
            f"1 socket, {result['cpus']} CPUs, database: {result['database']}, "
            f"load average at start {result['load_average']:.1f}",
        ),
        ("event-log statistics at the replay", result["event_log_statistics"]),
        (
            "server quiet after the backlog",
            "no (gave up)" if quiet is None else f"after {quiet:.1f} s",
        ),
        (
            "**replay events/s** (connection made → last frame)",
            f"**{_figure(replay.events_per_second)}** ({replay.frames:,} frames in "
            f"{replay.seconds:.2f} s); target {TARGET_EVENTS_PER_SECOND:,.0f}: {target}",
        ),
        (
            "replay events/s, first event frame → last",
            _figure(replay.streaming_events_per_second),
        ),
        (
            "connected frame / first event frame after the connection (ms)",
            f"{replay.connected_frame_ms:.1f} / {replay.first_frame_ms:.1f}",
        ),
        ("replay CPU (% of one core)", _cpu(replay.usage, "server", "postgres", "loadgen")),
        (
            "replay CPU per event (µs): server / postgres",
            f"{_figure(result['server_us_per_event'], 1)} / "
            f"{_figure(result['postgres_us_per_event'], 1)}",
        ),
        ("replay peak RSS: server (MB)", f"{replay.usage.peak_rss_mb['server']:.0f}"),
    ]
    for read in reads:
        rows.append(
            (
                f"**database read events/s, pages of {read.page_size}** (read_page, no socket)",
                f"**{_figure(read.events_per_second)}** ({read.events:,} events, "
                f"{read.pages:,} pages in {read.seconds:.2f} s; "
                f"{_cpu(read.usage, 'postgres', 'loadgen')})",
            )
        )
        rows.append(
            (
                f"replay / database read ({read.page_size})",
                _figure(result["ratio_to_db_read"][read.page_size], 2),
            )
        )
    rows += [
        (
            "**bare socket events/s** (bare aiohttp, the same frames, 1 socket)",
            f"**{_figure(bare.frames_per_second)}** ({bare.frames:,} frames in "
            f"{bare.seconds:.2f} s; {_cpu(bare.usage, 'server', 'loadgen')})",
        ),
        ("**replay / bare socket**", f"**{_figure(result['ratio_to_bare_socket'], 2)}**"),
        (
            "server CPU per event (µs): pgcast replay / bare socket",
            f"{_figure(result['server_us_per_event'], 1)} / "
            f"{_figure(result['bare_server_us_per_event'], 1)}",
        ),
        (
            "delivery check replay / bare socket",
            " / ".join("ok" if d.ok else "FAIL" for d in (replay.delivery, bare.delivery)),
        ),
        (
            "replay losses / duplicates / out-of-order",
            f"{replay.delivery.losses} / {replay.delivery.duplicates} / "
            f"{replay.delivery.out_of_order}",
        ),
        ("server log warnings/errors", str(result["server_warnings"])),
        (
            "server exit codes: pgcast / bare",
            f"{result['pgcast_exit_code']} / {result['baseline_exit_code']}",
        ),
    ]
    lines = [
        f"## pgcast resume bench, {result['timestamp']}",
        "",
        f"`{result['command']}`",
        "",
        "| figure | value |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    return finish_report(lines, result)


def _db_read_dict(read: DbRead) -> dict[str, Any]:
    return {
        "events": read.events,
        "pages": read.pages,
        "seconds": read.seconds,
        "events_per_second": read.events_per_second,
        "usage": _usage_dict(read.usage),
    }


# --------------------------------------------------------------------------------------------
# Entry points


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/resume.py",
        description="Replay of a backlog to one resuming client, against its limits.",
    )
    parser.add_argument(
        "--events", type=int, help=f"backlog events to replay (default {DEFAULTS['events']})"
    )
    parser.add_argument(
        "--content-bytes",
        type=int,
        help=f"bytes of each message's content (default {DEFAULTS['content_bytes']})",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"{SMOKE['events']:,} events, a few seconds (explicit options still win)",
    )
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="ANALYZE broadcasts after writing the backlog, as autovacuum would in time "
        "(by default its statistics stay those of the empty table)",
    )
    add_report_options(parser)
    args = parser.parse_args(argv)
    settle_options(parser, args, SMOKE if args.smoke else DEFAULTS, ("events", "content_bytes"))
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


async def _bench(
    args: argparse.Namespace, conninfo: str, workdir: Path, postmaster: psutil.Process | None
) -> dict[str, Any]:
    pgcast = await run_pgcast(args, conninfo, workdir, postmaster)
    replay = pgcast.replay
    reads = [
        await read_database(conninfo, pgcast.cursor, size, postmaster)
        for size in DB_READ_PAGE_SIZES
    ]
    bare, bare_server = await run_baseline(
        argparse.Namespace(sockets=1), replay.texts, pgcast.ids, workdir
    )

    problems: list[str] = []
    for label, delivery in (("replay", replay.delivery), ("bare socket", bare.delivery)):
        if not delivery.ok:
            problems.append(f"{label} delivery FAILED: {delivery.describe()}")
            problems.extend(f"{label}: {sample}" for sample in delivery.samples)
    if not replay.completed:
        problems.append(f"replay incomplete: {replay.frames} of {replay.events} frames arrived")
    for read in reads:
        if read.events != len(pgcast.ids):
            problems.append(
                f"database read ({read.page_size}) found {read.events} events, "
                f"the backlog has {len(pgcast.ids)}"
            )
    if pgcast.server.exit_code != 0:
        problems.append(f"pgcast serve exited with {pgcast.server.exit_code}")

    notes = usage_notes([("replay", replay.usage), ("bare socket", bare.usage)])
    if pgcast.quiet_after_seconds is None:
        notes.append(
            f"the server did not go quiet within {QUIET_TIMEOUT:.0f} s of writing the backlog: "
            "its listener was still busy during the replay"
        )
    if not args.analyze:
        notes.append(
            "broadcasts was not analyzed after the backlog: the replay's query was planned "
            "with the statistics of the empty table, as right after a first burst. Each page's "
            "plan then also depends on the connection's plan cache, so the replay (pooled "
            "connections) and the database reads (a new one) may run different plans; "
            "--analyze measures the plan autovacuum's ANALYZE leads to"
        )
    target_met = replay.events_per_second >= TARGET_EVENTS_PER_SECOND
    if not target_met:
        notes.append(
            f"replay below the target of {TARGET_EVENTS_PER_SECOND:,.0f} events/s to one client"
        )
    return {
        "_args": args,
        "_replay": replay,
        "_db_reads": reads,
        "_bare": bare,
        "events": args.events,
        "content_bytes": args.content_bytes,
        "events_per_second": replay.events_per_second,
        "streaming_events_per_second": replay.streaming_events_per_second,
        "replay_seconds": replay.seconds,
        "first_frame_ms": replay.first_frame_ms,
        "connected_frame_ms": replay.connected_frame_ms,
        "target_events_per_second": TARGET_EVENTS_PER_SECOND,
        "target_met": target_met,
        "replay_usage": _usage_dict(replay.usage),
        "server_us_per_event": _us_per_event(replay.usage, "server", replay.events),
        "postgres_us_per_event": _us_per_event(replay.usage, "postgres", replay.events),
        "delivery_ok": replay.delivery.ok and replay.completed,
        "replay_delivery": _delivery_dict(replay.delivery),
        "db_read_events_per_second": {r.page_size: r.events_per_second for r in reads},
        "db_read": {r.page_size: _db_read_dict(r) for r in reads},
        "ratio_to_db_read": {
            r.page_size: _ratio(replay.events_per_second, r.events_per_second) for r in reads
        },
        "bare_socket_events_per_second": bare.frames_per_second,
        "ratio_to_bare_socket": _ratio(replay.events_per_second, bare.frames_per_second),
        "bare_socket_usage": _usage_dict(bare.usage),
        "bare_server_us_per_event": _us_per_event(bare.usage, "server", bare.frames),
        "bare_socket_delivery": _delivery_dict(bare.delivery),
        "backlog_insert_seconds": pgcast.insert_seconds,
        "server_quiet_after_seconds": pgcast.quiet_after_seconds,
        "analyze": args.analyze,
        "event_log_statistics": pgcast.statistics,
        "server_warnings": pgcast.server.warning_count,
        "server_warning_samples": pgcast.server.warnings,
        "pgcast_exit_code": pgcast.server.exit_code,
        "baseline_exit_code": bare_server.exit_code,
        "problems": problems,
        "notes": notes,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole benchmark once; every figure in a dict. `problems` is empty when the
    replay was complete, exactly-once and in order. Raises BenchError if it cannot run."""
    return run_bench(args, "resume", _bench, render_report)


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
