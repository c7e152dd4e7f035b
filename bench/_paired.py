"""Paired, interleaved measurement: the two sides of a ratio alternate round by round.

Two benchmarks timed one after the other see different spells of a shared machine's noise,
and their ratio moves more than the effects it claims to show. Here both sides run in the
same test, on connections opened and warmed the same way, alternating round by round or in
short blocks (which side goes first swaps every block, so neither always leads). The
per-round ratio compares two rounds milliseconds apart; its median over a session resists a
noisy spell.

A test repeats the session (fresh connections each time) and stores every session's
medians in pytest-benchmark's ``extra_info``; bench.report shows the median of the
sessions and their range (min-max), and a verdict only when the whole range clears.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

Step = Callable[[], float]  # one timed round of one side: its seconds


def timed(fn: Callable[..., Any], prepare: Callable[[], tuple] | None = None) -> Step:
    """A step that times ``fn(*prepare())``; ``prepare`` (untimed) makes each round's input."""

    def step() -> float:
        args = prepare() if prepare is not None else ()
        start = time.perf_counter()
        fn(*args)
        return time.perf_counter() - start

    return step


def interleave(
    a: Step, b: Step, rounds: int, warmup: int, block: int = 1
) -> tuple[list[float], list[float]]:
    """Run ``a`` and ``b`` alternately, ``block`` rounds of one then of the other (which goes
    first swaps every block): ``warmup`` untimed rounds each, then ``rounds`` timed ones.

    Round ``i`` of ``a`` and round ``i`` of ``b`` are at most two blocks apart. A block longer
    than one round spares rounds of tens of microseconds the cost of waking the other
    side's peer every time, which would otherwise weigh on both and pull the ratio to 1.
    """
    for _ in range(warmup):
        a()
        b()
    times_a: list[float] = []
    times_b: list[float] = []
    for start in range(0, rounds, block):
        n = min(block, rounds - start)
        order = (
            ((b, times_b), (a, times_a)) if (start // block) % 2 else ((a, times_a), (b, times_b))
        )
        for step, times in order:
            times.extend(step() for _ in range(n))
    return times_a, times_b


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(q1, median, q3); a single value is its own quartiles."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def summarize(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """One session: each side's median round and the per-round ratio's quartiles.

    The ratio is ``numerator[i] / denominator[i]``, two rounds timed back to back.
    """
    ratios = [n / d for n, d in zip(numerator, denominator, strict=True)]
    q1, median, q3 = quartiles(ratios)
    return {
        "numerator_s": statistics.median(numerator),
        "denominator_s": statistics.median(denominator),
        "ratio": median,
        "ratio_q1": q1,
        "ratio_q3": q3,
        "rounds": len(ratios),
    }


def record(
    benchmark: Any,
    sessions: int,
    session: Callable[[], dict[str, float]],
    *,
    figure: str,
    numerator: str,
    denominator: str,
    **info: Any,
) -> list[dict[str, float]]:
    """Run ``session`` ``sessions`` times under pytest-benchmark (one benchmark round each)
    and store the figure: ``values`` are the sessions' median ratios."""
    done: list[dict[str, float]] = []
    benchmark.pedantic(lambda: done.append(session()), rounds=sessions, iterations=1)
    benchmark.extra_info.update(
        info,
        kind="pair",
        figure=figure,
        numerator=numerator,
        denominator=denominator,
        values=[s["ratio"] for s in done],
        sessions=done,
    )
    return done
