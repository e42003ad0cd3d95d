"""What every scenario shares around its own measurement: options (one comma-list parser,
`--smoke`, `--out`, `--no-write`), the database, the load generator's loop, and `main()`,
which writes `<name>.md` and `<name>.json` into the run directory."""

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import types
import typing
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import psutil
import psycopg
from aiohttp import ClientError

from bench.lib.database import bench_database
from bench.lib.results import BenchError, Result
from bench.lib.servers import BENCH_DIR

T = TypeVar("T")
# What stops a scenario from running: one line on stderr, exit 1.
ERRORS = (BenchError, OSError, TimeoutError, subprocess.SubprocessError, psycopg.Error, ClientError)
# A writer thread takes the commit time once it has the GIL back: keep that wait short.
GIL_SWITCH_INTERVAL = 0.0005


def option(default: Any, smoke: Any = None, help: str = "", minimum: float = 1) -> Any:
    """A scenario option: its default, its --smoke value, what it is, and the least it may
    be (numbers, and each number of a comma-separated list)."""
    return field(default=default, metadata={"smoke": smoke, "help": help, "minimum": minimum})


@dataclass
class Options:
    """Every scenario's options derive from this; `--smoke` picks each option's smoke value."""

    out: Path = field(
        default_factory=lambda: BENCH_DIR / "out" / f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    )
    no_write: bool = False
    argv: list[str] = field(default_factory=list)

    def check(self) -> str | None:
        """What is wrong with these options together, if anything."""
        return None


OptionsT = TypeVar("OptionsT", bound=Options)
ResultT = TypeVar("ResultT", bound=Result)


@dataclass
class Run(Generic[OptionsT]):
    """One run of a scenario: its options, database and temporary directory."""

    options: OptionsT
    conninfo: str
    workdir: Path
    postmaster: psutil.Process | None


@dataclass(frozen=True)
class Scenario(Generic[OptionsT, ResultT]):
    name: str
    title: str
    options: type[OptionsT]
    measure: Callable[[Run[OptionsT]], Awaitable[ResultT]]
    database: bool = True

    def __post_init__(self) -> None:
        """`python -m bench.<name>`: main(), its status the exit's, once the module defines
        its SCENARIO (its last statement)."""
        if self.measure.__module__ == "__main__":
            sys.exit(main(self))


def numbers(kind: type[int] | type[float], least: float, many: bool) -> Callable[[str], Any]:
    """A number, or with `many` a comma-separated list of them (`1,4,16`, `1_000,5_000`),
    each `least` or more."""

    def parse(text: str) -> Any:
        try:
            values = [kind(p.replace("_", "")) for p in text.split("," if many else None) if p]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number{' list' * many}") from None
        if not values or min(values) < least:
            raise argparse.ArgumentTypeError(f"{text!r}: each must be {least:g} or more")
        return tuple(values) if many else values[0]

    return parse


def parse(scenario: Scenario[OptionsT, ResultT], argv: Sequence[str] | None = None) -> OptionsT:
    """The scenario's options from a command line; a bad one exits with a one-line error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    doc = sys.modules[scenario.measure.__module__].__doc__
    parser = argparse.ArgumentParser(prog=f"python -m bench.{scenario.name}", description=doc)
    parser.add_argument("--smoke", action="store_true", help="a few seconds, explicit options win")
    parser.add_argument("--out", type=Path, help="report directory (bench/out/run-<UTC time>)")
    parser.add_argument("--no-write", action="store_true", help="print the report only")
    hints = typing.get_type_hints(scenario.options)
    specs = [f for f in dataclasses.fields(scenario.options) if f.metadata]
    for spec in specs:
        kind, flag, meta = hints[spec.name], "--" + spec.name.replace("_", "-"), spec.metadata
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            kind = typing.get_args(kind)[0]  # `X | None`
        many = typing.get_origin(kind) is tuple
        number = numbers(typing.get_args(kind)[0] if many else kind, meta["minimum"], many)
        text = f"{meta['help']} (default {spec.default}, --smoke {meta['smoke']})"
        parser.add_argument(flag, type=str if kind is str else number, help=text)
    given = vars(parser.parse_args(argv))
    values: dict[str, Any] = {"no_write": given["no_write"], "argv": argv}
    values.update({"out": given["out"]} if given["out"] is not None else {})
    for spec in specs:
        value, smoke = given[spec.name], spec.metadata["smoke"]
        if value is None:
            value = smoke if given["smoke"] and smoke is not None else spec.default
        values[spec.name] = value
    options = scenario.options(**values)
    if problem := options.check():
        parser.error(problem)
    return options


def run_load_generator(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on uvloop when it is installed: it costs the receivers less per read."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def versions() -> dict[str, str]:
    """What the figures depend on, for RESULTS.md's "Software" line: Python, its packages here,
    the peers' (bench/compare.py) and Node with the Node peer's."""
    found = {"python": platform.python_version()}
    for name in ("aiohttp", "broadcaster", "asyncpg", "starlette", "uvicorn", "uvloop"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    if node := shutil.which("node"):
        found["node"] = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    for name in ("pg", "ws"):
        with contextlib.suppress(OSError):
            manifest = BENCH_DIR / "peers" / "node" / "node_modules" / name / "package.json"
            found[f"npm {name}"] = json.loads(manifest.read_text())["version"]
    return {name: version.strip() for name, version in found.items()}


def run(scenario: Scenario[OptionsT, ResultT], options: OptionsT | Sequence[str]) -> ResultT:
    """Run a scenario once (options, or a command line); its report written unless --no-write."""
    if not isinstance(options, Options):
        options = parse(scenario, options)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started, load_average = datetime.now(UTC), os.getloadavg()[0]
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    try:
        with tempfile.TemporaryDirectory(prefix=f"pgcast-{scenario.name}-") as tmp:
            workdir, none = Path(tmp), contextlib.nullcontext(("", None))
            with bench_database(workdir) if scenario.database else none as (conninfo, postmaster):
                result = run_load_generator(
                    scenario.measure(Run(options, conninfo, workdir, postmaster))
                )
    finally:
        sys.setswitchinterval(switch_interval)
    result.title, result.timestamp = scenario.title, started.strftime("%Y-%m-%d %H:%M:%S UTC")
    result.command = " ".join([f".venv/bin/python -m bench.{scenario.name}", *options.argv])
    result.cpus, result.cpu_model = os.cpu_count() or 1, _cpu_model()
    result.platform, result.load_average = platform.platform(), load_average
    result.versions = versions()
    result.database = "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded"
    result.options = {
        f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.metadata
    }
    if not options.no_write:
        options.out.mkdir(parents=True, exist_ok=True)
        path = options.out / scenario.name
        path.with_suffix(".md").write_text(result.markdown())
        data = json.dumps(dataclasses.asdict(result), indent=1)
        path.with_suffix(".json").write_text(data + "\n")
    return result


def main(scenario: Scenario[OptionsT, ResultT], argv: Sequence[str] | None = None) -> int:
    """Print the report; exit 1 if it could not run or a check failed."""
    options = parse(scenario, argv)
    try:
        result = run(scenario, options)
    except ERRORS as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    print(result.markdown(), end="")
    if not options.no_write:
        print(f"\nwritten to {options.out / scenario.name}.md and .json")
    if result.problems:
        print(
            "\nbench: CHECK FAILED", *(f"  {p}" for p in result.problems), sep="\n", file=sys.stderr
        )
    return 1 if result.problems else 0
