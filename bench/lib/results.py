"""Typed figures: what every scenario measures, saved as JSON and read back as the same
dataclasses by bench/report.py."""

import dataclasses
import json
import math
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar, cast

T = TypeVar("T")


class BenchError(RuntimeError):
    """The benchmark could not run (a server did not start, a socket did not connect...)."""


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (p in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


@dataclass
class Latency:
    """Percentiles of some durations, in ms."""

    count: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, seconds: Iterable[float]) -> Self:
        ordered = sorted(seconds)
        p50, p99 = (1000 * percentile(ordered, p) for p in (50, 99))
        return cls(len(ordered), p50, p99, 1000 * ordered[-1] if ordered else math.nan)


@dataclass
class Usage:
    """CPU (% of one core) of the watched processes over one phase."""

    seconds: float
    cpu_percent: dict[str, float]
    host_cpu_percent: float
    cpus: int

    @property
    def others_percent(self) -> float:
        """CPU the watched processes did not use (other processes, kernel), % of one core."""
        # Clamped: the two clocks (per process, host-wide) tick separately.
        return max(0.0, self.host_cpu_percent * self.cpus - sum(self.cpu_percent.values()))

    def us_per(self, name: str, count: int) -> float:
        """CPU µs of process `name` per item (frame, event...) over the phase."""
        seconds = self.cpu_percent.get(name, math.nan) / 100 * self.seconds
        return 1e6 * seconds / count if count else math.nan


FAULTS = ("losses", "duplicates", "out_of_order", "unexpected", "other_frames", "closed_sockets")


@dataclass
class Delivery:
    """What the sockets got of the expected ids; every id once, in id order when `ordered`."""

    sockets: int
    expected_per_socket: int
    frames: int = 0
    losses: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    unexpected: int = 0
    other_frames: int = 0
    closed_sockets: int = 0
    first_at: float = math.nan
    last_at: float = math.nan
    samples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(getattr(self, name) for name in FAULTS)

    @property
    def frames_per_second(self) -> float:
        """Frames on all sockets / (last frame - first frame)."""
        return ratio(self.frames, self.last_at - self.first_at)

    def describe(self) -> str:
        return " ".join(f"{name}={getattr(self, name)}" for name in FAULTS)

    def problems(self, label: str) -> list[str]:
        failed = [f"{label} delivery FAILED: {self.describe()}"]
        return [] if self.ok else failed + [f"{label}: {sample}" for sample in self.samples]


@dataclass
class Burst:
    """Messages as fast as they go: frames/s to every socket and server CPU per frame. A
    socket still waiting when the time allowed ran out shows as losses in the delivery."""

    delivery: Delivery
    usage: Usage

    @property
    def frames(self) -> int:
        return self.delivery.frames

    @property
    def frames_per_second(self) -> float:
        return self.delivery.frames_per_second

    @property
    def server_us_per_frame(self) -> float:
        return self.usage.us_per("server", self.frames)

    @property
    def ok(self) -> bool:
        return self.delivery.ok


@dataclass
class Steady(Burst):
    """Messages at a steady rate, one transaction each: commit→socket over every (socket,
    message) pair."""

    messages: int
    target_rate: float
    achieved_rate: float
    latency: Latency


@dataclass
class CostPhase:
    """Items written at a steady rate, one transaction each, on `channel`, while `listening`
    of the `sockets` listen: the server's CPU per item, as measured and less its idle CPU
    (measured apart) over the phase's length; commit→socket latencies; the delivery."""

    name: str
    channel: str
    sockets: int
    listening: int
    items: int
    target_rate: float
    seconds: float
    usage: Usage
    idle_share: float
    latencies: list[Latency]  # the scenario's own: every socket's, or per kind of receiver
    delivery: Delivery
    unrouted_frames: int  # frames to the sockets not listening (must be 0)

    @property
    def server_us(self) -> float:
        return self.usage.us_per("server", self.items)

    @property
    def net_server_us(self) -> float:
        return self.server_us - 1e6 * self.idle_share * self.usage.seconds / self.items

    @property
    def ok(self) -> bool:
        return self.delivery.ok and not self.unrouted_frames

    def cells(self) -> str:
        """items, rate target / achieved | less idle | as measured | idle CPU %"""
        rates = f"{self.target_rate:g} / {self.items / self.seconds:.0f}"
        measured = f"**{self.net_server_us:,.0f}** | {self.server_us:,.0f}"
        return f"{self.items:,}, {rates} | {measured} | {100 * self.idle_share:.1f}"

    def problems(self) -> list[str]:
        unrouted = [f"phase {self.name}: {self.unrouted_frames} frames to other sockets"]
        return self.delivery.problems(f"phase {self.name}") + unrouted * bool(self.unrouted_frames)


@dataclass(kw_only=True)
class Result:
    """What every scenario's result carries besides its figures; `render` gives its body."""

    title: str = ""
    timestamp: str = ""
    command: str = ""
    cpus: int = 0
    cpu_model: str = ""
    platform: str = ""
    database: str = ""
    load_average: float = math.nan
    options: dict[str, Any] = field(default_factory=dict)  # the run's, set by runner.run()
    versions: dict[str, str] = field(default_factory=dict)  # runner.versions()
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self) -> list[str]:
        raise NotImplementedError

    def markdown(self) -> str:
        lines = [
            f"## pgcast {self.title}, {self.timestamp}",
            "",
            f"`{self.command}`",
            "",
            f"{self.cpus} CPUs ({self.cpu_model}) shared by PostgreSQL, the server and the load "
            f"generator; database: {self.database}; load average at start "
            f"{self.load_average:.1f}.",
            "",
            *self.render(),
        ]
        if self.notes:
            lines += ["", "Notes:", "", *(f"- {note}" for note in self.notes)]
        if self.problems:
            lines += ["", "**PROBLEMS**", "", *(f"- {p}" for p in self.problems)]
        return "\n".join(lines) + "\n"


def load(kind: Any, data: Any) -> Any:
    """`data` (as json.loads gives it) as an instance of `kind`: dataclasses, lists, tuples,
    dicts (keys converted too: JSON's are strings), optionals and plain values."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        fields = [f for f in dataclasses.fields(kind) if f.init and f.name in data]
        return kind(**{f.name: load(hints[f.name], data[f.name]) for f in fields})
    if origin in (typing.Union, types.UnionType):
        return None if data is None else load(next(a for a in args if a is not type(None)), data)
    if origin is tuple:
        kinds = [args[0]] * len(data) if args[-1:] == (Ellipsis,) else args
        return tuple(load(a, item) for a, item in zip(kinds, data, strict=True))
    if origin is list:
        return [load(args[0], item) for item in data]
    if origin is dict:
        return {load(args[0], k): load(args[1], v) for k, v in data.items()}
    return kind(data) if kind in (int, float, str) else data


def read(kind: type[T], path: Path) -> T:
    return cast(T, load(kind, json.loads(path.read_text())))
