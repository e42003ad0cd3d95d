"""This tree against a previous commit: fan-out per frame and replay events/s, as ratios.

    .venv/bin/python bench/versus_previous.py [--baseline REV] [--rounds 3] [--sockets 1000]
        [--burst 1000] [--events 50000] [--smoke]

The previous tree is `git archive REV` unpacked in a temporary directory (REV: the merge-base
of HEAD and `main` by default, or HEAD^ on main itself); the current tree is this working
tree. Each gets a database
of its own on the same PostgreSQL, migrated by its own `python -m server migrate`, and runs as
`python -P -m server serve --no-migrate` with PYTHONPATH set to it (-P keeps the current
directory off sys.path, so the tree on PYTHONPATH is the one that runs). Runs alternate
previous, current, previous, current... (`--rounds` of each), each on a fresh server:

1. fan-out: N signed-in sockets on `/ws` (channel `messages`), a short warm-up, then a burst of
   B messages, `--batch` rows per INSERT (quick.py's fan-out phase): server CPU per delivered
   frame and frames/s;
2. replay: one socket takes a cursor, a backlog of E messages is written (1,000 rows per
   INSERT) and the event log ANALYZEd (autovacuum is off on it, so both trees are planned
   alike), the server is left to go quiet, and one socket resumes with `?after=`
   (resume.py's replay phase): events/s and server CPU per event.

Data goes in through `messages` inserts, which both trees broadcast. Each figure is the median
of its runs per tree; the report gives current / previous and the aim (within 10%).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import psycopg
from psycopg import sql

if __package__ in (None, ""):  # run as a script: bench/versus_previous.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.idle_sockets import cpu_seconds
from bench.quick import (
    HOST,
    REPO_DIR,
    BenchError,
    Meter,
    ServerProcess,
    Usage,
    _ratio,
    add_report_options,
    bench_main,
    close_sockets,
    connect_writer,
    content_for,
    fanout_phase,
    finish_report,
    free_port,
    open_sockets,
    pgcast_env,
    report_head,
    run_bench,
    settle_options,
    sign_in,
    usage_notes,
    write_burst,
)
from bench.resume import BACKLOG_BATCH, open_receiver, replay_phase, wait_quiet
from server.db import with_database

MIGRATE_TIMEOUT = 120.0

DEFAULTS: dict[str, Any] = {
    "rounds": 3,
    "sockets": 1000,
    "burst": 1000,
    "batch": 100,
    "events": 50_000,
    "content_chars": 100,
}
SMOKE: dict[str, Any] = {
    "rounds": 1,
    "sockets": 5,
    "burst": 100,
    "batch": 20,
    "events": 500,
    "content_chars": 100,
}
# (figure, what it is, higher is better, the aim as a bound on current / previous)
FIGURES = (
    ("fanout_server_us_per_frame", "fan-out: server CPU per frame (µs)", False, 1.1),
    ("fanout_frames_per_second", "fan-out: frames/s", True, 0.9),
    ("replay_events_per_second", "replay: events/s", True, 0.9),
    ("replay_server_us_per_event", "replay: server CPU per event (µs)", False, 1.1),
    ("fanout_loadgen_us_per_frame", "fan-out: load generator CPU per frame (µs)", False, None),
)


@dataclass
class Tree:
    name: str
    path: Path
    commit: str
    conninfo: str


@dataclass
class Run:
    round: int
    tree: str
    fanout_frames_per_second: float
    fanout_server_us_per_frame: float
    fanout_loadgen_us_per_frame: float
    replay_events_per_second: float
    replay_server_us_per_event: float
    fanout_delivery_ok: bool
    replay_delivery_ok: bool
    server_exit_code: int | None
    server_warnings: int


def git(*arguments: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO_DIR), *arguments], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(arguments)}: {done.stderr.strip()}")
    return done.stdout.strip()


def resolve(rev: str) -> str:
    """The full hash of commit `rev`."""
    try:
        return git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except BenchError:
        raise BenchError(f"--baseline {rev}: not a commit of this repository") from None


def unpack(commit: str, destination: Path) -> str:
    """`git archive` of `commit` unpacked into `destination`; returns "<hash> <subject>"."""
    archive = subprocess.run(
        ["git", "-C", str(REPO_DIR), "archive", "--format=tar", commit],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise BenchError(f"git archive {commit}: {archive.stderr.decode(errors='replace')}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(destination, filter="data")
    return git("log", "-1", "--format=%h %s", commit)


def tree_env(tree: Tree, data_dir: Path, port: int) -> dict[str, str]:
    return {**pgcast_env(tree.conninfo, data_dir, port), "PYTHONPATH": str(tree.path)}


def migrate_tree(tree: Tree, data_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-P", "-m", "server", "migrate"],
        env=tree_env(tree, data_dir, 0),
        cwd=tree.path,
        capture_output=True,
        text=True,
        timeout=MIGRATE_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"{tree.name} tree's migrate failed: {done.stderr.strip()[-500:]}")
    with psycopg.connect(tree.conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = off)").format(event_log(conn))
        )


def event_log(conn: psycopg.Connection[Any]) -> sql.Identifier:
    """The event log's table: `broadcasts` since channels, `message_events` before."""
    row = conn.execute("SELECT to_regclass('broadcasts') IS NOT NULL").fetchone()
    return sql.Identifier("broadcasts" if row and row[0] else "message_events")


def write_backlog(
    writer: psycopg.Connection[Any], user_id: int, args: argparse.Namespace
) -> list[int]:
    """`--events` messages, BACKLOG_BATCH rows per transaction, then fresh statistics."""
    batches = [
        [content_for("backlog", n, args.content_chars) for n in range(s, s + BACKLOG_BATCH)]
        for s in range(0, args.events, BACKLOG_BATCH)
    ]
    batches[-1] = batches[-1][: args.events - BACKLOG_BATCH * (len(batches) - 1)]
    ids, _ = write_burst(writer, user_id, batches)
    writer.execute(sql.SQL("ANALYZE {}").format(event_log(writer)))
    writer.commit()
    return ids


async def measure(
    tree: Tree,
    number: int,
    args: argparse.Namespace,
    workdir: Path,
    postmaster: psutil.Process | None,
    usages: list[tuple[str, Usage]],
) -> Run:
    port = free_port()
    url = f"http://{HOST}:{port}"
    server = await ServerProcess.start(
        f"{tree.name} tree's pgcast serve",
        [sys.executable, "-P", "-m", "server", "serve", "--no-migrate"],
        tree_env(tree, workdir / f"{tree.name}-data", port),
    )
    writer: psycopg.Connection[Any] | None = None
    try:
        await server.wait_ready(url + "/readyz")
        meter = Meter.for_server(server.pid, postmaster)
        writer = await asyncio.to_thread(connect_writer, tree.conninfo)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            user_id, cookie = await sign_in(http, url)
        receivers = await open_sockets(port, "/ws", url, cookie, args.sockets, True)
        try:
            # The first broadcasts after sockets connect cost more (idle_sockets.py says why).
            warm_up = argparse.Namespace(**{**vars(args), "burst": args.batch})
            await fanout_phase(writer, user_id, receivers, warm_up, meter)
            # Server CPU from schedstat (ns), not the meter's 10 ms ticks: a smoke run is short.
            server_began, loadgen_began = cpu_seconds(server.pid), cpu_seconds(os.getpid())
            fanout, _, _ = await fanout_phase(writer, user_id, receivers, args, meter)
            fanout_server = cpu_seconds(server.pid) - server_began
            fanout_loadgen = cpu_seconds(os.getpid()) - loadgen_began
        finally:
            await close_sockets(receivers)
        before = await open_receiver(port, "/ws", url, cookie, 0, keep_text=False)
        await close_sockets([before])
        ids = await asyncio.to_thread(write_backlog, writer, user_id, args)
        await wait_quiet(psutil.Process(server.pid))
        server_began = cpu_seconds(server.pid)
        replay = await replay_phase(port, url, cookie, before.cursor, ids, meter)
        replay_server = cpu_seconds(server.pid) - server_began
    finally:
        if writer is not None:
            await asyncio.to_thread(writer.close)
        await server.stop()
    label = f"{tree.name} run {number}"
    usages += [(f"{label} fan-out", fanout.usage), (f"{label} replay", replay.usage)]
    run = Run(
        round=number,
        tree=tree.name,
        fanout_frames_per_second=fanout.frames_per_second,
        fanout_server_us_per_frame=1e6 * _ratio(fanout_server, fanout.frames),
        fanout_loadgen_us_per_frame=1e6 * _ratio(fanout_loadgen, fanout.frames),
        replay_events_per_second=replay.events_per_second,
        replay_server_us_per_event=1e6 * _ratio(replay_server, replay.events),
        fanout_delivery_ok=fanout.delivery.ok and fanout.completed,
        replay_delivery_ok=replay.delivery.ok and replay.completed,
        server_exit_code=server.exit_code,
        server_warnings=server.warning_count,
    )
    print(_run_line(run), file=sys.stderr)
    return run


async def _bench(
    args: argparse.Namespace, conninfo: str, workdir: Path, postmaster: psutil.Process | None
) -> dict[str, Any]:
    previous_db = f"pgcast_previous_{uuid.uuid4().hex[:12]}"
    previous_path = workdir / "previous-tree"
    previous_path.mkdir()
    commit = await asyncio.to_thread(unpack, args.baseline_commit, previous_path)
    described = git("describe", "--always", "--dirty")
    trees = [
        Tree("previous", previous_path, commit, with_database(conninfo, previous_db)),
        Tree("current", REPO_DIR, f"{described} (this working tree)", conninfo),
    ]
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(previous_db)))
    runs: list[Run] = []
    usages: list[tuple[str, Usage]] = []
    try:
        for tree in trees:
            await asyncio.to_thread(migrate_tree, tree, workdir / f"{tree.name}-data")
        for number in range(1, args.rounds + 1):
            for tree in trees:
                runs.append(await measure(tree, number, args, workdir, postmaster, usages))
    finally:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(previous_db)
                )
            )
    medians = {
        tree.name: {
            name: statistics.median(getattr(r, name) for r in runs if r.tree == tree.name)
            for name, *_ in FIGURES
        }
        for tree in trees
    }
    ratios = {
        name: _ratio(medians["current"][name], medians["previous"][name]) for name, *_ in FIGURES
    }
    problems = []
    for run in runs:
        label = f"{run.tree} run {run.round}"
        if not run.fanout_delivery_ok:
            problems.append(f"{label}: fan-out delivery failed")
        if not run.replay_delivery_ok:
            problems.append(f"{label}: replay incomplete or wrong")
        if run.server_exit_code != 0:
            problems.append(f"{label}: the server exited with {run.server_exit_code}")
    return {
        "setup": {name: getattr(args, name) for name in DEFAULTS},
        "baseline": commit,
        "current": trees[1].commit,
        "runs": [asdict(run) for run in runs],
        "medians": medians,
        "ratios": ratios,
        "aims_met": {
            name: (ratios[name] >= aim if higher else ratios[name] <= aim)
            for name, _, higher, aim in FIGURES
            if aim is not None
        },
        "problems": problems,
        "notes": usage_notes(usages),
    }


def _run_line(run: Run) -> str:
    return (
        f"versus_previous: {run.tree} run {run.round}: fan-out {run.fanout_frames_per_second:,.0f}"
        f" frames/s, {run.fanout_server_us_per_frame:.1f} µs/frame; replay "
        f"{run.replay_events_per_second:,.0f} events/s"
    )


def _figure(value: float) -> str:
    """Rates in whole units, CPU per frame (well under a µs in a burst) to two places."""
    return f"{value:,.0f}" if value >= 1000 else f"{value:.2f}"


def figure_table(result: dict[str, Any]) -> list[str]:
    """The set-up and the medians with their ratios in Markdown, from the saved figures alone
    (bench/report.py renders them into RESULTS.md)."""
    setup, medians, ratios = result["setup"], result["medians"], result["ratios"]
    lines = [
        f"Previous: `{result['baseline']}`. Current: `{result['current']}`. "
        f"{setup['rounds']} runs of each, alternating; fan-out: {setup['sockets']:,} sockets, "
        f"a burst of {setup['burst']:,} messages ({setup['batch']} rows per INSERT); replay: "
        f"{setup['events']:,} events to one socket.",
        "",
        "| figure (median of the runs) | previous | current | **current / previous** | aim |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, label, higher, aim in FIGURES:
        bound = (
            "—"
            if aim is None
            else f"{'≥' if higher else '≤'} {aim:g}: "
            + ("met" if result["aims_met"][name] else "NOT met")
        )
        lines.append(
            f"| {label} | {_figure(medians['previous'][name])} "
            f"| {_figure(medians['current'][name])} | **{ratios[name]:.2f}** | {bound} |"
        )
    return lines


def render_report(result: dict[str, Any]) -> str:
    lines = [
        *report_head("versus a previous commit", result),
        "",
        *figure_table(result),
        "",
        "| run | tree | fan-out frames/s | server µs/frame | load generator µs/frame "
        "| replay events/s | server µs/event | delivery |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run in result["runs"]:
        ok = run["fanout_delivery_ok"] and run["replay_delivery_ok"]
        lines.append(
            f"| {run['round']} | {run['tree']} | {_figure(run['fanout_frames_per_second'])} "
            f"| {_figure(run['fanout_server_us_per_frame'])} "
            f"| {_figure(run['fanout_loadgen_us_per_frame'])} "
            f"| {_figure(run['replay_events_per_second'])} "
            f"| {_figure(run['replay_server_us_per_event'])} | {'ok' if ok else 'FAILED'} |"
        )
    return finish_report(lines, result)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/versus_previous.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="the previous commit (the merge-base of HEAD and main; on main, HEAD^)",
    )
    parser.add_argument("--rounds", type=int, help="runs of each tree, alternating (3)")
    parser.add_argument("--sockets", type=int, help="fan-out sockets (1000)")
    parser.add_argument("--burst", type=int, help="fan-out messages (1000)")
    parser.add_argument("--batch", type=int, help="rows per INSERT in the burst (100)")
    parser.add_argument("--events", type=int, help="replay backlog events (50000)")
    parser.add_argument("--content-chars", type=int, help="message length (100)")
    parser.add_argument("--smoke", action="store_true", help="one tiny run of each tree")
    add_report_options(parser)
    args = parser.parse_args(argv)
    settle_options(
        parser,
        args,
        SMOKE if args.smoke else DEFAULTS,
        ("rounds", "sockets", "burst", "batch", "events", "content_chars"),
    )
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def default_baseline() -> str:
    """The merge-base of HEAD and main (or origin/main, in a clone whose main is only the
    remote's); on main itself, or with neither, the commit before HEAD."""
    for branch in ("main", "origin/main"):
        try:
            base = git("merge-base", "HEAD", branch)
        except BenchError:
            continue
        if base != git("rev-parse", "HEAD"):
            return base
    try:
        return git("rev-parse", "HEAD^")
    except BenchError:
        raise BenchError("no previous commit to compare with: give --baseline REV") from None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both trees, `--rounds` runs each; every figure in a dict. `problems` is empty when
    every run delivered everything. Raises BenchError if it cannot run."""
    if args.baseline is None:
        args.baseline = default_baseline()
    args.baseline_commit = resolve(args.baseline)
    return run_bench(args, "versus-previous", _bench, render_report)


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(
        parse_args, run, argv, (BenchError, OSError, subprocess.SubprocessError, psycopg.Error)
    )


if __name__ == "__main__":
    sys.exit(main())
