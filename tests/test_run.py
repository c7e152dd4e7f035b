"""``ayudantia run``: its verdict, its arithmetic, and that it never leaves a process behind."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import psutil
import pytest
from procs import ayudantia_cmd

from ayudantia.commands.run import percentile, question_window, summarize


def report(**kw):
    base = {
        "questions": 10,
        "answered": 10,
        "errors": 0,
        "unanswered": 0,
        "misrouted": 0,
        "duplicates": 0,
        "reconnects": 0,
        "bytes_sent": 100,
        "bytes_received": 200,
        "started": 1.0,
        "finished": 2.0,
        "first_question_at": 1.0,
        "last_answer_at": 2.0,
        "by_kind": {"Tarea": 10},
        "by_por": {"Tareo": 10},
        "latencies": [0.001 * i for i in range(1, 11)],
    }
    return {**base, **kw}


def test_percentiles():
    values = [float(i) for i in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (
        50.0,
        95.0,
        99.0,
    )
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_summary_ok_only_when_everything_adds_up():
    late = report(started=1.5, finished=3.0, first_question_at=1.5, last_answer_at=3.0)
    good = summarize([report(), late], 20, 2, 10)
    assert good["ok"] and good["answered"] == 20 and good["seconds"] == 2.0
    assert good["window_s"] == 2.0 and good["questions_per_second"] == 10.0
    assert [s["answered"] for s in good["per_student"]] == [10, 10]
    assert good["students_bytes_sent"] == 200
    assert not summarize([report()], 9, 1, 10)["ok"]  # the count differs
    assert not summarize([report(misrouted=1)], 10, 1, 10)["ok"]
    assert not summarize([report(duplicates=1)], 10, 1, 10)["ok"]
    assert not summarize([report(answered=9, errors=1)], 9, 1, 10)["ok"]  # an error answer
    assert not summarize([report(answered=9, unanswered=1)], 9, 1, 10)["ok"]
    assert not summarize([report()], 10, 2, 10)["ok"]  # a student never reported


def test_window_is_first_question_to_last_answer():
    a = report(started=0.5, first_question_at=1.0, last_answer_at=1.5)
    b = report(started=0.7, first_question_at=1.2, last_answer_at=2.5)
    assert question_window([a, b]) == 1.5
    s = summarize([a, b], 20, 2, 10)
    assert s["questions_per_second"] == s["answered"] / s["window_s"]
    # Nothing answered: no window, no rate (not a division by zero).
    none = report(answered=0, unanswered=10, first_question_at=1.0, last_answer_at=0.0)
    assert question_window([none]) == 0.0
    assert summarize([none], 0, 1, 10)["questions_per_second"] == 0.0


@pytest.mark.timeout(10)
def test_barrier_wait_is_bounded_and_opens_on_close():
    import os
    import threading

    from roles.estudiante import wait_barrier

    r, w = os.pipe()
    try:
        assert wait_barrier(r, threading.Event(), timeout=0.2) is False  # nobody opened it
    finally:
        os.close(w)
    r, w = os.pipe()
    os.close(w)  # the run closed its end (or died): the barrier is open
    assert wait_barrier(r, threading.Event(), timeout=5) is True
    r, w = os.pipe()
    stop = threading.Event()
    stop.set()
    try:
        assert wait_barrier(r, stop, timeout=5) is False  # a stop request ends the wait
    finally:
        os.close(w)


@pytest.mark.timeout(90)
def test_report_window_and_start_barrier(tmp_path):
    """A small real class: the students all connect before any asks, and the report's rate is
    its own answered / window_s."""
    out = tmp_path / "run.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "ayudantia", "run", "--students", "3"),
            *("--questions", "4", "--interval", "0", "--report", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    s = json.loads(out.read_text(encoding="utf-8"))
    students = s["per_student"]
    assert len(students) == 3 and sum(p["answered"] for p in students) == s["answered"] == 12
    released = s["barrier_released_at"]
    last_connected = max(p["connected_at"] for p in students)
    assert all(p["first_question_at"] >= released for p in students)
    assert min(p["first_question_at"] for p in students) >= last_connected
    assert released >= last_connected
    first = min(p["first_question_at"] for p in students)
    last = max(p["last_answer_at"] for p in students)
    assert s["window_s"] == last - first > 0
    assert s["questions_per_second"] == s["answered"] / s["window_s"]


def _ours(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if marker in cmd and "ayudantia" in cmd:
            found.append(p)
    return found


@pytest.mark.timeout(60)
def test_run_leaves_no_process_behind_even_when_it_fails(tmp_path):
    keep = tmp_path / "logs"
    done = subprocess.run(
        ayudantia_cmd(
            "run",
            *("--students", "2", "--questions", "3", "--interval", "0", "--keep", str(keep)),
            # the Profesor cannot be ready this fast: the run fails at startup
            *("--startup-timeout", "0.01"),
        ),
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 1
    assert "was not ready" in done.stderr
    assert not _ours(str(keep))


@pytest.mark.timeout(60)
def test_run_sigint_stops_every_child(tmp_path):
    import time

    keep = tmp_path / "logs"
    run = subprocess.Popen(
        ayudantia_cmd(
            "run",
            *("--students", "2", "--questions", "500", "--interval", "0.2", "--keep", str(keep)),
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while len(_ours(str(keep))) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_ours(str(keep))) >= 5  # profesor, tareo, docencio, 2 students
        run.send_signal(2)
        assert run.wait(20) != 0
        assert not _ours(str(keep))
    finally:
        if run.poll() is None:
            run.kill()


def test_a_class_with_no_end_is_judged_on_what_was_asked():
    # --questions 0: Ctrl+C stopped the student with one question in flight, whose answer
    # the Docencio had delivered (counted) but the student never read
    stopped = report(questions=7, answered=6, unanswered=1)
    s = summarize([stopped], 7, 1, 0)
    assert s["ok"] and s["asked"] == 7 and s["unanswered"] == 1
    assert summarize([stopped], 6, 1, 0)["ok"]
    assert not summarize([stopped], 8, 1, 0)["ok"], "more counted than could have been"
    assert not summarize([report(questions=7, answered=6, errors=1)], 6, 1, 0)["ok"]


def test_an_endless_class_stopped_by_ctrl_c_fails_if_questions_went_unanswered():
    """In flight at the Ctrl+C is fine; unanswered past the timeout is not (it was OK)."""
    stopped = report(questions=12, answered=10, unanswered=2, overdue=0)
    assert summarize([stopped], 11, 1, 0)["ok"]
    hung = report(questions=12, answered=0, unanswered=12, overdue=12, by_por={}, latencies=[])
    s = summarize([hung], 0, 1, 0)
    assert not s["ok"] and s["in_flight"] == 0
    assert not summarize([report(questions=12, answered=10, unanswered=2, overdue=1)], 11, 1, 0)[
        "ok"
    ]
