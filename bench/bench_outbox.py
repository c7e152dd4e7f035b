"""The outbox's cost: the class with the Docencio's outbox on disk against /dev/shm.

The Docencio commits each answered question's count key to its SQLite outbox (WAL,
``synchronous=FULL``) before the answer goes (docs/counting.md). On /dev/shm the fsync
costs nothing, so the pair isolates what the disk adds. Each round is one
``ayudantia run`` (10 students, ``--interval 0``) with ``--outbox-dir`` on one side or the
other; the two sides alternate round by round, and which goes first swaps every round
(bench._paired's rule), so both see the same spells of a shared machine's noise.

Figures: each side's questions/s with the class flat out (the run's own window, first
question to last answer), each side's p50 latency with the class paced, and the per-pair p50
growth (disk minus /dev/shm, seconds). The ordinary ``uv run pytest`` runs one pair of
small classes, untimed.
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
# Throughput: the class flat out (--interval 0), 4,000 answers a round. Its p50 is queueing
# (every student sends all its questions at once), so latency is measured on a paced class
# (each student waits 10-60 ms between questions): there the p50 is one question's trip,
# the outbox's commit included.
FLOOD = (10, 400, 0.0)
PACED = (10, 100, 0.01)
QUICK = (2, 5, 0.0)
PAIRS = 5  # per kind: 20 runs of the class, a few minutes on 2 cores


def _round(where: Path, shape: tuple[int, int, float], report: Path) -> dict[str, Any]:
    students, questions, interval = shape
    with tempfile.TemporaryDirectory(prefix="outbox-", dir=where) as outbox_dir:
        extra = ("--outbox-dir", outbox_dir, "--interval", str(interval))
        summary = run_class("json", students, questions, report, extra)
    assert summary["returncode"] == 0 and summary.get("ok"), summary.get("output", summary)
    assert summary["profesor_count"] == summary["answered"] == students * questions
    return summary


def _pairs(n: int, shape: tuple[int, int, float], tmp: Path) -> tuple[list[dict], list[dict]]:
    """``n`` rounds per side, alternating, which side goes first swapping every pair."""
    disk: list[dict] = []
    shm: list[dict] = []
    for i in range(n):
        sides = [(tmp, disk), (SHM, shm)]
        for where, out in sides if i % 2 == 0 else reversed(sides):
            out.append(_round(where, shape, tmp / "run.json"))
    return disk, shm


@pytest.mark.timeout(1200)
def test_outbox_disk_vs_shm(benchmark, benchmarking, tmp_path):
    if not SHM.is_dir():
        pytest.skip("no /dev/shm here: nothing to compare the disk with")
    n = rounds(benchmarking, PAIRS)
    flood, paced = (FLOOD, PACED) if benchmarking else (QUICK, QUICK)
    benchmark.group = "outbox"
    runs: dict[str, tuple[list[dict], list[dict]]] = {}

    def session() -> None:
        runs["flood"] = _pairs(n, flood, tmp_path)
        # the ordinary run only checks the code runs: one pair of small classes does
        runs["paced"] = _pairs(n, paced, tmp_path) if benchmarking else runs["flood"]

    benchmark.pedantic(session, rounds=1, iterations=1)
    qps = [[s["questions_per_second"] for s in side] for side in runs["flood"]]
    p50 = [[s["latency_p50"] for s in side] for side in runs["paced"]]
    growth = [d - m for d, m in zip(*p50, strict=True)]
    benchmark.extra_info.update(
        kind="outbox",
        flood=flood,
        paced=paced,
        figures={
            "outbox.disk.questions-per-s": qps[0],
            "outbox.shm.questions-per-s": qps[1],
            "outbox.disk.p50-s": p50[0],
            "outbox.shm.p50-s": p50[1],
            "outbox.p50-growth-s": growth,
        },
        medians={
            "disk_qps": statistics.median(qps[0]),
            "shm_qps": statistics.median(qps[1]),
            "disk_p50_ms": statistics.median(p50[0]) * 1000,
            "shm_p50_ms": statistics.median(p50[1]) * 1000,
            "p50_growth_ms": statistics.median(growth) * 1000,
        },
    )
    assert len(growth) == len(qps[0]) == n
