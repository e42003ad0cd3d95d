"""Ingest and bulk: writers at full speed while sockets listen, and one huge INSERT.

    .venv/bin/python bench/ingest.py [--sockets 1,1000] [--writers 1,4,16] [--seconds 5]
                                     [--bulk-rows 10000] [--smoke]

One pgcast server, one signed-in user, its sockets in a niced child process (receivers.py):

1. Ingest, for each socket count (1 shows pgcast's own cost, 1,000 adds what receiving costs
   on this machine) and each writer count: pgbench (bench/db_limits.py) inserts single-row
   transactions for `--seconds`,
   a. with only bench/db_limits.py's bare NOTIFY trigger on `messages` (pgcast's own trigger
      off, so the server and its sockets sit idle): the limit, measured with the same
      processes running;
   b. with pgcast's triggers and every socket listening.
   The ratio b/a says how much pgcast slows the writers. For b it also reports what the
   sockets got: frames/s, how long after the writers stopped the last socket had everything,
   and sockets closed as too slow (they would resume from their cursor; here they are
   replaced before the next step).
2. Bulk, at the largest socket count: one `INSERT ... SELECT` of `--bulk-rows` rows, one
   transaction. Reported: COMMIT to the first frame anywhere, to the last frame on the last
   socket, and frames/s over that.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import psycopg

if __package__ in (None, ""):  # run as a script: bench/ingest.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.db_limits import (
    install_bare_trigger,
    pgbench_inserts,
    reset_tables,
    set_variant,
    writer_user,
)
from bench.fanout import DRAIN_SECONDS
from bench.quick import (
    HOST,
    BenchError,
    Meter,
    ServerProcess,
    _ratio,
    _usage_dict,
    add_report_options,
    bench_main,
    fetch_metrics,
    finish_report,
    free_port,
    metrics_delta,
    pgcast_env,
    run_bench,
    settle_options,
    sign_in,
)
from bench.receivers import ReceiverProcess, Reception

DEFAULTS: dict[str, Any] = {
    "sockets": "1,1000",
    "writers": "1,4,16",
    "seconds": 5,
    "bulk_rows": 10_000,
    "content_bytes": 200,
}
# The receivers take the CPU the writers, PostgreSQL and pgcast leave (bench/receivers.py).
RECEIVERS_NICE = 10
SMOKE: dict[str, Any] = {
    "sockets": "1,10",
    "writers": "1,4",
    "seconds": 1,
    "bulk_rows": 500,
    "content_bytes": 200,
}
BULK_INSERT = """
INSERT INTO messages (user_id, content)
SELECT %(user_id)s, repeat('b', %(chars)s) FROM generate_series(1, %(rows)s)
RETURNING id
"""


@dataclass
class Bulk:
    rows: int
    sockets: int
    insert_ms: float
    commit_to_first_ms: float
    commit_to_last_ms: float
    frames_per_second: float
    reception: Reception
    usage: dict[str, Any]


@dataclass
class Ingest:
    writers: int
    sockets: int
    limit_tx_per_second: float
    tx_per_second: float
    ratio: float
    transactions: int
    writer_latency_ms: float
    limit_writer_latency_ms: float
    caught_up_after_writers_ms: float
    reception: Reception
    usage: dict[str, Any]
    limit_usage: dict[str, Any]


def _ids(conninfo: str) -> list[int]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM messages").fetchall()]


def _bulk_insert(conninfo: str, user_id: int, rows: int, chars: int) -> tuple[list[int], float]:
    """One statement, one transaction; returns the ids and when COMMIT returned."""
    with psycopg.connect(conninfo) as conn:
        began = time.time()
        found = conn.execute(
            BULK_INSERT, {"user_id": user_id, "rows": rows, "chars": chars}
        ).fetchall()
        conn.commit()
        committed = time.time()
    print(f"ingest: bulk INSERT of {rows} rows took {committed - began:.3f} s", file=sys.stderr)
    return [row[0] for row in found], committed


async def bulk_phase(
    args: argparse.Namespace,
    conninfo: str,
    user_id: int,
    fleet: ReceiverProcess,
    meter: Meter,
) -> Bulk:
    await fleet.start_phase(args.bulk_rows)
    meter.start()
    began = time.time()
    ids, committed = await asyncio.to_thread(
        _bulk_insert, conninfo, user_id, args.bulk_rows, args.content_bytes
    )
    got = await fleet.finish(ids, DRAIN_SECONDS)
    usage = await meter.stop()
    return Bulk(
        rows=args.bulk_rows,
        sockets=fleet.sockets,
        insert_ms=1000 * (committed - began),
        commit_to_first_ms=1000 * (got.first_at - committed),
        commit_to_last_ms=1000 * (got.last_at - committed),
        frames_per_second=_ratio(got.frames, got.last_at - committed),
        reception=got,
        usage=_usage_dict(usage),
    )


async def ingest_phase(
    args: argparse.Namespace,
    conninfo: str,
    postmaster: psutil.Process | None,
    workdir: Path,
    fleet: ReceiverProcess,
    meter: Meter,
    writers: int,
) -> Ingest:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        user_id = writer_user(conn)
        set_variant(conn, "notify")
        reset_tables(conn)
    meter.start()
    limit = await asyncio.to_thread(
        pgbench_inserts,
        conninfo,
        writers,
        args.seconds,
        user_id,
        args.content_bytes,
        postmaster,
        workdir,
    )
    limit_usage = await meter.stop()

    with psycopg.connect(conninfo, autocommit=True) as conn:
        reset_tables(conn)
        set_variant(conn, "pgcast")
    await fleet.start_phase()
    meter.start()
    rate = await asyncio.to_thread(
        pgbench_inserts,
        conninfo,
        writers,
        args.seconds,
        user_id,
        args.content_bytes,
        postmaster,
        workdir,
    )
    writers_done = time.time()
    ids = await asyncio.to_thread(_ids, conninfo)
    got = await fleet.finish(ids, DRAIN_SECONDS)
    usage = await meter.stop()
    return Ingest(
        writers=writers,
        sockets=fleet.sockets,
        limit_tx_per_second=limit.tx_per_second,
        tx_per_second=rate.tx_per_second,
        ratio=_ratio(rate.tx_per_second, limit.tx_per_second),
        transactions=len(ids),
        writer_latency_ms=rate.latency_ms,
        limit_writer_latency_ms=limit.latency_ms,
        caught_up_after_writers_ms=1000 * (got.last_at - writers_done),
        reception=got,
        usage=_usage_dict(usage),
        limit_usage=_usage_dict(limit_usage),
    )


async def _bench(
    args: argparse.Namespace, conninfo: str, workdir: Path, postmaster: psutil.Process | None
) -> dict[str, Any]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        install_bare_trigger(conn)
        set_variant(conn, "pgcast")
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = pgcast_env(conninfo, workdir / "server-data", port)
    if args.batch_window_ms is not None:
        env["PGCAST_BATCH_WINDOW_MS"] = str(args.batch_window_ms)
    server = await ServerProcess.start(
        "pgcast serve", [sys.executable, "-m", "server", "serve", "--no-migrate"], env
    )
    ingests: list[Ingest] = []
    try:
        await server.wait_ready(url + "/readyz")
        fleet = await ReceiverProcess.start(nice=RECEIVERS_NICE)
        watched = {
            "server": (psutil.Process(server.pid), False),
            # This process, pgbench and the receivers' process.
            "loadgen": (psutil.Process(), True),
            "receivers": (psutil.Process(fleet.pid), False),
        }
        if postmaster is not None:
            watched["postgres"] = (postmaster, True)
        meter = Meter(watched)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            user_id, cookie = await sign_in(http, url)
            before = await fetch_metrics(http, url)
            try:
                for sockets in sorted(_counts(args.sockets)):
                    await fleet.open(port, url, cookie, sockets)
                    for writers in _counts(args.writers):
                        ingest = await ingest_phase(
                            args, conninfo, postmaster, workdir, fleet, meter, writers
                        )
                        ingests.append(ingest)
                        print(
                            f"ingest: {writers} writers: {ingest.tx_per_second:,.0f} tx/s with "
                            f"{sockets} sockets listening, "
                            f"{ingest.limit_tx_per_second:,.0f} bare NOTIFY",
                            file=sys.stderr,
                        )
                bulk = await bulk_phase(args, conninfo, user_id, fleet, meter)
                print(
                    f"ingest: bulk {bulk.rows} rows to {bulk.sockets} sockets: "
                    f"last frame {bulk.commit_to_last_ms:.0f} ms after COMMIT",
                    file=sys.stderr,
                )
            finally:
                await fleet.close()
            metrics = metrics_delta(before, await fetch_metrics(http, url))
    finally:
        await server.stop()
    problems = []
    if server.exit_code != 0:
        problems.append(f"pgcast serve exited with {server.exit_code}")
    for label, got in [("bulk", bulk.reception)] + [
        (f"ingest with {i.writers} writers", i.reception) for i in ingests
    ]:
        if got.duplicates:
            problems.append(f"{label}: {got.duplicates} duplicate frames")
        if got.losses and not got.closed_sockets:
            problems.append(f"{label}: {got.losses} frames lost on sockets that stayed open")
    return {
        "bulk": asdict(bulk),
        "ingest": [asdict(ingest) for ingest in ingests],
        "sockets": args.sockets,
        "slow_closes": metrics.get("pgcast_slow_sockets_closed_total", 0.0),
        "server_warnings": server.warning_count,
        "server_warning_samples": server.warnings,
        "problems": problems,
        "notes": [],
    }


def _cpu(usage: dict[str, Any], name: str) -> str:
    value = usage["cpu_percent"].get(name)
    return "-" if value is None else f"{value:.0f}"


def _cpus(usage: dict[str, Any]) -> str:
    return " / ".join(_cpu(usage, name) for name in ("server", "postgres", "loadgen"))


def render_report(result: dict[str, Any]) -> str:
    bulk = result["bulk"]
    got = bulk["reception"]
    lines = [
        f"## pgcast ingest and bulk, {result['timestamp']}",
        "",
        f"`{result['command']}`",
        "",
        f"{result['cpus']} CPUs shared by PostgreSQL, pgbench, the server and the receivers "
        "(the load generator: this process and pgbench). Load average at start "
        f"{result['load_average']:.1f}.",
        "",
        f"### Bulk: one {bulk['rows']:,}-row INSERT to {bulk['sockets']:,} sockets",
        "",
        "| INSERT ms | COMMIT→first frame ms | COMMIT→last frame ms | frames/s "
        "| frames / expected | CPU % server / postgres / loadgen |",
        "| ---: | ---: | ---: | ---: | --- | --- |",
        f"| {bulk['insert_ms']:.0f} | {bulk['commit_to_first_ms']:.0f} "
        f"| {bulk['commit_to_last_ms']:.0f} | {bulk['frames_per_second']:,.0f} "
        f"| {got['frames']:,} / {got['expected']:,} | {_cpus(bulk['usage'])} |",
        "",
        "### Ingest: pgbench writers while sockets listen",
        "",
        "| sockets | writers | bare NOTIFY limit tx/s | pgcast tx/s | pgcast / limit "
        "| writer latency ms (limit / pgcast) | frames/s to sockets "
        "| last socket caught up after writers (ms) | sockets closed as too slow "
        "| CPU % server / postgres / loadgen (limit; pgcast) |",
        "| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for ingest in result["ingest"]:
        got = ingest["reception"]
        lines.append(
            f"| {ingest['sockets']:,} "
            f"| {ingest['writers']} | {ingest['limit_tx_per_second']:,.0f} "
            f"| {ingest['tx_per_second']:,.0f} | {ingest['ratio']:.2f} "
            f"| {ingest['limit_writer_latency_ms']:.2f} / {ingest['writer_latency_ms']:.2f} "
            f"| {got['frames_per_second']:,.0f} | {ingest['caught_up_after_writers_ms']:,.0f} "
            f"| {got['closed_sockets']} "
            f"| {_cpus(ingest['limit_usage'])}; {_cpus(ingest['usage'])} |"
        )
    lines += [
        "",
        f"Sockets closed as too slow: {result['slow_closes']:.0f}; "
        f"server log warnings: {result['server_warnings']}.",
    ]
    return finish_report(lines, result)


def _counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", help="socket counts listening, comma-separated (1,1000)")
    parser.add_argument("--writers", help="pgbench client counts, comma-separated (1,4,16)")
    parser.add_argument("--seconds", type=int, help="seconds per pgbench run (5)")
    parser.add_argument("--bulk-rows", type=int, help="rows in the one bulk INSERT (10000)")
    parser.add_argument("--content-bytes", type=int, help="message content bytes (200)")
    parser.add_argument(
        "--batch-window-ms", type=int, help="the server's PGCAST_BATCH_WINDOW_MS (its default)"
    )
    parser.add_argument("--smoke", action="store_true", help="a few sockets, a few seconds")
    add_report_options(parser)
    args = parser.parse_args(argv)
    settle_options(
        parser,
        args,
        SMOKE if args.smoke else DEFAULTS,
        ("seconds", "bulk_rows", "content_bytes"),
    )
    for name in ("sockets", "writers"):
        try:
            counts = _counts(getattr(args, name))
        except ValueError:
            parser.error(f"--{name} must be comma-separated whole numbers")
        if not counts or min(counts) < 1:
            parser.error(f"--{name} must list numbers of 1 or more")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    return run_bench(args, "ingest", _bench, render_report)


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, run, argv, (BenchError, OSError))


if __name__ == "__main__":
    sys.exit(main())
