"""Paired, interleaved measurement: the two sides of a ratio alternate round by round.

Two benchmarks timed one after the other see different spells of a shared machine's noise,
and their ratio moves more than the effects it claims to show. Here both sides run in the
same test, on connections opened and warmed the same way, alternating every round (the
order swaps each round, so neither side always runs first). The per-round ratio compares
two rounds a few milliseconds apart; its median over a session resists a noisy spell.

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


def interleave(a: Step, b: Step, rounds: int, warmup: int) -> tuple[list[float], list[float]]:
    """Run ``a`` and ``b`` alternately: ``warmup`` untimed pairs, then ``rounds`` timed ones."""
    for _ in range(warmup):
        a()
        b()
    times_a: list[float] = []
    times_b: list[float] = []
    for i in range(rounds):
        if i % 2:
            times_b.append(b())
            times_a.append(a())
        else:
            times_a.append(a())
            times_b.append(b())
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
