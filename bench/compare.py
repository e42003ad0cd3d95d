"""pgcast against two peers on the same database, clients and messages: encode/broadcaster's
Postgres backend behind Starlette on uvicorn, and a hand-written Node server (pg + ws), each
NOTIFYing from its own row trigger (bench/peers/), each alone with only its own trigger on:
steady rows (S sockets x R messages/s, one transaction per message: server CPU per delivered
frame, commit->socket p50/p99) and a burst (frames/s, server CPU per frame). Every socket must
get every message exactly once, in commit order; ratios are pgcast / peer.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bench.lib import render, runner
from bench.lib.database import create_user
from bench.lib.meters import Meter, usage_notes
from bench.lib.receivers import HOST, Fleet, close_sockets
from bench.lib.results import BenchError, Burst, Result, Steady
from bench.lib.servers import BENCH_DIR, Peer, PgcastProcess, ServerProcess
from bench.lib.writers import burst_phase, connect, steady_phase

NODE_DIR = BENCH_DIR / "peers" / "node"
PGCAST_TRIGGER = "messages_broadcast_insert"
PYTHON_PEER = ("broadcaster", "asyncpg", "starlette", "uvicorn")
PEERS = {
    "broadcaster": Peer(
        "broadcaster",
        "broadcaster + uvicorn",
        "broadcaster_notify_insert",
        "broadcaster_messages",
        (
            sys.executable,
            "-m",
            "uvicorn",
            "bench.peers.broadcaster_app:app",
            "--host",
            HOST,
            "--port",
            "{port}",
            "--log-level",
            "warning",
        ),
    ),
    "node": Peer(
        "node",
        "Node pg + ws",
        "node_notify_insert",
        "node_messages",
        ("node", str(NODE_DIR / "server.mjs")),
    ),
}
LABELS = {"pgcast": "pgcast", **{key: peer.label for key, peer in PEERS.items()}}


@dataclass
class Options(runner.Options):
    steady_sockets: tuple[int, ...] = runner.option(
        (200, 1000, 50), (5, 10, 3), "steady rows' sockets"
    )
    steady_rates: tuple[float, ...] = runner.option(
        (100.0, 20.0, 1000.0), (50.0, 20.0, 100.0), "their msg/s"
    )
    steady_seconds: float = runner.option(10.0, 1.0, "seconds per steady row", minimum=0.1)
    sockets: int = runner.option(100, 5, "burst sockets")
    burst: int = runner.option(2000, 200, "burst messages")
    batch: int = runner.option(100, 20, "rows per INSERT in the burst")
    content_chars: int = runner.option(100, None, "message length")

    def check(self) -> str | None:
        if len(self.steady_sockets) != len(self.steady_rates):
            return "--steady-sockets and --steady-rates must list as many numbers"
        return None


@dataclass
class Row:
    sockets: int
    steady: Steady


@dataclass
class ServerRun:
    key: str
    rows: list[Row] = field(default_factory=list)
    burst: Burst | None = None
    exit_code: int | None = None
    error: str | None = None


# A figure of a steady row or the burst: its label, value and format.
Figure = tuple[str, Callable[[ServerRun], float | None], Callable[[float], str]]
STEADY: list[tuple[str, Callable[[Steady], float], Callable[[float], str]]] = [
    ("**server CPU per frame (µs)**", lambda s: s.server_us_per_frame, render.us),
    ("**commit→socket p50 (ms)**", lambda s: s.latency.p50, lambda v: render.num(v, 1)),
    ("**commit→socket p99 (ms)**", lambda s: s.latency.p99, lambda v: render.num(v, 1)),
]
BURST: list[tuple[str, Callable[[Burst], float], Callable[[float], str]]] = [
    ("**frames/s** (higher is better)", lambda b: b.frames_per_second, render.rate),
    ("**server CPU per frame (µs)**", lambda b: b.server_us_per_frame, render.us),
]


@dataclass
class CompareResult(Result):
    burst_messages: int
    burst_sockets: int
    batch: int
    steady_seconds: float
    servers: list[ServerRun]
    versions: dict[str, str]

    def _table(self, figures: list[Figure]) -> list[str]:
        runs = self.servers
        pgcast = next((r for r in runs if r.key == "pgcast"), None)
        peers = [r for r in runs if r.key != "pgcast"] if pgcast else []
        header = " | ".join(
            [
                "figure",
                *(LABELS[r.key] for r in runs),
                *(f"pgcast / {LABELS[p.key]}" for p in peers),
            ]
        )
        rows = []
        for label, value, shown in figures:
            cells = [
                label,
                *(render.num(None) if (v := value(r)) is None else shown(v) for r in runs),
            ]
            ours = value(pgcast) if pgcast else None
            rows.append(cells + [render.x(ours, value(p)) for p in peers])
        return render.table(header, rows)

    def steady_table(self) -> list[str]:
        figures: list[Figure] = []
        for n, (sockets, rate) in enumerate(self.rows()):
            for label, value, shown in STEADY:

                def get(
                    r: ServerRun, n: int = n, value: Callable[[Steady], float] = value
                ) -> float | None:
                    return value(r.rows[n].steady) if n < len(r.rows) else None

                figures.append((f"{sockets:,} × {rate:g}/s: {label}", get, shown))
        return self._table(figures)

    def burst_table(self) -> list[str]:
        return self._table(
            [
                (label, lambda r, v=value: v(r.burst) if r.burst else None, shown)
                for label, value, shown in BURST
            ]
        )

    def rows(self) -> list[tuple[int, float]]:
        done = max(self.servers, key=lambda r: len(r.rows))
        return [(row.sockets, row.steady.target_rate) for row in done.rows]

    def render(self) -> list[str]:
        return [
            f"Each server alone, with only its own insert trigger enabled. Steady rows: "
            f"{self.steady_seconds:g} s each, one transaction per message.",
            "",
            *self.steady_table(),
            "",
            f"Burst: {self.burst_messages} messages in INSERTs of {self.batch} rows to "
            f"{self.burst_sockets} sockets.",
            "",
            *self.burst_table(),
            "",
            "Ratios are pgcast ÷ peer. Versions: "
            + ", ".join(f"{name} {version}" for name, version in self.versions.items()),
        ]


def set_up_peer(key: str) -> None:
    if key == "broadcaster":
        missing = [name for name in PYTHON_PEER if importlib.util.find_spec(name) is None]
        if missing:
            raise BenchError(f"the broadcaster peer needs {', '.join(missing)}: make bench-install")
        return
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise BenchError("the Node peer needs Node.js 20+ and npm on PATH")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    if int(version.strip().lstrip("v").split(".")[0]) < 20:
        raise BenchError(f"the Node peer needs Node.js 20+, found {version.strip()}")
    stamp, lock = NODE_DIR / "node_modules" / ".package-lock.json", NODE_DIR / "package-lock.json"
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        npm_ci = [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"]
        done = subprocess.run(npm_ci, cwd=NODE_DIR, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"npm ci in {NODE_DIR} failed: {done.stderr.strip()[-2000:]}")


def database_url(conninfo: str) -> str:
    """A postgresql:// URL for asyncpg and node-postgres from a libpq conninfo string."""
    p = conninfo_to_dict(conninfo)
    auth = quote(str(p.get("user") or ""), safe="")
    if p.get("password"):
        auth += ":" + quote(str(p["password"]), safe="")
    host, query = str(p.get("host") or ""), {k: str(p[k]) for k in ("sslmode",) if p.get(k)}
    if host.startswith("/"):
        query["host"], host = host, ""
    elif ":" in host:
        host = f"[{host}]"
    host += f":{p['port']}" if p.get("port") else ""
    url = f"postgresql://{auth}@{host}/{quote(str(p.get('dbname') or ''), safe='')}"
    return f"{url}?{urlencode(query)}" if query else url


def use_trigger(conninfo: str, key: str) -> None:
    """Enable the insert trigger of `key` on messages, disable the others'."""
    wanted = PGCAST_TRIGGER if key == "pgcast" else PEERS[key].trigger
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for name in (PGCAST_TRIGGER, *(peer.trigger for peer in PEERS.values())):
            action = sql.SQL("ENABLE" if name == wanted else "DISABLE")
            conn.execute(
                sql.SQL("ALTER TABLE messages {} TRIGGER {}").format(action, sql.Identifier(name))
            )


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in ("aiohttp", *PYTHON_PEER, "uvloop", "websockets"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "missing"
    if node := shutil.which("node"):
        found["node"] = subprocess.run(
            [node, "--version"], capture_output=True, text=True
        ).stdout.strip()
    for name in ("pg", "ws"):
        if (manifest := NODE_DIR / "node_modules" / name / "package.json").exists():
            found[f"npm {name}"] = json.loads(manifest.read_text())["version"]
    return found


async def run_server(key: str, run: runner.Run[Options]) -> ServerRun:
    o, result = run.options, ServerRun(key)
    await asyncio.to_thread(use_trigger, run.conninfo, key)
    writer = connect(run.conninfo)
    server: ServerProcess | None = None
    try:
        if key == "pgcast":
            pgcast = await PgcastProcess.start(run.conninfo, run.workdir)
            server, (user_id, cookie) = pgcast, await pgcast.sign_in()
        else:
            await asyncio.to_thread(set_up_peer, key)
            server = await PEERS[key].start(database_url(run.conninfo))
            user_id, cookie = create_user(writer, "bench@example.com", "Bench"), None
        meter = Meter.for_server(server.pid, run.postmaster)
        fleet = Fleet(server.port, cookie, first_alone=key == "broadcaster")
        try:
            for sockets, rate in zip(o.steady_sockets, o.steady_rates, strict=True):
                await fleet.ensure(sockets)
                messages = max(1, round(rate * o.steady_seconds))
                steady = await steady_phase(
                    writer, user_id, fleet.receivers, meter, messages, rate, o.content_chars
                )
                result.rows.append(Row(sockets, steady))
                await fleet.settle()
                print(f"compare: {key} {sockets} x {rate:g}/s done", file=sys.stderr)
            await fleet.ensure(o.sockets)
            burst = (o.burst, o.batch, o.content_chars)
            result.burst, _, _ = await burst_phase(writer, user_id, fleet.receivers, meter, *burst)
        finally:
            await close_sockets(fleet.receivers)
    except BenchError as error:
        result.error = str(error)
    finally:
        writer.close()
        if server is not None:
            result.exit_code = await server.stop()
    return result


def judge(runs: list[ServerRun]) -> tuple[list[str], list[str]]:
    problems, notes = [], []
    for r in runs:
        label = LABELS[r.key]
        if r.error is not None:
            problems.append(f"{label} could not run: {r.error}")
        phases = [
            (f"{row.sockets} x {row.steady.target_rate:g}/s", row.steady.delivery, row.steady.usage)
            for row in r.rows
        ]
        phases += [("burst", r.burst.delivery, r.burst.usage)] if r.burst else []
        for phase, delivery, usage in phases:
            if r.key == "pgcast":
                problems += delivery.problems(f"{label} {phase}")
            elif not delivery.ok:
                # A peer that falls behind is a finding about the peer, not a failed bench:
                # its figures cover what arrived.
                notes.append(
                    f"{label} {phase}: not everything arrived in time ({delivery.describe()})"
                )
            notes += usage_notes([(f"{label} {phase}", usage)])
        for row in r.rows:
            if row.steady.achieved_rate < 0.9 * row.steady.target_rate:
                notes.append(
                    f"{label} {row.sockets} x {row.steady.target_rate:g}/s: the writer reached "
                    f"{row.steady.achieved_rate:.0f} msg/s, one transaction at a time"
                )
        if r.burst is not None and not r.burst.completed and r.burst.delivery.ok:
            problems.append(f"{label} burst did not complete in time")
        # uvicorn shuts down gracefully on SIGTERM, then raises it again: it exits with -15.
        if r.exit_code not in ((0, None) if r.key == "pgcast" else (0, -signal.SIGTERM, None)):
            problems.append(f"{label} exited with {r.exit_code}")
    return problems, notes


async def measure(run: runner.Run[Options]) -> CompareResult:
    o = run.options
    with psycopg.connect(run.conninfo, autocommit=True) as conn:
        conn.execute((BENCH_DIR / "peers" / "triggers.sql").read_text())
    runs = [await run_server(key, run) for key in LABELS]
    problems, notes = judge(runs)
    return CompareResult(
        o.burst,
        o.sockets,
        o.batch,
        o.steady_seconds,
        runs,
        versions(),
        problems=problems,
        notes=notes,
    )


SCENARIO = runner.Scenario("compare", "against its peers", __doc__, Options, measure)

if __name__ == "__main__":
    sys.exit(runner.main(SCENARIO))
