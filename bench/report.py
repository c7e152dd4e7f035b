"""Turn pytest-benchmark's JSON into docs/benchmarks.md and the plots under docs/img/.

    uv run pytest --benchmark --benchmark-json=out.json
    uv run python -m bench.report out.json

Without an argument it reads ``out.json``, else the newest run that ``--benchmark-autosave``
left under ``.benchmarks/``. Plots need matplotlib (``uv sync --group bench``); without it the
tables are still written and the report says the plots were skipped.

Every figure is a median with its spread, never a best round: absolute times are the median
round with the interquartile range; a ratio is a paired figure (bench._paired), the median
of its sessions with their min-max. Targets read met, missed, unclear or suspect by the rule
in bench.targets. A required figure that is missing or empty stops the report (exit 1)
instead of leaving its row out; ``--partial`` accepts a run of some benchmarks only.

This module is the command line only; each piece below it imports only downward: results
(loading a run), figures (the keyed figures), formatting (cells and tables), verdicts,
tables (the sections), network_report, canvas and plots (the PNGs), document (the Markdown).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import plots as plotting
from bench.document import render
from bench.figures import figures
from bench.results import DEFAULT_IMG, ROOT, find_results, load
from bench.targets import FigureError

DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
DEFAULT_NOTES = ROOT / "bench" / "notes.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("results", nargs="?", help="pytest-benchmark JSON (default: out.json)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown to write")
    parser.add_argument("--img", type=Path, default=DEFAULT_IMG, help="directory for the PNGs")
    parser.add_argument(
        "--notes",
        type=Path,
        default=DEFAULT_NOTES if DEFAULT_NOTES.is_file() else None,
        help="Markdown appended verbatim (default: bench/notes.md; --notes '' for none)",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="OTHER_JSON",
        help="another session's JSON: show both runs' ranges and verdicts side by side",
    )
    parser.add_argument(
        "--partial",
        action="store_true",
        help="a run of some benchmarks only: missing figures read 'not measured'",
    )
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    try:
        res = load(find_results(args.results))
        other = load(args.compare) if args.compare else None
        notes = args.notes.read_text(encoding="utf-8") if args.notes and args.notes.name else ""
    except (OSError, ValueError) as exc:
        print(f"bench.report: {exc}", file=sys.stderr)
        return 2
    if not res.benches:
        print(f"{res.source}: no benchmark results (was the run timed? use --benchmark)")
        return 1
    try:
        # Render once before plotting, so a bad figure fails before any file is written.
        render(res, [], None, args.out, notes, args.partial, other)
        written, skipped = (
            ([], "--no-plots")
            if args.no_plots
            else plotting.make_plots(res, args.img, figures(res))
        )
        text = render(res, written, skipped, args.out, notes, args.partial, other)
    except FigureError as exc:
        print(f"bench.report: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    for p in written:
        print(f"wrote {p}")
    if skipped:
        print(f"plots skipped: {skipped}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
