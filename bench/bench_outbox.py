"""The outbox's cost: the class with the Docencio's outbox on disk against /dev/shm.

The Docencio commits each answered question's count key to its SQLite outbox (WAL,
``synchronous=FULL``) before the answer goes (docs/counting.md). On /dev/shm the fsync
costs nothing, so the pair isolates what the disk adds. Each round is one
``ayudantia run`` (10 students, ``--interval 0``) with ``--outbox-dir`` on one side or the
other; the two sides alternate round by round, and which goes first swaps every round
(bench._paired's rule), so both see the same spells of a shared machine's noise.

Figures: each side's questions/s (the run's own window, first question to last answer),
each side's p50 latency, and the per-pair p50 growth (disk minus /dev/shm, seconds). The
ordinary ``uv run pytest`` runs one small pair, untimed.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import pytest

from bench.bench_class import run_class
from bench.conftest import rounds

SHM = Path("/dev/shm")
STUDENTS, QUESTIONS = 10, 400  # 4,000 answers a round
QUICK = (2, 5)
PAIRS = 7


def _round(where: Path, students: int, questions: int, report: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="outbox-", dir=where) as outbox_dir:
        summary = run_class("json", students, questions, report, ("--outbox-dir", outbox_dir))
    assert summary["returncode"] == 0 and summary.get("ok"), summary.get("output", summary)
    assert summary["profesor_count"] == summary["answered"] == students * questions
    return summary


def test_outbox_disk_vs_shm(benchmark, benchmarking, tmp_path):
    if not SHM.is_dir():
        pytest.skip("no /dev/shm here: nothing to compare the disk with")
    students, questions = (STUDENTS, QUESTIONS) if benchmarking else QUICK
    disk, shm = [], []

    def pair(i: int) -> None:
        sides = [(tmp_path, disk), (SHM, shm)]
        for where, out in sides if i % 2 == 0 else reversed(sides):
            out.append(_round(where, students, questions, tmp_path / "run.json"))

    n = rounds(benchmarking, PAIRS)
    benchmark.group = "outbox"
    count = iter(range(n))
    benchmark.pedantic(lambda: pair(next(count)), rounds=n, iterations=1)
    qps = {
        side: [s["questions_per_second"] for s in runs]
        for side, runs in (("disk", disk), ("shm", shm))
    }
    p50 = {side: [s["latency_p50"] for s in runs] for side, runs in (("disk", disk), ("shm", shm))}
    growth = [d - m for d, m in zip(p50["disk"], p50["shm"], strict=True)]
    benchmark.extra_info.update(
        kind="outbox",
        students=students,
        questions=questions,
        figures={
            "outbox.disk.questions-per-s": qps["disk"],
            "outbox.shm.questions-per-s": qps["shm"],
            "outbox.disk.p50-s": p50["disk"],
            "outbox.shm.p50-s": p50["shm"],
            "outbox.p50-growth-s": growth,
        },
        medians={
            "disk_qps": statistics.median(qps["disk"]),
            "shm_qps": statistics.median(qps["shm"]),
            "disk_p50_ms": statistics.median(p50["disk"]) * 1000,
            "shm_p50_ms": statistics.median(p50["shm"]) * 1000,
            "p50_growth_ms": statistics.median(growth) * 1000,
        },
    )
    assert len(disk) == len(shm) == n
