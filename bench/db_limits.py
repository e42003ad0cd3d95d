"""Database limits: INSERT transactions/s into `messages` with and without NOTIFY triggers.
bench/README.md says how it is measured."""

import asyncio
import math
from dataclasses import dataclass

from psycopg import sql

from bench.lib import render, runner
from bench.lib.database import BARE_CHANNEL, VARIANTS, create_user, reset_tables, set_variant
from bench.lib.results import BenchError, Result, ratio
from bench.lib.writers import InsertRate, connect, pgbench_inserts

RATIOS = (("notify", "none"), ("pgcast", "notify"), ("pgcast", "none"))
SETTINGS = ("synchronous_commit", "fsync", "wal_sync_method", "shared_buffers", "max_connections")
# Fires on UPDATE only, so it costs an INSERT nothing; left as the migrations set it.
UNTOUCHED_TRIGGERS = frozenset({"messages_touch_updated_at"})
# Connections PostgreSQL needs beside the writers: this process, autovacuum, a spare.
CONNECTION_HEADROOM = 3
COUNTS = "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM broadcasts)"


@dataclass
class Options(runner.Options):
    writers: tuple[int, ...] = runner.option((1, 4, 16), (1, 4), "concurrent pgbench clients")
    seconds: int = runner.option(8, 1, "seconds per measurement")
    content_bytes: int = runner.option(200, None, "characters of content per message")


@dataclass
class Measurement:
    variant: str
    rate: InsertRate
    triggers: list[str]
    rows: int
    events: int

    def problems(self) -> list[str]:
        label, rate = f"{self.variant} at writers={self.rate.writers}", self.rate
        found: list[str] = []
        if set(self.triggers) - UNTOUCHED_TRIGGERS != set(VARIANTS[self.variant]):
            found.append(f"{label}: enabled triggers on messages were {self.triggers}")
        if rate.transactions < 1 or rate.failed:
            found.append(f"{label}: {rate.transactions} committed, {rate.failed} failed")
        # A transaction in flight when pgbench's time ran out may commit without being counted.
        if not rate.transactions <= self.rows <= rate.transactions + rate.writers:
            found.append(f"{label}: {self.rows} rows in messages for {rate.transactions} tx")
        if self.events != (self.rows if self.variant == "pgcast" else 0):
            found.append(f"{label}: {self.events} broadcasts rows")
        return found


@dataclass
class DbLimitsResult(Result):
    postgres: str
    settings: dict[str, str]
    measurements: list[Measurement]

    def render(self) -> list[str]:
        rows = []
        tx = {(m.variant, m.rate.writers): m.rate.tx_per_second for m in self.measurements}
        for w in self.options["writers"]:
            rates = {v: tx.get((v, w), math.nan) for v in VARIANTS}
            ratios = [f"{ratio(rates[top], rates[bottom]):.2f}" for top, bottom in RATIOS]
            rows.append([w, *map(render.num, rates.values()), *ratios])
        return [
            f"PostgreSQL {self.postgres}, its pgbench `-M prepared`, min(writers, CPUs) "
            f"threads. One transaction = one single-row `INSERT INTO messages` of "
            f"{self.options['content_bytes']} characters; {self.options['seconds']} s per "
            "measurement, tables truncated before each, nobody LISTENs. "
            + ", ".join(f"{name}={self.settings[name]}" for name in SETTINGS)
            + ".",
            "",
            *render.table(
                "writers | no trigger tx/s | bare NOTIFY tx/s | pgcast triggers tx/s "
                "| NOTIFY / none | pgcast / NOTIFY | pgcast / none",
                rows,
            ),
            "",
            "none: pgcast's broadcast triggers disabled. notify: only a statement-level "
            f"`pg_notify('{BARE_CHANNEL}', '')` trigger. pgcast: pgcast's triggers (event-log "
            "insert + one empty NOTIFY per statement).",
        ]


def _measure(run: runner.Run[Options]) -> DbLimitsResult:
    o = run.options
    with connect(run.conninfo, autocommit=True) as conn:
        show = [
            conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(n))).fetchone()
            for n in ("server_version", *SETTINGS)
        ]
        version, *settings = [str(row[0]) if row else "?" for row in show]
        facts = dict(zip(SETTINGS, settings, strict=True))
        if max(o.writers) + CONNECTION_HEADROOM > int(facts["max_connections"]):
            raise BenchError(f"{max(o.writers)} writers do not fit in max_connections")
        user_id = create_user(conn, "bench-writer@example.com", "Bench writer")
        set_variant(conn, "none")
        checkpoints = reset_tables(conn)
        args = (user_id, o.content_bytes, run.workdir)
        # The first connections and pages of a fresh server are slower: not measured.
        pgbench_inserts(run.conninfo, o.writers[0], 1, *args)
        measurements = []
        # Writer count outer, variant inner: the variants compared at one count run back to
        # back, so a change in the machine's other load moves their ratio least.
        for writers in o.writers:
            for variant in VARIANTS:
                triggers = set_variant(conn, variant)
                reset_tables(conn)
                rate = pgbench_inserts(run.conninfo, writers, o.seconds, *args)
                row = conn.execute(COUNTS).fetchone()
                assert row is not None
                measurements.append(Measurement(variant, rate, triggers, *row))
    notes = [] if checkpoints else ["the role may not CHECKPOINT: measurements may start mid-one"]
    problems = [p for m in measurements for p in m.problems()]
    return DbLimitsResult(version, facts, measurements, problems=problems, notes=notes)


async def measure(run: runner.Run[Options]) -> DbLimitsResult:
    return await asyncio.to_thread(_measure, run)


SCENARIO = runner.Scenario("db_limits", "database limits", Options, measure)
