"""bench.report and its verdict rule, on synthetic figures and on a small saved run
(bench/testdata/sample.json: a real ``--benchmark`` run, trimmed)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from bench import targets as tg
from bench.figures import figures
from bench.formatting import chunk_label
from bench.results import Results, load, memory_rows, readings, transfer_curves
from bench.tables import default_chunk, memory_section
from bench.targets import Figure, FigureError, Target
from bench.verdicts import VERDICT_MARK, target_rows

SAMPLE = Path(__file__).parent / "testdata" / "sample.json"
# Whole-class runs only (from the same run; one round of pickle's marked failed).
CLASS = Path(__file__).parent / "testdata" / "class.json"


# --- the verdict rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (0.86, 0.95, tg.MET),  # the whole range clears 85%
        (0.80, 0.90, tg.UNCLEAR),  # straddles it
        (0.60, 0.84, tg.MISSED),  # none of it does
        (0.85, 0.85, tg.MET),  # on the line counts
        (0.95, 1.04, tg.MET),  # over 100% only within the noise: not suspect
        (1.05, 1.71, tg.SUSPECT),  # faster than the plain socket it runs on: never met
    ],
)
def test_verdict_at_least_with_a_physical_bound(lo, hi, expected):
    assert tg.verdict(lo, hi, 0.85, tg.AT_LEAST, bound=1.0) == expected


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [(1.1, 1.2, tg.MET), (1.2, 1.3, tg.UNCLEAR), (1.3, 1.9, tg.MISSED), (0.3, 1.1, tg.MET)],
)
def test_verdict_at_most(lo, hi, expected):
    assert tg.verdict(lo, hi, 1.25, tg.AT_MOST) == expected


def test_verdict_at_most_below_its_bound_is_suspect():
    # json's wire can't be smaller than the text it carries.
    assert tg.verdict(0.97, 0.99, 1.05, tg.AT_MOST, bound=1.0) == tg.SUSPECT


def test_verdict_rejects_a_non_range():
    with pytest.raises(FigureError):
        tg.verdict(2.0, 1.0, 1.5, tg.AT_MOST)
    with pytest.raises(FigureError):
        tg.verdict(float("nan"), 1.0, 1.5, tg.AT_MOST)
    with pytest.raises(ValueError, match="direction"):
        tg.verdict(1.0, 1.0, 1.5, "sideways")


def test_figure_without_readings_fails_loudly():
    with pytest.raises(FigureError, match=r"transfer\.x"):
        Figure("transfer.x", ())
    with pytest.raises(FigureError, match="nan"):
        Figure("transfer.x", (1.0, float("nan")))
    fig = Figure("k", (3.0, 1.0, 2.0))
    assert (fig.lo, fig.median, fig.hi) == (1.0, 2.0, 3.0)


def test_missing_figure_fails_loudly_unless_not_yet_measured():
    required = Target("framed", "transfer.raw-whole.vs-socket", 0.85, tg.AT_LEAST, bound=1.0)
    later = Target("later", "servers.5000.rss-mb", 100, tg.AT_MOST, required=False)
    with pytest.raises(FigureError, match=r"transfer\.raw-whole\.vs-socket"):
        tg.judge(required, {})
    assert tg.judge(required, {}, partial=True) == tg.NOT_MEASURED
    assert tg.judge(later, {}) == tg.NOT_MEASURED
    figs = {"servers.5000.rss-mb": Figure("servers.5000.rss-mb", (80.0, 120.0))}
    assert tg.judge(later, figs) == tg.UNCLEAR


def test_targets_are_well_formed():
    keys = [t.key for t in tg.TARGETS]
    assert len(keys) == len(set(keys))
    assert all(t.direction in (tg.AT_LEAST, tg.AT_MOST) for t in tg.TARGETS)
    later = {t.key for t in tg.TARGETS if not t.required}
    assert {"class.questions-per-s", "eco.small.vs-mpconn-echo"} <= later


# --- synthetic runs --------------------------------------------------------------------------


def _pair(figure: str, values: list[float]) -> dict:
    sessions = [
        {
            "numerator_s": 5e-4,
            "denominator_s": 5e-4 / v,
            "ratio": v,
            "ratio_q1": v,
            "ratio_q3": v,
            "rounds": 3,
        }
        for v in values
    ]
    return {
        "name": f"test_pair[{figure}]",
        "group": "pair",
        "stats": {"median": 0.1, "q1": 0.1, "q3": 0.1},
        "extra_info": {
            "kind": "pair",
            "figure": figure,
            "values": values,
            "sessions": sessions,
            "numerator": "a",
            "denominator": "b",
        },
    }


def _with_pairs(tmp_path: Path, **changes: list[float] | None) -> Path:
    """The sample run with some paired figures' values replaced (None: removed)."""
    data = json.loads(SAMPLE.read_text(encoding="utf-8"))
    for key, values in changes.items():
        figure = key.replace("__", ".").replace("_", "-")
        data["benchmarks"] = [
            b for b in data["benchmarks"] if b["extra_info"].get("figure") != figure
        ]
        if values is not None:
            data["benchmarks"].append(_pair(figure, values))
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _targets_of(path: Path, **kw) -> dict[str, str]:
    res = load(path)
    rows = target_rows(res, figures(res), **kw)
    return {name.split(" (`")[1].rstrip("`)"): verdict for name, _, verdict in rows}


def test_over_100_percent_framed_reads_suspect(tmp_path):
    path = _with_pairs(tmp_path, transfer__raw_whole__vs_socket=[1.2, 1.5, 1.71])
    verdicts = _targets_of(path)
    assert verdicts["transfer.raw-whole.vs-socket"].startswith("**suspect**")


def test_straddling_range_reads_unclear(tmp_path):
    path = _with_pairs(tmp_path, small__raw__vs_mpconn__pinned=[1.1, 1.2, 1.4])
    assert _targets_of(path)["small.raw.vs-mpconn.pinned"] == "unclear"


def test_missing_required_figure_stops_the_report(tmp_path, capsys):
    path = _with_pairs(tmp_path, book__raw_whole__vs_mpconn=None)
    out = tmp_path / "b.md"
    assert report.main([str(path), "--out", str(out), "--no-plots"]) == 1
    err = capsys.readouterr().err
    assert "book.raw-whole.vs-mpconn" in err and err.count("\n") == 1
    assert not out.exists()
    assert report.main([str(path), "--out", str(out), "--partial", "--no-plots"]) == 0
    assert "not measured" in out.read_text(encoding="utf-8")


def test_empty_figure_stops_the_report(tmp_path, capsys):
    path = _with_pairs(tmp_path, codec__json__vs_msgpack=[])
    assert report.main([str(path), "--out", str(tmp_path / "b.md"), "--partial"]) == 1
    assert "codec.json.vs-msgpack" in capsys.readouterr().err


def test_duplicate_figure_is_an_error(tmp_path):
    data = json.loads(SAMPLE.read_text(encoding="utf-8"))
    pair = next(b for b in data["benchmarks"] if b["extra_info"].get("kind") == "pair")
    data["benchmarks"].append(copy.deepcopy(pair))
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(FigureError, match="twice"):
        figures(load(path))


# --- the saved run ---------------------------------------------------------------------------


@pytest.fixture
def results() -> Results:
    return load(SAMPLE)


def test_sample_has_every_kind_and_figure(results):
    kinds = {b.kind for b in results.benches}
    assert {"encode", "decode", "transfer", "peer", "small", "memory", "pair"} <= kinds
    assert results.codecs()[:4] == ["raw", "json", "pickle", "msgpack"]
    figs = figures(results)
    for target in tg.TARGETS:
        assert (target.key in figs) == target.required, target.key


def test_every_target_has_a_verdict(results):
    rows = target_rows(results, figures(results))
    assert len(rows) == len(tg.TARGETS)
    assert {v for _, _, v in rows} <= set(VERDICT_MARK.values())
    later = [v for name, _, v in rows if "servers." in name]
    assert later and all(v == "not measured" for v in later)


def test_default_chunk_is_a_measured_size(results):
    chosen = default_chunk(results)
    assert chosen is not None
    size, why = chosen
    assert size in transfer_curves(results, "stream")["raw"]
    assert chunk_label(size) in why


def test_memory_readings_agree_or_zero_is_explained(results):
    text = memory_section(results)
    rows = memory_rows(results)
    whole = [w for _, w, _ in rows if w is not None]
    for b in whole:
        traced = readings(b, "peak_bytes")
        rss = readings(b, "rss_peak_bytes")
        # A fresh receiver per configuration: RSS within 20% of tracemalloc, never 0.
        assert min(rss) >= 0.8 * min(traced)
    if "(0*)" in text:
        assert "A reading of 0 is real" in text


def test_main_writes_tables_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    out, img = tmp_path / "benchmarks.md", tmp_path / "img"
    assert report.main([str(SAMPLE), "--out", str(out), "--img", str(img)]) == 0
    text = out.read_text(encoding="utf-8")
    for heading in ("## Machine", "## Targets", "## Paired figures", "## Codecs", "## Memory"):
        assert heading in text
    assert "## The class" in text
    assert "| msgpack |" in text
    assert "Plots were skipped" not in text
    for name in ("throughput.png", "codecs.png", "memory.png", "pairs.png"):
        png = img / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](img/{name})" in text


def test_without_matplotlib_tables_only(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ImportError
    out, img = tmp_path / "benchmarks.md", tmp_path / "img"
    assert report.main([str(SAMPLE), "--out", str(out), "--img", str(img)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "Plots were skipped" in text
    assert "| chunk size |" in text
    assert not img.exists()


def test_notes_are_appended(tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("## Analysis\n\nwhere the time goes\n", encoding="utf-8")
    out = tmp_path / "b.md"
    args = [str(SAMPLE), "--out", str(out), "--no-plots", "--notes", str(notes)]
    assert report.main(args) == 0
    assert out.read_text(encoding="utf-8").rstrip().endswith("where the time goes")


def test_untimed_run_is_refused(tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"benchmarks": []}), encoding="utf-8")
    assert report.main([str(empty), "--out", str(tmp_path / "x.md")]) == 1
    assert "--benchmark" in capsys.readouterr().out


@pytest.mark.timeout(60)
def test_missing_file_is_a_one_line_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench.report", str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "missing.json" in done.stderr
    assert "Traceback" not in done.stderr


def test_class_table(tmp_path):
    out = tmp_path / "benchmarks.md"
    args = [str(CLASS), "--out", str(out), "--no-plots", "--partial"]
    assert report.main(args) == 0
    text = out.read_text(encoding="utf-8")
    assert "## The class" in text
    assert "| codec | 10 students, questions/s |" in text
    assert "(**FAILED**)" in text
    assert "Median of 5 rounds [min-max]" in text
    # The other sections say they have nothing rather than crash.
    assert "_No codec benchmarks in this run._" in text


def test_compare_two_sessions_side_by_side(tmp_path):
    out = tmp_path / "b.md"
    same = [str(SAMPLE), "--out", str(out), "--no-plots", "--compare"]
    assert report.main([*same, str(SAMPLE)]) == 0
    assert "every verdict agrees" in out.read_text(encoding="utf-8")
    other = _with_pairs(tmp_path, transfer__raw_whole__vs_socket=[1.2, 1.5, 1.71])
    assert report.main([*same, str(other)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "**1 verdicts differ.**" in text
    row = next(line for line in text.splitlines() if line.startswith("| `transfer.raw-whole."))
    assert "171%" in row and row.rstrip().endswith("| **no** |")


def test_pairs_table_says_where_each_pair_ran(tmp_path):
    from bench.tables import pairs_section

    data = json.loads(SAMPLE.read_text(encoding="utf-8"))
    split = _pair("book.raw-whole.vs-mpconn", [1.0, 1.1])
    split["extra_info"]["placement"] = "split"
    data["benchmarks"] = [_pair("small.raw.vs-mpconn.unpinned", [1.0]), split]
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    rows = {
        line.split("|")[1].strip(): line.split("|")[-2].strip()
        for line in pairs_section(load(path)).splitlines()
        if line.startswith("| `")
    }
    assert rows == {
        "`book.raw-whole.vs-mpconn`": "split",
        "`small.raw.vs-mpconn.unpinned`": "not recorded",  # older JSON: no guess
    }
