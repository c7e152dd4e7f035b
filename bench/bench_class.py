"""Part 4: questions per second through the whole class, per codec and number of students.

Each round is one ``python -m ayudantia run`` (Profesor, Tareo, Docencio, N Estudiantes as
separate processes on loopback, ``--interval 0``). The students connect, wait on the run's
start barrier and start asking together; the figure is the run's own
``questions_per_second`` from ``--report``: answers over the window from the class's first
question to its last answer (``window_s``), so start-up and closing are not in it. The test
keeps every round's figure; bench.report shows their median and range. Every round must
come back OK: every question answered, at the student who asked it, and the Profesor's
count equal to the answers delivered.

The ordinary ``uv run pytest`` runs one small class (json, 2 students, 5 questions), untimed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.conftest import benchmarking_enabled, rounds

# (codec, students, questions each): 1000 answers, 4-5 s a round on an idle 2-core machine,
# most of it starting the 13 processes; 5 rounds each.
CLASS_MATRIX = [
    ("json", 10, 100),
    ("msgpack", 10, 100),
    ("pickle", 10, 100),
]
QUICK_MATRIX = [("json", 2, 5)]
CLASS_ROUNDS = 5


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "class_config" not in metafunc.fixturenames:
        return
    matrix = CLASS_MATRIX if benchmarking_enabled(metafunc.config) else QUICK_MATRIX
    metafunc.parametrize("class_config", matrix, ids=lambda c: f"{c[0]}-{c[1]}x{c[2]}")


def class_figure(codec: str, students: int, questions: int) -> str:
    """The figure key of one class configuration, e.g. ``class.json.10x100``."""
    return f"class.{codec}.{students}x{questions}"


def run_class(
    codec: str, students: int, questions: int, report: Path, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One whole class; its ``--report`` summary, with the exit status and output on failure."""
    argv = [
        *(sys.executable, "-m", "ayudantia", "run"),
        *("--students", str(students), "--questions", str(questions)),
        *("--interval", "0", "--codec", codec, "--report", str(report)),
        *extra,
    ]
    report.unlink(missing_ok=True)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=110)
    summary = json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
    summary["returncode"] = proc.returncode
    if proc.returncode or not summary.get("ok"):
        summary["output"] = (proc.stdout + proc.stderr)[-3000:]
    return summary


def test_class(benchmark, benchmarking, class_config, tmp_path):
    class_codec, students, questions = class_config
    report = tmp_path / "run.json"
    summaries: list[dict[str, Any]] = []
    benchmark.group = "class"
    benchmark.pedantic(
        lambda: summaries.append(run_class(class_codec, students, questions, report)),
        rounds=rounds(benchmarking, CLASS_ROUNDS),
        iterations=1,
    )
    ok = bool(summaries) and all(
        s["returncode"] == 0
        and s.get("ok")
        and s["answered"] == students * questions
        and s["profesor_count"] == s["answered"]
        for s in summaries
    )
    benchmark.extra_info.update(
        kind="class",
        figure=class_figure(class_codec, students, questions),
        codec=class_codec,
        students=students,
        questions=questions,
        values=[s.get("questions_per_second", 0.0) for s in summaries],
        window_s=[s.get("window_s", 0.0) for s in summaries],
        ok=ok,
    )
    failed = [s for s in summaries if s["returncode"] or not s.get("ok")]
    assert ok, failed[0].get("output", failed[0]) if failed else summaries
