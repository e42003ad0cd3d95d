"""pgcast against two peers on the same database, clients and messages: encode/broadcaster and
a Node pg + ws server, steady rows and a burst. bench/README.md says how it is measured."""

import importlib.util
import signal
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import quote, urlencode

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench.lib import render, runner, servers
from bench.lib.database import create_user, set_triggers
from bench.lib.receivers import HOST, Fleet, close_sockets
from bench.lib.results import BenchError, Burst, Result, Steady
from bench.lib.servers import BENCH_DIR, Meter, PgcastProcess, ServerProcess, usage_notes
from bench.lib.writers import Session, burst_phase, connect, steady_phase

NODE_DIR = BENCH_DIR / "peers" / "node"
PYTHON_PEER = ("broadcaster", "asyncpg", "starlette", "uvicorn")
UVICORN = (sys.executable, "-m", "uvicorn", "bench.peers.broadcaster_app:app", "--host", HOST)
BROADCASTER = (*UVICORN, "--port", "{port}", "--log-level", "warning")
# Each peer's label and command line, "{port}" replaced by its port.
PEERS = {
    "broadcaster": ("broadcaster + uvicorn", BROADCASTER),
    "node": ("Node pg + ws", ("node", f"{NODE_DIR}/server.mjs")),
}
LABELS = {"pgcast": "pgcast", **{key: label for key, (label, _) in PEERS.items()}}
# Each peer's own row trigger (bench/peers/triggers.sql), NOTIFYing `{key}_messages`.
TRIGGERS = {"pgcast": "messages_broadcast_insert", **{k: f"{k}_notify_insert" for k in PEERS}}


@dataclass
class Options(runner.Options):
    steady_sockets: tuple[int, ...] = runner.option((200, 1000, 50), (5, 10, 3), "steady sockets")
    steady_rates: tuple[float, ...] = runner.option((100.0, 20.0, 1e3), (50.0, 20.0, 1e2), "msg/s")
    steady_seconds: float = runner.option(10.0, 1.0, "seconds per steady row", minimum=0.1)
    sockets: int = runner.option(100, 5, "burst sockets")
    burst: int = runner.option(2000, 200, "burst messages")
    batch: int = runner.option(100, 20, "rows per INSERT in the burst")
    content_chars: int = runner.option(100, None, "message length")
    rounds: int = runner.option(3, 1, "rounds of every server's steady rows, the order rotating")

    def check(self) -> str | None:
        rows = list(zip(self.steady_sockets, self.steady_rates, strict=False))
        if len(self.steady_sockets) != len(self.steady_rates) or len(set(rows)) < len(rows):
            return "--steady-sockets and --steady-rates must list as many numbers, no pair twice"
        return None


@dataclass
class Medians:
    """A steady row of a server: each figure's median over the rounds, each round's CPU."""

    sockets: int
    target_rate: float
    server_us_per_frame: float
    p50: float
    p99: float
    rounds: list[float]

    @classmethod
    def of(cls, rows: list[Steady]) -> Self:
        cpu, median = [r.server_us_per_frame for r in rows], statistics.median
        p50, p99 = (median(getattr(r.latency, p) for r in rows) for p in ("p50", "p99"))
        return cls(rows[0].delivery.sockets, rows[0].target_rate, median(cpu), p50, p99, cpu)


@dataclass
class ServerRun:
    key: str
    rows: list[Steady] = field(default_factory=list)  # each round's steady rows, round by round
    burst: Burst | None = None
    exit_codes: list[int | None] = field(default_factory=list)  # one per round

    def medians(self) -> list[Medians]:
        """Each steady row's medians over the rounds, in the order of the options."""
        rounds: dict[tuple[int, float], list[Steady]] = {}
        for row in self.rows:
            rounds.setdefault((row.delivery.sockets, row.target_rate), []).append(row)
        return [Medians.of(rows) for rows in rounds.values()]


# A figure of a steady row or the burst: its label, value and format.
Figure = tuple[str, Callable[[Any], float], Callable[[float | None], str]]
STEADY: list[Figure] = [
    ("**server CPU per frame (µs)**", lambda m: m.server_us_per_frame, render.us),
    ("**commit→socket p50 (ms)**", lambda m: m.p50, lambda v: render.num(v, 1)),
    ("**commit→socket p99 (ms)**", lambda m: m.p99, lambda v: render.num(v, 1)),
]
BURST: list[Figure] = [
    ("burst: **frames/s** (higher is better)", lambda b: b.frames_per_second, render.num),
    ("burst: **server CPU per frame (µs)**", lambda b: b.server_us_per_frame, render.us),
]


@dataclass
class CompareResult(Result):
    servers: list[ServerRun]

    def table(self) -> list[str]:
        """A row a figure: each steady row's medians and each round's CPU, then the burst's."""
        keys, medians = [LABELS[r.key] for r in self.servers], [r.medians() for r in self.servers]
        lines: list[list[str]] = []

        def add(label: str, got: list[Any], shown: Callable[[Any], str]) -> None:
            lines.append([label, *map(shown, got), *(render.x(got[0], v) for v in got[1:])])

        for n, row in enumerate(max(medians, key=len)):
            found = [m[n] if n < len(m) else None for m in medians]
            label = f"{row.sockets:,} × {row.target_rate:g}/s: "
            for name, value, shown in STEADY:
                add(label + name, [f and value(f) for f in found], shown)
            rounds = [f.rounds if f else [] for f in found]
            if max(map(len, rounds)) > 1:  # pgcast / peer round by round: rounds minutes apart
                cells = [", ".join(map(render.us, r)) for r in rounds]
                cells += [", ".join(map(render.x, rounds[0], r)) for r in rounds[1:]]
                lines.append([f"{label}server CPU per frame each round (µs)", *cells])
        for name, value, shown in BURST:
            add(name, [r.burst and value(r.burst) for r in self.servers], shown)
        ratios = [f"pgcast / {key}" for key in keys[1:]]
        return render.table(" | ".join(["figure", *keys, *ratios]), lines)

    def render(self) -> list[str]:
        o, rounds = self.options, self.options.get("rounds", 1)
        how = f"{rounds} rounds, each starting with the next server; each figure their median"
        return [
            "Each server alone, with only its own insert trigger enabled. Steady rows: "
            f"{o['steady_seconds']:g} s each, one transaction per message, "
            f"{how if rounds > 1 else 'one round'}. Burst (in the first round): {o['burst']} "
            f"messages in INSERTs of {o['batch']} rows to {o['sockets']} sockets. Ratios are "
            "pgcast ÷ peer (of the medians).",
            "",
            *self.table(),
        ]


def check_peers() -> None:
    """Both peers installed (`make bench-install`), before anything runs."""
    missing = [name for name in PYTHON_PEER if importlib.util.find_spec(name) is None]
    missing += [] if (NODE_DIR / "node_modules").is_dir() else [f"{NODE_DIR}/node_modules"]
    if missing:
        raise BenchError(f"the peers need {', '.join(missing)}: run make bench-install")


def database_url(conninfo: str) -> str:
    """A postgresql:// URL from a libpq conninfo string: asyncpg and node-postgres both read
    host, port, user, password and sslmode from its query."""
    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v}
    return f"postgresql:///{quote(params.pop('dbname', ''), safe='')}?{urlencode(params)}"


async def start_peer(key: str, url: str) -> ServerProcess:
    """A peer listening on the channel its own trigger NOTIFYs, once `/ready` answers."""
    label, argv = PEERS[key]
    port = servers.free_port()
    channel = f"{key}_messages"
    env = servers.clean_env(DATABASE_URL=url, HOST=HOST, PORT=str(port), NOTIFY_CHANNEL=channel)
    command = [part.replace("{port}", str(port)) for part in argv]
    server = await ServerProcess.spawn(label, command, env, port)
    await server.wait_ready("/ready")
    return server


async def run_server(run: runner.Run[Options], result: ServerRun) -> None:
    """One round of a server: its steady rows, then the burst if it has none yet."""
    o, key = run.options, result.key
    with psycopg.connect(run.conninfo, autocommit=True) as conn:
        set_triggers(conn, (TRIGGERS[key],), tuple(TRIGGERS.values()))
    pgcast, url = key == "pgcast", database_url(run.conninfo)
    start = PgcastProcess.start(run.conninfo, run.workdir) if pgcast else start_peer(key, url)
    with connect(run.conninfo) as writer:
        async with await start as server:
            if pgcast:
                user_id, cookie = await server.sign_in()
            else:
                user_id, cookie = create_user(writer, "bench@example.com", "Bench"), None
            meter = Meter.for_server(server.pid, run.postmaster)
            s, chars = Session(server, meter, user_id, cookie, writer), o.content_chars
            fleet = Fleet(server.port, cookie, first_alone=key == "broadcaster")
            try:
                for sockets, rate in zip(o.steady_sockets, o.steady_rates, strict=True):
                    await fleet.ensure(sockets)
                    messages = max(1, round(rate * o.steady_seconds))
                    steady = await steady_phase(s, fleet.receivers, messages, rate, chars)
                    result.rows.append(steady)
                    await fleet.settle()
                if result.burst is None:
                    await fleet.ensure(o.sockets)
                    burst = await burst_phase(s, fleet.receivers, o.burst, o.batch, chars)
                    result.burst = burst[0]
            finally:
                await close_sockets(fleet.receivers)
    result.exit_codes.append(server.exit_code)


def judge(runs: list[ServerRun], per_round: int) -> tuple[list[str], list[str]]:
    problems, notes = [], []
    for r in runs:
        label = LABELS[r.key]
        rows = [(n // per_round + 1, row) for n, row in enumerate(r.rows)]
        phases = [(f"round {n} {s.delivery.sockets} x {s.target_rate:g}/s", s) for n, s in rows]
        for phase, figures in phases + ([("burst", r.burst)] if r.burst else []):
            if r.key == "pgcast":
                problems += figures.delivery.problems(f"{label} {phase}")
            elif not figures.delivery.ok:
                # A peer that falls behind is a finding about the peer, not a failed bench:
                # its figures cover what arrived.
                late = figures.delivery.describe()
                notes.append(f"{label} {phase}: not everything arrived in time ({late})")
            notes += usage_notes([(f"{label} {phase}", figures.usage)])
            if isinstance(figures, Steady) and figures.achieved_rate < 0.9 * figures.target_rate:
                reached = f"{figures.achieved_rate:.0f} msg/s, one transaction at a time"
                notes.append(f"{label} {phase}: the writer reached {reached}")
        # uvicorn shuts down gracefully on SIGTERM, then raises it again: it exits with -15.
        clean = (0, None) if r.key == "pgcast" else (0, -signal.SIGTERM, None)
        problems += [f"{label} exited with {code}" for code in r.exit_codes if code not in clean]
    return problems, notes


def order(runs: list[ServerRun], rounds: int) -> list[ServerRun]:
    """Every round's servers in turn, each round starting with the next one: none always runs
    first or last, so drift on a shared machine falls on all alike."""
    return [runs[(n + i) % len(runs)] for n in range(rounds) for i in range(len(runs))]


async def measure(run: runner.Run[Options]) -> CompareResult:
    check_peers()
    with psycopg.connect(run.conninfo, autocommit=True) as conn:
        conn.execute((BENCH_DIR / "peers" / "triggers.sql").read_text())
    runs = [ServerRun(key) for key in LABELS]
    for result in order(runs, run.options.rounds):
        await run_server(run, result)
    problems, notes = judge(runs, len(run.options.steady_sockets))
    return CompareResult(runs, problems=problems, notes=notes)


SCENARIO = runner.Scenario("compare", "against its peers", Options, measure)
