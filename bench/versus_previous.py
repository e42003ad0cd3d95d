"""This tree against a previous commit: fan-out per frame and replay events/s, as ratios.
bench/README.md says how it is measured."""

import asyncio
import dataclasses
import io
import statistics
import subprocess
import sys
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.lib import render, runner
from bench.lib.database import create_database
from bench.lib.receivers import close_sockets
from bench.lib.results import BenchError, Result, Usage, ratio
from bench.lib.servers import REPO_DIR, pgcast_env, usage_notes, wait_quiet
from bench.lib.writers import burst_phase, pgcast_session, write_burst
from bench.resume import replay_phase

# (figure, what it is, higher is better, the aim as a bound on current / previous)
FIGURES = (
    ("fanout_server_us_per_frame", "fan-out: server CPU per frame (µs)", False, 1.1),
    ("fanout_frames_per_second", "fan-out: frames/s", True, 0.9),
    ("replay_events_per_second", "replay: events/s", True, 0.9),
    ("replay_server_us_per_event", "replay: server CPU per event (µs)", False, 1.1),
)


@dataclass
class Options(runner.Options):
    baseline: str | None = runner.option(None, None, "the previous commit (merge-base with main)")
    rounds: int = runner.option(3, 1, "runs of each tree, alternating")
    sockets: int = runner.option(1000, 5, "fan-out sockets")
    burst: int = runner.option(1000, 100, "fan-out messages")
    batch: int = runner.option(100, 20, "rows per INSERT in the burst")
    events: int = runner.option(50_000, 500, "replay backlog events")
    content_chars: int = runner.option(100, None, "message length")


@dataclass
class Run:
    round: int
    tree: str
    figures: dict[str, float]  # by FIGURES' names
    ok: bool  # both deliveries


@dataclass
class VersusResult(Result):
    baseline: str
    current: str
    runs: list[Run]

    def median(self, tree: str, name: str) -> float:
        return statistics.median(r.figures[name] for r in self.runs if r.tree == tree)

    def ratio(self, name: str) -> float:
        return ratio(self.median("current", name), self.median("previous", name))

    def render(self) -> list[str]:
        o = self.options
        rows = []
        for name, label, higher, aim in FIGURES:
            met = self.ratio(name) >= aim if higher else self.ratio(name) <= aim
            bound = f"{'≥' if higher else '≤'} {aim:g}: {'met' if met else 'NOT met'}"
            rows.append(
                f"{label} | {render.us(self.median('previous', name))} "
                f"| {render.us(self.median('current', name))} | **{self.ratio(name):.2f}** "
                f"| {bound}"
            )
        return [
            f"Previous: `{self.baseline}`. Current: `{self.current}`. {o['rounds']} runs of "
            f"each, alternating; fan-out: {o['sockets']:,} sockets, a burst of {o['burst']:,} "
            f"messages ({o['batch']} rows per INSERT); replay: {o['events']:,} events to one "
            "socket.",
            "",
            *render.table(
                "figure (median of the runs) | previous | current | **current / previous** | aim",
                rows,
                "lrrrl",
            ),
        ]


def git(*arguments: str, text: bool = True) -> Any:
    done = subprocess.run(["git", "-C", str(REPO_DIR), *arguments], capture_output=True)
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(arguments)}: {done.stderr.decode().strip()}")
    return done.stdout.decode().strip() if text else done.stdout


def default_baseline() -> str:
    """The merge-base of HEAD and main; on main itself, the commit before HEAD."""
    base = git("merge-base", "HEAD", "main")
    return base if base != git("rev-parse", "HEAD") else git("rev-parse", "HEAD^")


def unpack(rev: str, destination: Path) -> str:
    """`git archive` of commit `rev` unpacked into `destination`; "<hash> <subject>"."""
    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except BenchError:
        raise BenchError(f"--baseline {rev}: not a commit of this repository") from None
    archive = io.BytesIO(git("archive", "--format=tar", commit, text=False))
    with tarfile.open(fileobj=archive) as tar:
        tar.extractall(destination, filter="data")
    return git("log", "-1", "--format=%h %s", commit)


def migrate_tree(path: Path, conninfo: str, data_dir: Path) -> None:
    env = {**pgcast_env(conninfo, data_dir, 0), "PYTHONPATH": str(path)}
    command = [sys.executable, "-P", "-m", "server", "migrate"]
    done = subprocess.run(command, env=env, cwd=path, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise BenchError(f"{path}'s migrate failed: {done.stderr.strip()[-500:]}")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # Both trees' replays are planned alike: on statistics ANALYZEd after the backlog.
        conn.execute("ALTER TABLE broadcasts SET (autovacuum_enabled = off)")


async def measure_tree(
    name: str, path: Path, conninfo: str, number: int, run: runner.Run[Options]
) -> tuple[Run, list[tuple[str, Usage]], list[str]]:
    o, label = run.options, f"{name} tree's pgcast serve"
    tree = dataclasses.replace(run, conninfo=conninfo)
    async with pgcast_session(tree, tree=path, name=label) as s:
        receivers = await s.open("/ws", o.sockets)
        # The first broadcasts after sockets connect cost more (idle_sockets says why).
        await burst_phase(s, receivers, o.batch, o.batch, o.content_chars)
        fanout, _, _ = await burst_phase(s, receivers, o.burst, o.batch, o.content_chars)
        await close_sockets(receivers)
        [before] = await s.open("/ws", 1)
        await close_sockets([before])
        backlog = (s.writer, s.user_id, o.events, 1000, o.content_chars)
        ids = await asyncio.to_thread(write_burst, *backlog)
        await asyncio.to_thread(s.writer.execute, "ANALYZE")
        s.writer.commit()
        await wait_quiet(s.server.pid)
        replay, _ = await replay_phase(s, before.cursor, ids)
    figures = {
        "fanout_server_us_per_frame": fanout.server_us_per_frame,
        "fanout_frames_per_second": fanout.frames_per_second,
        "replay_events_per_second": replay.events_per_second,
        "replay_server_us_per_event": replay.burst.server_us_per_frame,
    }
    result = Run(number, name, figures, fanout.ok and replay.burst.ok)
    label = f"{name} run {number}"
    usages = [(f"{label} fan-out", fanout.usage), (f"{label} replay", replay.burst.usage)]
    return result, usages, [f"{label}: {p}" for p in s.server.exit_problems()]


async def measure(run: runner.Run[Options]) -> VersusResult:
    o = run.options
    previous = run.workdir / "previous-tree"  # extractall() creates it
    commit = await asyncio.to_thread(unpack, o.baseline or default_baseline(), previous)
    current = f"{git('describe', '--always', '--dirty')} (this working tree)"
    runs, usages, problems = [], [], []
    with create_database(run.conninfo, f"pgcast_previous_{uuid.uuid4().hex[:12]}") as other:
        trees = [("previous", previous, other), ("current", REPO_DIR, run.conninfo)]
        for name, path, conninfo in trees:
            await asyncio.to_thread(migrate_tree, path, conninfo, run.workdir / f"{name}-data")
        for number in range(1, o.rounds + 1):
            for name, path, conninfo in trees:
                measured, used, failed = await measure_tree(name, path, conninfo, number, run)
                runs.append(measured)
                usages += used
                problems += failed
    problems += [f"{r.tree} run {r.round}: a delivery failed" for r in runs if not r.ok]
    return VersusResult(commit, current, runs, problems=problems, notes=usage_notes(usages))


SCENARIO = runner.Scenario("versus_previous", "versus a previous commit", Options, measure)
