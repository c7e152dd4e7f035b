"""Each target's verdict (met, missed, unclear, suspect, not measured) with what was measured,
and two runs' verdicts side by side.
"""

from __future__ import annotations

import statistics

from bench import targets as tg
from bench.figures import figures
from bench.formatting import figure_text, ms, table, us
from bench.results import Results
from bench.targets import Figure

VERDICT_MARK = {
    tg.MET: "met",
    tg.MISSED: "**missed**",
    tg.UNCLEAR: "unclear",
    tg.SUSPECT: "**suspect** (beyond what the physics allows: noise, not a result)",
    tg.NOT_MEASURED: "not measured",
}


def target_rows(
    res: Results, figs: dict[str, Figure], partial: bool = False
) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for every target; FigureError for a missing required one."""
    rows = []
    for target in tg.TARGETS:
        verdict = tg.judge(target, figs, partial=partial)
        fig = figs.get(target.key)
        measured = "" if fig is None else figure_text(fig, target.unit) + sides(res, target.key)
        rows.append((f"{target.name} (`{target.key}`)", measured, VERDICT_MARK[verdict]))
    return rows


def sides(res: Results, key: str) -> str:
    """For a paired figure: each side's median round (median over sessions)."""
    pair = next((b for b in res.of("pair") if b.info.get("figure") == key), None)
    if pair is None:
        return ""
    sessions = pair.info["sessions"]
    num = statistics.median(s["numerator_s"] for s in sessions)
    den = statistics.median(s["denominator_s"] for s in sessions)
    fmt = ms if max(num, den) >= 1e-3 else us
    unit = "ms" if fmt is ms else "µs"
    return (
        f"; {pair.info['numerator']} {fmt(num)} {unit}, "
        f"{pair.info['denominator']} {fmt(den)} {unit}"
    )


def compare_section(res: Results, other: Results, partial: bool = False) -> str:
    """Both runs' ranges and verdicts side by side, and whether every verdict agrees."""
    mine, theirs = figures(res), figures(other)
    rows, differ = [], 0
    for target in tg.TARGETS:
        a = tg.judge(target, mine, partial=partial)
        b = tg.judge(target, theirs, partial=partial)
        if a == tg.NOT_MEASURED and b == tg.NOT_MEASURED:
            continue
        differ += a != b
        cells = [
            figure_text(figs[target.key], target.unit) if target.key in figs else ""
            for figs in (mine, theirs)
        ]
        rows.append((f"`{target.key}`", cells[0], a, cells[1], b, "yes" if a == b else "**no**"))
    head = f"This run ({res.when or res.source}) against {other.source} ({other.when or '?'}): " + (
        "every verdict agrees." if not differ else f"**{differ} verdicts differ.**"
    )
    return (
        head
        + "\n\n"
        + table(["figure", "this run", "verdict", "other run", "verdict", "same"], rows)
    )
