"""pgcast against two peers on the same database, load and clients, in one run.

    .venv/bin/python bench/compare.py [--sockets 100] [--burst 2000] [--smoke]

Peers (bench/peers/README.md): encode/broadcaster's Postgres backend behind Starlette on
uvicorn, and a hand-written Node.js server (pg + ws). Each NOTIFYs from its own row trigger
(bench/peers/triggers.sql) with the message as the payload.

1. One PostgreSQL (embedded, or a fresh database on DATABASE_URL's server, as bench/quick.py),
   migrated, plus the peers' triggers. Before each server runs, only its own insert trigger is
   enabled on `messages` (pgcast's statement trigger, or the peer's row trigger).
2. Each server, one at a time, as its own child process on a free port of 127.0.0.1: N sockets
   (bench.quick's Receiver), then the latency phase (one writer thread, M messages at R/s, one
   transaction each: receive time - commit time per (socket, message)), then the fan-out phase
   (B messages in INSERTs of K rows, back to back: frames / (last frame - first frame)).
   Server CPU and peak RSS, PostgreSQL and load-generator CPU per phase. Every socket must get
   every message exactly once and in commit order.
3. A Markdown table with one column per server and pgcast / peer ratios, printed and written
   to bench/out/compare-<UTC timestamp>.md.

`run(parse_args([...]))` returns every figure as a dict; `problems` lists delivery failures and
servers that could not run (empty = ok).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

if __package__ in (None, ""):  # run as a script: bench/compare.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.quick import (
    BENCH_DIR,
    GIL_SWITCH_INTERVAL,
    HOST,
    BenchError,
    FanoutResult,
    LatencyResult,
    Meter,
    Receiver,
    ServerProcess,
    _delivery_dict,
    _raise_open_file_limit,
    _ratio,
    _us_per_frame,
    _usage_dict,
    add_report_options,
    bench_database,
    bench_main,
    close_sockets,
    connect_writer,
    fanout_phase,
    finish_report,
    free_port,
    latency_phase,
    open_sockets,
    run_load_generator,
    run_pgcast,
    save_report,
    settle_options,
    try_open_sockets,
    usage_notes,
)

PEERS_DIR = BENCH_DIR / "peers"
NODE_DIR = PEERS_DIR / "node"
PEER_TRIGGERS_SQL = PEERS_DIR / "triggers.sql"
PGCAST_INSERT_TRIGGER = "messages_broadcast_insert"
NPM_CI = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]
NODE_MAJOR_MIN = 20
PYTHON_PEER_MODULES = ("broadcaster", "asyncpg", "starlette", "uvicorn")
BENCH_EMAIL = "bench@example.com"

DEFAULTS: dict[str, Any] = {
    "sockets": 100,
    "messages": 500,
    "rate": 100.0,
    "burst": 2000,
    "batch": 100,
    "content_chars": 100,
}
SMOKE: dict[str, Any] = {
    "sockets": 5,
    "messages": 40,
    "rate": 50.0,
    "burst": 200,
    "batch": 20,
    "content_chars": 100,
}


@dataclass(frozen=True)
class Peer:
    key: str
    label: str
    trigger: str
    channel: str
    argv: tuple[str, ...]  # "{port}" is replaced by the port


PEERS: dict[str, Peer] = {
    "broadcaster": Peer(
        key="broadcaster",
        label="broadcaster + uvicorn",
        trigger="broadcaster_notify_insert",
        channel="broadcaster_messages",
        argv=(
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
        key="node",
        label="Node pg + ws",
        trigger="node_notify_insert",
        channel="node_messages",
        argv=("node", str(NODE_DIR / "server.mjs")),
    ),
}
SERVERS = ("pgcast", *PEERS)
LABELS = {"pgcast": "pgcast", **{key: peer.label for key, peer in PEERS.items()}}


# --------------------------------------------------------------------------------------------
# Setup


def check_python_peer() -> None:
    missing = [name for name in PYTHON_PEER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise BenchError(
            f"the broadcaster peer needs {', '.join(missing)}: "
            ".venv/bin/pip install -e '.[test,bench]'"
        )


def install_node_peer() -> None:
    """`npm ci` in bench/peers/node when node_modules is missing or older than the lock file."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise BenchError("the Node peer needs Node.js 20+ and npm on PATH")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < NODE_MAJOR_MIN:
        raise BenchError(f"the Node peer needs Node.js {NODE_MAJOR_MIN}+, found {version}")
    stamp = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    done = subprocess.run(NPM_CI, cwd=NODE_DIR, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"npm ci in {NODE_DIR} failed: {done.stderr.strip()[-2000:]}")


def database_url(conninfo: str) -> str:
    """A postgresql:// URL for asyncpg and node-postgres from a libpq conninfo string."""
    params = conninfo_to_dict(conninfo)
    auth = quote(str(params.get("user") or ""), safe="")
    if params.get("password"):
        auth += ":" + quote(str(params["password"]), safe="")
    host = str(params.get("host") or "")
    query: dict[str, str] = {}
    if host.startswith("/"):
        query["host"] = host
        host = ""
    elif ":" in host:
        host = f"[{host}]"
    if params.get("port"):
        host += f":{params['port']}"
    if params.get("sslmode"):
        query["sslmode"] = str(params["sslmode"])
    dbname = quote(str(params.get("dbname") or ""), safe="")
    url = f"postgresql://{auth}@{host}/{dbname}"
    return f"{url}?{urlencode(query)}" if query else url


def install_peer_triggers(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(PEER_TRIGGERS_SQL.read_text())


def use_trigger(conninfo: str, server: str) -> None:
    """Enable the insert trigger of `server` on messages, disable the others'."""
    wanted = PGCAST_INSERT_TRIGGER if server == "pgcast" else PEERS[server].trigger
    names = [PGCAST_INSERT_TRIGGER, *(peer.trigger for peer in PEERS.values())]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for name in names:
            conn.execute(
                sql.SQL("ALTER TABLE messages {} TRIGGER {}").format(
                    sql.SQL("ENABLE" if name == wanted else "DISABLE"), sql.Identifier(name)
                )
            )


def bench_user(conn: psycopg.Connection[Any]) -> int:
    """The user bench.quick's dev login creates, made here when pgcast did not run first."""
    row = conn.execute(
        "SELECT id FROM users WHERE workos_id IS NULL AND lower(email) = %s", [BENCH_EMAIL]
    ).fetchone()
    if row is None:
        row = conn.execute(
            "INSERT INTO users (email, name) VALUES (%s, 'Bench') RETURNING id", [BENCH_EMAIL]
        ).fetchone()
    conn.commit()
    assert row is not None
    user_id: int = row[0]
    return user_id


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in ("aiohttp", *PYTHON_PEER_MODULES, "uvloop", "websockets"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "missing"
    node = shutil.which("node")
    if node is not None:
        found["node"] = subprocess.run(
            [node, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    for name in ("pg", "ws"):
        manifest = NODE_DIR / "node_modules" / name / "package.json"
        if manifest.exists():
            found[f"npm {name}"] = json.loads(manifest.read_text())["version"]
    return found


# --------------------------------------------------------------------------------------------
# Runs


class PeerProcess(ServerProcess):
    """A peer server: uvicorn and Node log differently from pgcast."""

    async def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        while line_bytes := await self.process.stderr.readline():
            line = line_bytes.decode(errors="replace").rstrip()
            self.tail.append(line)
            if any(word in line.lower() for word in ("warning", "error", "traceback")):
                self.warning_count += 1
                if len(self.warnings) < 10:
                    self.warnings.append(line[:300])


@dataclass
class Measured:
    latency: LatencyResult
    fanout: FanoutResult
    frame_bytes: float  # mean size of the burst's frames, as socket 0 received them


def measured(latency: LatencyResult, fanout: FanoutResult, texts: list[str]) -> Measured:
    sizes = [len(text.encode()) for text in texts]
    return Measured(latency, fanout, sum(sizes) / len(sizes) if sizes else math.nan)


@dataclass
class ServerRun:
    key: str
    measured: Measured | None = None
    exit_code: int | None = None
    warning_count: int = 0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


def peer_env(peer: Peer, conninfo: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGCAST_", "WORKOS_"))}
    env.update(
        DATABASE_URL=database_url(conninfo),
        HOST=HOST,
        PORT=str(port),
        NOTIFY_CHANNEL=peer.channel,
    )
    return env


async def open_peer_sockets(port: int, url: str, count: int) -> list[Receiver]:
    """One socket first, then the others, `connected` frame awaited on each (it is sent once
    the socket is subscribed). broadcaster's Postgres backend fails when its first
    subscriptions to a channel run concurrently (encode/broadcaster#22)."""
    receivers = await open_sockets(port, "/ws", url, None, 1, True)
    others, errors = await try_open_sockets(port, "/ws", url, None, count - 1, True, first_index=1)
    receivers += others
    if errors:
        await close_sockets(receivers)
        raise BenchError(f"{len(errors)} of {count} sockets failed to open: {errors[0]!r}")
    return receivers


async def run_peer(
    peer: Peer, args: argparse.Namespace, conninfo: str, postmaster: psutil.Process | None
) -> ServerRun:
    port = free_port()
    url = f"http://{HOST}:{port}"
    command = [part.replace("{port}", str(port)) for part in peer.argv]
    server = await PeerProcess.start(peer.label, command, peer_env(peer, conninfo, port))
    run = ServerRun(peer.key)
    conn: psycopg.Connection[Any] | None = None
    try:
        await server.wait_ready(url + "/ready")
        meter = Meter.for_server(server.pid, postmaster)
        writer = await asyncio.to_thread(connect_writer, conninfo)
        conn = writer
        user_id = await asyncio.to_thread(bench_user, writer)
        receivers = await open_peer_sockets(port, url, args.sockets)
        try:
            latency = await latency_phase(writer, user_id, receivers, args, meter)
            fanout, _, texts = await fanout_phase(writer, user_id, receivers, args, meter)
            fanout.name = peer.key
            run.measured = measured(latency, fanout, texts)
        finally:
            await close_sockets(receivers)
    except BenchError as error:
        run.error = str(error)
    finally:
        if conn is not None:
            await asyncio.to_thread(conn.close)
        run.exit_code = await server.stop()
        run.warning_count, run.warnings = server.warning_count, server.warnings
    if run.error is not None and server.tail and "log ends" not in run.error:
        run.error += " | its log ends: " + " / ".join(list(server.tail)[-5:])
    return run


async def run_one(
    key: str,
    args: argparse.Namespace,
    conninfo: str,
    workdir: Path,
    postmaster: psutil.Process | None,
) -> ServerRun:
    await asyncio.to_thread(use_trigger, conninfo, key)
    if key in PEERS:
        return await run_peer(PEERS[key], args, conninfo, postmaster)
    latency, fanout, _, texts, server = await run_pgcast(args, conninfo, workdir, postmaster)
    return ServerRun(
        key,
        measured=measured(latency, fanout, texts),
        exit_code=server.exit_code,
        warning_count=server.warning_count,
        warnings=server.warnings,
    )


async def _bench(
    args: argparse.Namespace, conninfo: str, workdir: Path, postmaster: psutil.Process | None
) -> list[ServerRun]:
    runs = []
    for key in args.servers:
        try:
            runs.append(await run_one(key, args, conninfo, workdir, postmaster))
        except BenchError as error:
            runs.append(ServerRun(key, error=str(error)))
    return runs


# --------------------------------------------------------------------------------------------
# Figures and report


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    value: Callable[[Measured], float]
    fmt: str = "{:.1f}"
    ratio: bool = True  # a pgcast / peer ratio means something


FIGURES = [
    Figure(
        "fanout_frames_per_second",
        "**fan-out frames/s** (higher is better)",
        lambda m: m.fanout.frames_per_second,
        "{:,.0f}",
    ),
    Figure(
        "fanout_seconds", "fan-out: first → last frame (s)", lambda m: m.fanout.seconds, "{:.2f}"
    ),
    Figure("frame_bytes", "frame size, mean (bytes)", lambda m: m.frame_bytes, "{:.0f}"),
    Figure(
        "fanout_server_us_per_frame",
        "fan-out: server CPU per frame (µs)",
        lambda m: m.fanout.server_us_per_frame,
    ),
    Figure(
        "fanout_server_cpu_percent",
        "fan-out: server CPU (% of one core)",
        lambda m: m.fanout.usage.cpu_percent["server"],
        "{:.0f}",
    ),
    Figure(
        "fanout_postgres_cpu_percent",
        "fan-out: PostgreSQL CPU (% of one core)",
        lambda m: m.fanout.usage.cpu_percent.get("postgres", math.nan),
        "{:.0f}",
    ),
    Figure(
        "fanout_loadgen_cpu_percent",
        "fan-out: load generator CPU (% of one core)",
        lambda m: m.fanout.usage.cpu_percent["loadgen"],
        "{:.0f}",
    ),
    Figure(
        "fanout_others_cpu_percent",
        "fan-out: everything else on the host (% of one core)",
        lambda m: m.fanout.usage.others_percent,
        "{:.0f}",
        ratio=False,
    ),
    Figure(
        "fanout_peak_rss_mb",
        "fan-out: server peak RSS (MB)",
        lambda m: m.fanout.usage.peak_rss_mb["server"],
        "{:.0f}",
    ),
    Figure(
        "burst_insert_ms",
        "fan-out: the burst's INSERTs + COMMITs, with this server's trigger (ms)",
        lambda m: 1000 * m.fanout.insert_seconds,
        "{:.0f}",
    ),
    Figure(
        "latency_p50_ms",
        "**commit→socket p50 (ms)** (lower is better)",
        lambda m: m.latency.all_pairs["p50"],
    ),
    Figure("latency_p99_ms", "**commit→socket p99 (ms)**", lambda m: m.latency.all_pairs["p99"]),
    Figure("latency_p999_ms", "commit→socket p99.9 (ms)", lambda m: m.latency.all_pairs["p99.9"]),
    Figure("latency_max_ms", "commit→socket max (ms)", lambda m: m.latency.all_pairs["max"]),
    Figure(
        "latency_first_socket_p50_ms",
        "first socket per message p50 (ms)",
        lambda m: m.latency.first_socket["p50"],
    ),
    Figure(
        "latency_last_socket_p50_ms",
        "last socket per message p50 (ms)",
        lambda m: m.latency.last_socket["p50"],
    ),
    Figure(
        "commit_rtt_p50_ms",
        "COMMIT round trip p50 (ms)",
        lambda m: m.latency.commit_rtt["p50"],
        "{:.2f}",
    ),
    Figure(
        "commit_rtt_p99_ms",
        "COMMIT round trip p99 (ms)",
        lambda m: m.latency.commit_rtt["p99"],
        "{:.2f}",
    ),
    Figure(
        "latency_achieved_rate",
        "latency: achieved msg/s",
        lambda m: m.latency.achieved_rate,
        "{:.0f}",
    ),
    Figure(
        "latency_server_cpu_percent",
        "latency: server CPU (% of one core)",
        lambda m: m.latency.usage.cpu_percent["server"],
        "{:.0f}",
    ),
    Figure(
        "latency_server_us_per_frame",
        "latency: server CPU per frame (µs)",
        lambda m: _us_per_frame(m.latency.usage, m.latency.delivery.frames),
    ),
    Figure(
        "latency_postgres_cpu_percent",
        "latency: PostgreSQL CPU (% of one core)",
        lambda m: m.latency.usage.cpu_percent.get("postgres", math.nan),
        "{:.0f}",
    ),
    Figure(
        "latency_peak_rss_mb",
        "latency: server peak RSS (MB)",
        lambda m: m.latency.usage.peak_rss_mb["server"],
        "{:.0f}",
    ),
]


def figures(run: ServerRun) -> dict[str, float]:
    if run.measured is None:
        return {}
    return {figure.key: figure.value(run.measured) for figure in FIGURES}


def _cell(fmt: str, value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else fmt.format(value)


def _delivery_cell(run: ServerRun) -> str:
    if run.measured is None:
        return "not run"
    parts = []
    for delivery, completed in (
        (run.measured.latency.delivery, True),
        (run.measured.fanout.delivery, run.measured.fanout.completed),
    ):
        if delivery.ok and completed:
            parts.append("ok")
        else:
            parts.append(
                f"incomplete (missing {delivery.losses}, dup {delivery.duplicates}, "
                f"order {delivery.out_of_order}, closed {delivery.closed_sockets})"
            )
    return " / ".join(parts)


def render_report(result: dict[str, Any], runs: list[ServerRun]) -> str:
    args: argparse.Namespace = result["_args"]
    values = {run.key: figures(run) for run in runs}
    peers = [run.key for run in runs if run.key != "pgcast"]
    has_pgcast = any(run.key == "pgcast" for run in runs)
    ratio_peers = peers if has_pgcast else []
    header = ["figure", *(LABELS[run.key] for run in runs)]
    header += [f"pgcast / {LABELS[key]}" for key in ratio_peers]
    lines = [
        f"## pgcast vs peers, {result['timestamp']}",
        "",
        f"`{result['command']}`",
        "",
        f"{args.sockets} sockets, 1 user, {args.content_chars}-char messages; latency: "
        f"{args.messages} messages at {args.rate:.0f}/s, one transaction each; fan-out: "
        f"{args.burst} messages in INSERTs of {args.batch} rows. {result['cpus']} CPUs, "
        f"database: {result['database']}, load average at start {result['load_average']:.1f}. "
        "Servers ran one at a time in this order, each with only its own insert trigger enabled.",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    for figure in FIGURES:
        cells = [_cell(figure.fmt, values[run.key].get(figure.key)) for run in runs]
        ratios = [result["ratios"][key].get(figure.key) for key in ratio_peers]
        cells += [_cell("{:.2f}", ratio) if figure.ratio else "" for ratio in ratios]
        lines.append(f"| {figure.label} | " + " | ".join(cells) + " |")
    tail_rows = [
        ("delivery check latency / fan-out", [_delivery_cell(run) for run in runs]),
        ("server exit code", [str(run.exit_code) for run in runs]),
        ("server log warnings/errors", [str(run.warning_count) for run in runs]),
    ]
    for name, cells in tail_rows:
        lines.append(f"| {name} | " + " | ".join(cells + ["" for _ in ratio_peers]) + " |")
    lines += [
        "",
        "Ratios are pgcast ÷ peer: above 1 for frames/s means pgcast delivers more; below 1 for "
        "latency, CPU and memory means pgcast needs less.",
        "",
        "Versions: "
        + ", ".join(f"{name} {version}" for name, version in result["versions"].items()),
    ]
    return finish_report(lines, result)


def summarize(runs: list[ServerRun]) -> tuple[dict[str, Any], list[str], list[str]]:
    servers: dict[str, Any] = {}
    problems: list[str] = []
    notes: list[str] = []
    for run in runs:
        label = LABELS[run.key]
        entry: dict[str, Any] = {
            "label": label,
            "figures": figures(run),
            "exit_code": run.exit_code,
            "log_warnings": run.warning_count,
            "log_warning_samples": run.warnings,
            "error": run.error,
        }
        if run.error is not None:
            problems.append(f"{label} could not run: {run.error}")
        if run.measured is not None:
            latency, fanout = run.measured.latency, run.measured.fanout
            entry["latency_ms"] = latency.all_pairs
            entry["latency_delivery"] = _delivery_dict(latency.delivery)
            entry["fanout_delivery"] = _delivery_dict(fanout.delivery)
            entry["latency_usage"] = _usage_dict(latency.usage)
            entry["fanout_usage"] = _usage_dict(fanout.usage)
            for phase, delivery in (
                ("latency phase", latency.delivery),
                ("fan-out phase", fanout.delivery),
            ):
                if delivery.ok:
                    continue
                if run.key == "pgcast":
                    problems.append(f"{label} {phase} delivery FAILED: {delivery.describe()}")
                    problems.extend(f"{label} {phase}: {sample}" for sample in delivery.samples)
                else:
                    # A peer that falls behind is a finding about the peer, not a failed
                    # bench: its figures cover what arrived.
                    notes.append(
                        f"{label} {phase}: not everything arrived within the wait "
                        f"({delivery.describe()}): it fell behind at this load; a frame of "
                        "the latency phase arriving in the fan-out phase counts as unexpected"
                    )
            if not fanout.completed and fanout.delivery.ok:
                problems.append(f"{label} fan-out phase did not complete in time")
            if latency.all_pairs["p50"] < latency.commit_rtt["p50"]:
                notes.append(
                    f"{label}: commit→socket p50 is below the COMMIT round trip p50: frames "
                    "often arrived before COMMIT's reply reached the writer thread (the commit "
                    "instant lies inside the round trip), so latencies this small compare only "
                    "to within a round trip"
                )
            notes += usage_notes(
                [
                    (f"{label} latency", latency.usage),
                    (f"{label} fan-out", fanout.usage),
                ]
            )
        # uvicorn shuts down gracefully on SIGTERM, then raises it again: it exits with -15.
        clean = (0, None) if run.key == "pgcast" else (0, -signal.SIGTERM, None)
        if run.exit_code not in clean:
            problems.append(f"{label} exited with {run.exit_code}")
        servers[run.key] = entry
    return servers, problems, notes


def ratios(servers: dict[str, Any]) -> dict[str, dict[str, float]]:
    if "pgcast" not in servers:
        return {}
    ours: dict[str, float] = servers["pgcast"]["figures"]
    with_ratio = {figure.key for figure in FIGURES if figure.ratio}
    return {
        key: {
            name: _ratio(value, entry["figures"].get(name, math.nan))
            for name, value in ours.items()
            if name in with_ratio
        }
        for key, entry in servers.items()
        if key != "pgcast"
    }


# --------------------------------------------------------------------------------------------
# Entry points


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/compare.py",
        description="pgcast against broadcaster+uvicorn and a Node (pg + ws) server.",
    )
    parser.add_argument("--sockets", type=int, help=f"sockets (default {DEFAULTS['sockets']})")
    parser.add_argument(
        "--messages", type=int, help=f"latency-phase messages (default {DEFAULTS['messages']})"
    )
    parser.add_argument(
        "--rate", type=float, help=f"latency-phase messages/s (default {DEFAULTS['rate']:.0f})"
    )
    parser.add_argument("--burst", type=int, help=f"fan-out messages (default {DEFAULTS['burst']})")
    parser.add_argument(
        "--batch", type=int, help=f"rows per INSERT in the burst ({DEFAULTS['batch']})"
    )
    parser.add_argument(
        "--content-chars", type=int, help=f"message length (default {DEFAULTS['content_chars']})"
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"which servers, in this order (default {','.join(SERVERS)})",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="well under a minute: 5 sockets, 40 messages, burst of 200 (explicit options win)",
    )
    add_report_options(parser)
    args = parser.parse_args(argv)
    settle_options(
        parser,
        args,
        SMOKE if args.smoke else DEFAULTS,
        ("sockets", "messages", "burst", "batch", "content_chars"),
    )
    if not args.rate > 0:
        parser.error("--rate must be more than 0")
    args.servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = [name for name in args.servers if name not in SERVERS]
    if unknown or not args.servers or len(set(args.servers)) != len(args.servers):
        parser.error(f"--servers takes distinct names among {', '.join(SERVERS)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every server of `args.servers` once on one database; every figure in a dict.
    `problems` is empty when every server ran and delivered everything exactly once, in order.
    Raises BenchError when the bench itself cannot run (no database)."""
    _raise_open_file_limit()
    started = datetime.now(UTC)
    load_average = os.getloadavg()[0]
    setup_errors: dict[str, str] = {}
    for key, check in (("broadcaster", check_python_peer), ("node", install_node_peer)):
        if key in args.servers:
            try:
                check()
            except BenchError as error:
                setup_errors[key] = str(error)
    runnable = argparse.Namespace(**vars(args))
    runnable.servers = [key for key in args.servers if key not in setup_errors]
    switch_interval = sys.getswitchinterval()
    # The writer thread takes the commit time once it has the GIL back: keep that wait short.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    try:
        with tempfile.TemporaryDirectory(prefix="pgcast-compare-") as tmp:
            workdir = Path(tmp)
            with bench_database(workdir) as (conninfo, postmaster):
                install_peer_triggers(conninfo)
                done = run_load_generator(_bench(runnable, conninfo, workdir, postmaster))
    finally:
        sys.setswitchinterval(switch_interval)
    by_key = {run.key: run for run in done}
    runs = [by_key.get(key) or ServerRun(key, error=setup_errors[key]) for key in args.servers]
    servers, problems, notes = summarize(runs)
    result: dict[str, Any] = {
        "_args": args,
        "servers": servers,
        "ratios": ratios(servers),
        "problems": problems,
        "notes": notes,
        "versions": versions(),
        "load_average": load_average,
        "timestamp": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpus": os.cpu_count(),
        "database": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded",
        "command": " ".join([".venv/bin/python bench/compare.py", *args.argv]),
    }
    result["report"] = render_report(result, runs)
    save_report(result, args, "compare", started)
    result.pop("_args")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
