"""Part 5: the event-loop servers under load, black-box, against real role processes.

The figures of the servers issue's targets (bench/targets.py, ``servers.*``, ``eco.*`` and
``class.questions-per-s``), each measured by bench/loadgen/ from a process of its own
(this one) against ``ayudantia`` processes on loopback, over several rounds: the report
shows their median and range, and a verdict only when the whole range clears.

* 5,000 students connect at once and ask one "Contenido" each: connect and answer
  seconds, the Docencio's peak RSS and threads;
* a student floods "Tarea" questions and never reads, beside ten paced students: the
  others' slowest answer and the Docencio's RSS growth;
* a 60-byte raw message through ``ayudantia eco`` by a client with no project code,
  paired round by round with a ``multiprocessing.connection`` echo in its own process;
* connect, ask, read, close, from 8 concurrent workers: completed cycles per second;
* the whole class, ``ayudantia run --students 10 --questions 200 --interval 0``.

The ordinary ``uv run pytest`` runs each once on a tiny load, so none of this can rot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import loadgen
from bench.conftest import rounds
from tests.procs import RoleProcess, running

SERVER_ROUNDS = 3
LOOP_FLAGS = ("--log-level", "WARNING")


@pytest.fixture(scope="module")
def clase(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RoleProcess]]:
    """A Profesor, a Tareo and a Docencio, each a real process, for the whole module."""
    db = tmp_path_factory.mktemp("servers") / "profesor.sqlite3"
    with contextlib.ExitStack() as stack:
        profesor = stack.enter_context(
            running("profesor", "--port", "0", "--db", str(db), "--log-level", "WARNING")
        )
        url = f"http://{profesor.host}:{profesor.port}"
        tareo = stack.enter_context(running("tareo", "--port", "0", "--profesor", url, *LOOP_FLAGS))
        docencio = stack.enter_context(
            running(
                "docencio",
                *("--port", "0", "--tareo", f"{tareo.host}:{tareo.port}", "--profesor", url),
                *LOOP_FLAGS,
            )
        )
        yield {"profesor": profesor, "tareo": tareo, "docencio": docencio}


def _rounds(benchmark: Any, benchmarking: bool, measure: Any) -> list[dict[str, Any]]:
    benchmark.group = "servers"
    done: list[dict[str, Any]] = []
    benchmark.pedantic(
        lambda: done.append(measure()), rounds=rounds(benchmarking, SERVER_ROUNDS), iterations=1
    )
    return done


def _load(
    benchmark: Any, benchmarking: bool, server: RoleProcess, scenario: Any, **kwargs: Any
) -> list[dict[str, Any]]:
    """One loadgen scenario against ``server``, a round at a time; each round's results."""
    return _rounds(
        benchmark,
        benchmarking,
        lambda: asyncio.run(
            scenario(server.host, server.port, server_pid=server.proc.pid, **kwargs)
        ),
    )


def _store(benchmark: Any, benchmarking: bool, figures: dict[str, list[float]]) -> None:
    """The figures of a timed run (an untimed one only proves the code still works)."""
    benchmark.extra_info.update(kind="servers", figures=figures if benchmarking else {})


def test_five_thousand_students(benchmark, benchmarking, clase):
    n = 5000 if benchmarking else 200
    results = _load(benchmark, benchmarking, clase["docencio"], loadgen.students, n=n, timeout=60)
    for r in results:
        assert r["answered"] == n and not r["misrouted"] and not r["unanswered"], r
    _store(
        benchmark,
        benchmarking,
        {
            "servers.5000.connect-s": [r["connect_s"] for r in results],
            "servers.5000.answer-s": [r["answer_s"] for r in results],
            "servers.5000.rss-mb": [r["server_rss_peak"] / 1e6 for r in results],
            "servers.5000.threads": [r["server_threads_peak"] for r in results],
        },
    )


def test_a_student_who_never_reads(benchmark, benchmarking, clase):
    results = _load(
        benchmark,
        benchmarking,
        clase["docencio"],
        loadgen.flood,
        students_n=10,
        seconds=10.0 if benchmarking else 1.5,
        head_start=1.0,
    )
    for r in results:
        assert r["answered"] == r["asked"] and not r["misrouted"] and not r["lost"], r
    _store(
        benchmark,
        benchmarking,
        {
            "servers.slow-reader.others-slowest-s": [r["max_ms"] / 1000 for r in results],
            "servers.slow-reader.rss-growth-mb": [r["server_rss_growth"] / 1e6 for r in results],
        },
    )


def test_small_message_through_the_eco(benchmark, benchmarking):
    with running("eco", "--port", "0", *LOOP_FLAGS) as eco:
        result: dict[str, Any] = {}

        def measure() -> None:
            result.update(
                loadgen.echo_small(
                    eco.host,
                    eco.port,
                    sessions=5 if benchmarking else 1,
                    rounds=4000 if benchmarking else 50,
                    warmup=200 if benchmarking else 5,
                    server_pid=eco.proc.pid,
                )
            )

        benchmark.group = "servers"
        benchmark.pedantic(measure, rounds=1, iterations=1)
    sessions = result["sessions"]
    assert all(s["ratio"] > 0 for s in sessions), result
    benchmark.extra_info.update(
        kind="pair",
        figure="eco.small.vs-mpconn-echo",
        numerator="ayudantia eco (raw, client with no project code)",
        denominator="multiprocessing.connection echo",
        placement=result["placement"],
        values=[s["ratio"] for s in sessions],
        sessions=[
            {**s, "numerator_s": s["ayudantia_us"] / 1e6, "denominator_s": s["mp_us"] / 1e6}
            for s in sessions
        ],
    )


def test_connect_ask_read_close(benchmark, benchmarking, clase):
    results = _load(
        benchmark,
        benchmarking,
        clase["docencio"],
        loadgen.connect_rate,
        workers=8,
        seconds=5.0 if benchmarking else 0.5,
    )
    for r in results:
        assert r["connections"] > 0 and not r["errors"], r
    _store(
        benchmark,
        benchmarking,
        {"servers.connect-ask-close-per-s": [r["rate_per_s"] for r in results]},
    )


def test_the_whole_class(benchmark, benchmarking, tmp_path: Path):
    """``ayudantia run --students 10 --questions 200 --interval 0``: questions/s from the
    run's own barrier window; every round must be exact (all answered, count equal)."""
    students, questions = (10, 200) if benchmarking else (2, 5)
    report = tmp_path / "run.json"

    def one_class() -> dict[str, Any]:
        report.unlink(missing_ok=True)
        argv = [
            *(sys.executable, "-m", "ayudantia", "run", "--interval", "0"),
            *("--students", str(students), "--questions", str(questions)),
            *("--report", str(report)),
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        summary = json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
        summary["returncode"] = proc.returncode
        summary["output"] = (proc.stdout + proc.stderr)[-2000:]
        return summary

    results = _rounds(benchmark, benchmarking, one_class)
    for r in results:
        assert r["returncode"] == 0 and r.get("ok"), r["output"]
        assert r["profesor_count"] == r["answered"] == students * questions, r["output"]
    _store(
        benchmark,
        benchmarking,
        {"class.questions-per-s": [r["questions_per_second"] for r in results]},
    )
