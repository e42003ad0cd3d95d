"""One Markdown table renderer and the formatters every report uses."""

import math
from collections.abc import Iterable, Sequence

from bench.lib.results import Latency


def table(header: str, rows: Iterable[str | Sequence[object]], align: str = "") -> list[str]:
    """A Markdown table. `header` is the column names separated by ` | `; a row is its cells,
    or one string of them separated the same way; `align` has one letter per column, `l` or
    `r` (by default the first column left, the others right)."""
    align = align or "l" + "r" * header.count(" | ")
    lines = [
        f"| {header} |",
        "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |",
    ]
    return lines + [f"| {r if isinstance(r, str) else ' | '.join(map(str, r))} |" for r in rows]


def figures(rows: Iterable[str | Sequence[object]]) -> list[str]:
    """A two-column table of named figures: (name, value), or `name | value`."""
    return table("figure | value", rows, "ll")


def missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def num(value: float | None, digits: int = 0) -> str:
    """A figure with thousands separators; a dash when there is none."""
    return "–" if missing(value) else f"{value:,.{digits}f}"


def x(numerator: float | None, denominator: float | None, digits: int = 2) -> str:
    """A ratio: `numerator` / `denominator`, a dash when either is missing or zero."""
    if missing(numerator) or missing(denominator) or not denominator:
        return "–"
    return f"{numerator / denominator:.{digits}f}"


def us(value: float | None) -> str:
    """CPU µs per item: two places below 10 µs, one below 1,000, then whole."""
    if missing(value):
        return "–"
    return f"{value:.2f}" if value < 10 else num(value, 1 if value < 1000 else 0)


def ms(latency: Latency, *keys: str) -> str:
    """Some percentiles of a Latency, `p50 / p99` by default."""
    return " / ".join(num(getattr(latency, k), 1) for k in keys or ("p50", "p99"))


def ok(passed: bool) -> str:
    return "ok" if passed else "FAILED"
