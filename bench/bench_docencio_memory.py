"""5,000 students on one default Docencio: its peak resident set (VmHWM) and its threads.

Why VmHWM and not a sampled RSS: a sampler that looks every 20 ms can miss the peak (the
moment 5,000 connections and their first questions are all in the process at once); the
kernel's high-water mark cannot. The Docencio runs as a default class runs it: log level
INFO, its outbox on disk (``--outbox`` in a temporary directory, default sync), reporting to
a real Profesor's panel (the Informante), a real Tareo upstream. The students are
bench/loadgen/'s, in this process: 5,000 connect at once, each asks one "Contenido", all
are answered, then they close. The figures are read from ``/proc/PID/status`` of the
Docencio after the round (``VmHWM``, ``Threads``; the thread count's peak is sampled).

Each round gets a fresh Docencio, so each VmHWM is one round's peak. The ordinary
``uv run pytest`` runs one round of 200 students, untimed.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.conftest import rounds
from tests.procs import running

MEMORY_ROUNDS = 3
STUDENTS = 5000


def proc_status(pid: int) -> dict[str, int]:
    """``VmHWM``, ``VmRSS`` (bytes) and ``Threads`` of ``pid``, from ``/proc/PID/status``."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            out[name] = int(value.split()[0]) * 1024  # kB
        elif name == "Threads":
            out[name] = int(value)
    return out


def one_round(tmp: Path, n: int) -> dict[str, Any]:
    """A fresh default class's Docencio under ``n`` students; its figures and the load's."""
    db = tmp / "profesor.sqlite3"
    db.unlink(missing_ok=True)
    with contextlib.ExitStack() as stack:
        profesor = stack.enter_context(running("profesor", "--port", "0", "--db", str(db)))
        url = f"http://{profesor.host}:{profesor.port}"
        tareo = stack.enter_context(running("tareo", "--port", "0", "--profesor", url))
        outbox = tmp / "docencio.outbox.sqlite3"
        for stale in tmp.glob("docencio.outbox.sqlite3*"):
            stale.unlink()
        docencio = stack.enter_context(
            running(
                "docencio",
                *("--port", "0", "--tareo", f"{tareo.host}:{tareo.port}", "--profesor", url),
                *("--outbox", str(outbox)),
            )
        )
        pid = docencio.proc.pid
        load = asyncio.run(
            loadgen.students(docencio.host, docencio.port, n=n, timeout=60, server_pid=pid)
        )
        status = proc_status(pid)
    return {**load, "vmhwm": status["VmHWM"], "vmrss": status["VmRSS"], **status}


def test_five_thousand_students_peak_memory(benchmark, benchmarking, tmp_path):
    n = STUDENTS if benchmarking else 200
    benchmark.group = "servers"
    done: list[dict[str, Any]] = []
    benchmark.pedantic(
        lambda: done.append(one_round(tmp_path, n)),
        rounds=rounds(benchmarking, MEMORY_ROUNDS),
        iterations=1,
    )
    for r in done:
        assert r["answered"] == n and not r["misrouted"] and not r["unanswered"], r
        assert r["vmhwm"] >= r["vmrss"] > 0, r
    benchmark.extra_info.update(
        kind="servers",
        students=n,
        vmhwm=[r["vmhwm"] for r in done],
        threads=[max(r["Threads"], r.get("server_threads_peak") or 0) for r in done],
        figures=(
            {
                "docencio.5000.vmhwm-mb": [r["vmhwm"] / 1e6 for r in done],
                "docencio.5000.threads": [
                    max(r["Threads"], r.get("server_threads_peak") or 0) for r in done
                ],
            }
            if benchmarking
            else {}
        ),
    )
