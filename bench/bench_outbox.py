"""The outbox's cost: the class with the Docencio's outbox on disk against /dev/shm.

The Docencio commits each answered question's count key to its SQLite outbox (WAL,
``synchronous=FULL`` by default) before the answer goes (docs/counting.md). On /dev/shm the
fsync costs nothing, so the comparison isolates what the disk adds; a third side runs the
outbox on disk with ``--outbox-sync normal`` (no fsync per commit: survives any crash of
the process, not a power cut). Each round is one ``ayudantia run`` with ``--outbox-dir`` on
one side or another; the sides take turns round by round, and which goes first rotates
every round (bench._paired's rule), so all see the same spells of a shared machine's noise.

Figures: each side's questions/s with the class flat out (the run's own window, first
question to last answer), each side's p50 latency with the class paced, and the per-round
p50 growth against /dev/shm (seconds). The ordinary ``uv run pytest`` runs one round of
small classes per side, untimed.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

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
PAIRS = 4  # rounds per side and kind: 24 runs of the class, several minutes on 2 cores


def _round(where: Path, sync: str, shape: tuple[int, int, float], report: Path) -> dict:
    students, questions, interval = shape
    saved = os.environ.get("AYUDANTIA_OUTBOX_SYNC")
    os.environ["AYUDANTIA_OUTBOX_SYNC"] = sync  # the run passes its environment on
    try:
        with tempfile.TemporaryDirectory(prefix="outbox-", dir=where) as outbox_dir:
            extra = ("--outbox-dir", outbox_dir, "--interval", str(interval))
            summary = run_class("json", students, questions, report, extra)
    finally:
        if saved is None:
            del os.environ["AYUDANTIA_OUTBOX_SYNC"]
        else:
            os.environ["AYUDANTIA_OUTBOX_SYNC"] = saved
    assert summary["returncode"] == 0 and summary.get("ok"), summary.get("output", summary)
    assert summary["profesor_count"] == summary["answered"] == students * questions
    return summary


def _rounds(n: int, shape: tuple[int, int, float], tmp: Path) -> dict[str, list[dict]]:
    """``n`` rounds per side, the sides in turn, which side goes first rotating every round."""
    sides = [("disk", tmp, "full"), ("disk-normal", tmp, "normal"), ("shm", SHM, "full")]
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in sides}
    for i in range(n):
        for name, where, sync in sides[i % 3 :] + sides[: i % 3]:
            runs[name].append(_round(where, sync, shape, tmp / "run.json"))
    return runs


@pytest.mark.timeout(1200)
def test_outbox_disk_vs_shm(benchmark, benchmarking, tmp_path):
    if not SHM.is_dir():
        pytest.skip("no /dev/shm here: nothing to compare the disk with")
    n = rounds(benchmarking, PAIRS)
    flood, paced = (FLOOD, PACED) if benchmarking else (QUICK, QUICK)
    benchmark.group = "outbox"
    runs: dict[str, tuple[list[dict], list[dict]]] = {}

    def session() -> None:
        runs["flood"] = _rounds(n, flood, tmp_path)
        # the ordinary run only checks the code runs: one round of small classes does
        runs["paced"] = _rounds(n, paced, tmp_path) if benchmarking else runs["flood"]

    benchmark.pedantic(session, rounds=1, iterations=1)
    qps = {k: [s["questions_per_second"] for s in v] for k, v in runs["flood"].items()}
    p50 = {k: [s["latency_p50"] for s in v] for k, v in runs["paced"].items()}
    growth = [d - m for d, m in zip(p50["disk"], p50["shm"], strict=True)]
    growth_normal = [d - m for d, m in zip(p50["disk-normal"], p50["shm"], strict=True)]
    benchmark.extra_info.update(
        kind="outbox",
        flood=flood,
        paced=paced,
        figures={
            "outbox.disk.questions-per-s": qps["disk"],
            "outbox.disk-normal.questions-per-s": qps["disk-normal"],
            "outbox.shm.questions-per-s": qps["shm"],
            "outbox.disk.p50-s": p50["disk"],
            "outbox.disk-normal.p50-s": p50["disk-normal"],
            "outbox.shm.p50-s": p50["shm"],
            "outbox.p50-growth-s": growth,
            "outbox.normal.p50-growth-s": growth_normal,
        },
        medians={
            **{f"{k}_qps": statistics.median(v) for k, v in qps.items()},
            **{f"{k}_p50_ms": statistics.median(v) * 1000 for k, v in p50.items()},
            "p50_growth_ms": statistics.median(growth) * 1000,
            "normal_p50_growth_ms": statistics.median(growth_normal) * 1000,
        },
    )
    assert len(growth) == len(qps["disk"]) == n
