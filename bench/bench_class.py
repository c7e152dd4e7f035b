"""Part 4: questions per second through the whole class, per codec and number of students.

Each round is one ``python -m ayudantia run`` (Profesor, Tareo, Docencio, N Estudiantes as
separate processes on loopback, ``--interval 0``). pytest-benchmark times the whole run,
start-up included; the figure that matters, ``questions_per_s``, is the run's own
``questions_per_second`` from ``--report`` (answers over the students' first question to last
answer), best of the rounds. Every round must come back OK: every question answered, at the
student who asked it, and the Profesor's count equal to the answers delivered.

The ordinary ``uv run pytest`` runs one small class (json, 1 student, 5 questions), untimed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.conftest import benchmarking_enabled, rounds

CLASS_CODECS = ["json", "msgpack", "pickle"]
# students -> questions per student: about 1000 answers, a few seconds a round on 2 cores.
CLASS_LOADS = {1: 1000, 10: 100}
QUICK_LOAD = (1, 5)
CLASS_ROUNDS = 3


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "class_codec" not in metafunc.fixturenames:
        return
    if benchmarking_enabled(metafunc.config):
        codecs, loads = CLASS_CODECS, list(CLASS_LOADS.items())
    else:
        codecs, loads = ["json"], [QUICK_LOAD]
    metafunc.parametrize("class_codec", codecs)
    metafunc.parametrize("class_load", loads, ids=lambda load: f"{load[0]}x{load[1]}")


def run_class(codec: str, students: int, questions: int, report: Path) -> dict[str, Any]:
    """One whole class; its ``--report`` summary, with the exit status and output on failure."""
    argv = [
        *(sys.executable, "-m", "ayudantia", "run"),
        *("--students", str(students), "--questions", str(questions)),
        *("--interval", "0", "--codec", codec, "--report", str(report)),
    ]
    report.unlink(missing_ok=True)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=110)
    summary = json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
    summary["returncode"] = proc.returncode
    if proc.returncode or not summary.get("ok"):
        summary["output"] = (proc.stdout + proc.stderr)[-3000:]
    return summary


def test_class(benchmark, benchmarking, class_codec, class_load, tmp_path):
    students, questions = class_load
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
        codec=class_codec,
        students=students,
        questions=questions,
        questions_per_s=max((s.get("questions_per_second", 0.0) for s in summaries), default=0),
        ok=ok,
    )
    failed = [s for s in summaries if s["returncode"] or not s.get("ok")]
    assert ok, failed[0].get("output", failed[0]) if failed else summaries
