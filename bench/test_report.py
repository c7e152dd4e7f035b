"""bench.report on a small saved run (bench/testdata/sample.json, cut down from a real one)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import report

SAMPLE = Path(__file__).parent / "testdata" / "sample.json"
# Whole-class runs only (cut down from a real one; pickle's 10-student run marked failed).
CLASS = Path(__file__).parent / "testdata" / "class.json"


@pytest.fixture
def results() -> report.Results:
    return report.load(SAMPLE)


def test_loads_every_kind(results):
    kinds = {b.kind for b in results.benches}
    assert {"encode", "decode", "transfer", "peer", "small", "memory"} <= kinds
    assert results.codecs()[:4] == ["raw", "json", "pickle", "msgpack"]
    assert results.baseline_rate() and results.baseline_rate() > 0


def test_targets_cover_the_issue(results):
    rows = report.targets(results)
    names = " ".join(r[0] for r in rows)
    for words in ("85%", "multiprocessing.connection", "4x chunk", "5%", "1.3x", "2x"):
        assert words in names
    assert all(r[2] in ("met", "**missed**") for r in rows)


def test_default_chunk_is_a_measured_size(results):
    chosen = report.default_chunk(results)
    assert chosen is not None
    size, why = chosen
    streamed = report.transfer_curves(results, "stream")["raw"]
    assert size in streamed
    assert report.chunk_label(size) in why


def test_main_writes_tables_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    out, img = tmp_path / "benchmarks.md", tmp_path / "img"
    assert report.main([str(SAMPLE), "--out", str(out), "--img", str(img)]) == 0
    text = out.read_text(encoding="utf-8")
    for heading in ("## Machine", "## Targets", "## Codecs", "## Transport", "## Memory"):
        assert heading in text
    assert "| msgpack |" in text
    assert "multiprocessing.connection" in text
    assert "Plots were skipped" not in text
    assert "## The class" not in text  # no whole-class runs in the sample
    for name in ("throughput.png", "codecs.png", "memory.png"):
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
    args = [str(SAMPLE), "--out", str(out), "--img", str(tmp_path / "i"), "--notes", str(notes)]
    assert report.main(args) == 0
    assert out.read_text(encoding="utf-8").rstrip().endswith("where the time goes")


def test_untimed_run_is_refused(tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"benchmarks": []}), encoding="utf-8")
    assert report.main([str(empty), "--out", str(tmp_path / "x.md")]) == 1
    assert "--benchmark" in capsys.readouterr().out


def test_class_table(tmp_path):
    out = tmp_path / "benchmarks.md"
    assert report.main([str(CLASS), "--out", str(out), "--img", str(tmp_path / "img")]) == 0
    text = out.read_text(encoding="utf-8")
    assert "## The class" in text
    assert "| codec | 1 student, questions/s | 10 students, questions/s |" in text
    assert "| json | 1,809 | 1,402 |" in text
    assert "| msgpack | 2,084 |  |" in text  # not measured with 10 students
    assert "| pickle |  | 1,444 (**FAILED**) |" in text
    assert "1 x 1000, 10 x 100" in text
    # The other sections say they have nothing rather than crash.
    assert "_No codec benchmarks in this run._" in text
