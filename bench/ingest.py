"""Ingest and bulk: pgbench writers at full speed while sockets listen, and one huge INSERT.
bench/README.md says how it is measured."""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.lib import render, runner
from bench.lib.database import create_user, reset_tables, set_variant
from bench.lib.receivers import DRAIN_SECONDS, ReceiverProcess
from bench.lib.results import Delivery, Result, ratio
from bench.lib.writers import InsertRate, connect, pgbench_inserts, pgcast_session

# The receivers take the CPU the writers, PostgreSQL and pgcast leave.
RECEIVERS_NICE = 10
BULK_INSERT = """
INSERT INTO messages (user_id, content)
SELECT %(user_id)s, repeat('b', %(chars)s) FROM generate_series(1, %(rows)s) RETURNING id
"""


@dataclass
class Options(runner.Options):
    sockets: tuple[int, ...] = runner.option((1, 1000), (1, 10), "socket counts listening")
    writers: tuple[int, ...] = runner.option((1, 4, 16), (1, 4), "pgbench client counts")
    seconds: int = runner.option(5, 1, "seconds per pgbench run")
    bulk_rows: int = runner.option(10_000, 500, "rows in the one bulk INSERT")
    content_bytes: int = runner.option(200, None, "message content bytes")


@dataclass
class Bulk:
    rows: int
    sockets: int
    commit_to_first_ms: float
    commit_to_last_ms: float
    frames_per_second: float
    delivery: Delivery


@dataclass
class Ingest:
    writers: int
    sockets: int
    limit: InsertRate  # pgbench with the bare NOTIFY trigger instead of pgcast's
    pgcast: InsertRate
    delivery: Delivery

    @property
    def ratio(self) -> float:
        return ratio(self.pgcast.tx_per_second, self.limit.tx_per_second)


@dataclass
class IngestResult(Result):
    ingest: list[Ingest]
    bulk: Bulk

    def render(self) -> list[str]:
        b = self.bulk
        ingest = [
            f"{i.sockets:,} | {i.writers} | {render.num(i.limit.tx_per_second)} | "
            f"{render.num(i.pgcast.tx_per_second)} | **{i.ratio:.2f}** | "
            f"{render.num(i.delivery.frames_per_second)} | {i.delivery.closed_sockets}"
            for i in self.ingest
        ]
        return [
            *render.table(
                "sockets | writers | bare NOTIFY limit tx/s | pgcast tx/s | **pgcast / limit** "
                "| frames/s to sockets | sockets closed as too slow",
                ingest,
            ),
            "",
            f"Bulk: one INSERT of {b.rows:,} rows to {b.sockets:,} sockets: first frame "
            f"{b.commit_to_first_ms:.0f} ms and last frame on the last socket "
            f"{b.commit_to_last_ms:,.0f} ms after COMMIT; {render.num(b.frames_per_second)} "
            f"frames/s; {b.delivery.frames:,} of {b.rows * b.sockets:,} frames.",
        ]


async def measure(run: runner.Run[Options]) -> IngestResult:
    o = run.options
    with connect(run.conninfo, autocommit=True) as conn:
        writer_id = create_user(conn, "bench-writer@example.com", "Bench writer")
        set_variant(conn, "pgcast")
    ingests: list[Ingest] = []

    def pgbench(variant: str, writers: int) -> InsertRate:
        with connect(run.conninfo, autocommit=True) as conn:
            set_variant(conn, variant)
            reset_tables(conn)
        return pgbench_inserts(
            run.conninfo, writers, o.seconds, writer_id, o.content_bytes, run.workdir
        )

    def ids(conn: psycopg.Connection[Any], query: str, **params: int) -> tuple[list[int], float]:
        """The ids the query returns (its one transaction) and when COMMIT returned."""
        found = [row[0] for row in conn.execute(query, params).fetchall()]
        conn.commit()
        return found, time.time()

    async with pgcast_session(run) as s:
        fleet = ReceiverProcess(RECEIVERS_NICE, s.server.port, s.cookie)
        try:
            for sockets in sorted(o.sockets):
                opened = await fleet.call("ensure", sockets)
                for writers in o.writers:
                    limit = await asyncio.to_thread(pgbench, "notify", writers)
                    await fleet.call("start")
                    rate = await asyncio.to_thread(pgbench, "pgcast", writers)
                    written, _ = await asyncio.to_thread(ids, s.writer, "SELECT id FROM messages")
                    got = await fleet.call("finish", written, DRAIN_SECONDS)
                    ingests.append(Ingest(writers, opened, limit, rate, got))
            await fleet.call("start", o.bulk_rows)
            bulk = {"user_id": s.user_id, "rows": o.bulk_rows, "chars": o.content_bytes}
            written, committed = await asyncio.to_thread(ids, s.writer, BULK_INSERT, **bulk)
            got = await fleet.call("finish", written, DRAIN_SECONDS)
            after = (1000 * (got.first_at - committed), 1000 * (got.last_at - committed))
            fps = ratio(got.frames, got.last_at - committed)
            result = Bulk(o.bulk_rows, opened, *after, fps, got)
        finally:
            await fleet.close()
    problems = s.server.exit_problems()
    labelled = [(f"ingest with {i.writers} writers", i.delivery) for i in ingests]
    for label, got in [("bulk", result.delivery), *labelled]:
        if got.duplicates:
            problems.append(f"{label}: {got.duplicates} duplicate frames")
        if got.losses and not got.closed_sockets:
            problems.append(f"{label}: {got.losses} frames lost on sockets that stayed open")
    return IngestResult(ingests, result, problems=problems)


SCENARIO = runner.Scenario("ingest", "ingest and bulk", Options, measure)
