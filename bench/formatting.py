"""How the report writes a number: units, spreads, chunk sizes, Markdown tables. One place, so
every table and plot label reads a figure the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench.results import Bench
from bench.targets import Figure

KiB = 1024

MiB = 1024 * KiB


def chunk_label(size: int) -> str:
    if not size:
        return "unchunked"
    if size % MiB == 0:
        return f"{size // MiB} MiB"
    return f"{size // KiB} KiB"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f}"


def spread(b: Bench, scale: float = 1e3, digits: int = 2) -> str:
    """Median round with its interquartile range, in ms (or µs: scale 1e6, digits 0)."""
    return f"{b.median * scale:.{digits}f} [{b.q1 * scale:.{digits}f}-{b.q3 * scale:.{digits}f}]"


# How a target's unit (bench.targets) writes a figure; a unit not listed is written as is.
UNIT_FORMATS = {
    "%": "{:.0%}",
    "x": "{:.2f}x",
    "s": "{:.3g} s",
    "MB": "{:.0f} MB",
    "/s": "{:,.0f}/s",
}


def value(v: float, unit: str) -> str:
    if unit == "KiB":  # bytes, written as whole KiB with their sign (a growth or a saving)
        return f"{round(v / KiB):+d} KiB"
    return UNIT_FORMATS.get(unit, "{:g}").format(v)


def figure_text(fig: Figure, unit: str) -> str:
    if len(fig.values) == 1:
        return f"{value(fig.median, unit)} ({fig.spread})"
    return (
        f"{value(fig.median, unit)} [{value(fig.lo, unit)} to {value(fig.hi, unit)}], {fig.spread}"
    )


def table(headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def rate_cell(b: Bench | None) -> str:
    if b is None:
        return ""
    slow, fast = b.mb_per_s_iqr()
    return f"{b.mb_per_s:.0f} [{slow:.0f}-{fast:.0f}]"
