"""``ayudantia run`` in the terminal: the live view (plain lines off a terminal, rich on one),
the end summary as a rich table, and ``--questions 0 --panel`` with a real class."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import time

import pytest
import requests
from rich.console import Console

from ayudantia.commands.run import count_matches
from ayudantia.live import LiveView, facts, summary_table
from roles.estado import Estado
from tests.procs import stop_run

SETTINGS = {"questions": 10, "codec": "msgpack", "chunk_size": 7}


def class_state() -> dict:
    """A real GET /estado state: the Profesor's store after a Docencio's two reports."""
    estado = Estado()
    doc = {
        "answers": 6,
        "errors": 0,
        "by_kind": {"Contenido": 3, "Tarea": 2, "Pregunta Dificil": 1},
        "by_por": {"Docencio": 3, "Tareo": 2, "Profesor": 1},
        "latency": {"n": 6, "p50": 0.0012, "p95": 0.0081, "p99": 0.0203},
    }
    estado.accept({"role": "docencio", "pid": 1, "report": doc}, 0)
    estado._history[-1] = (estado._history[-1][0] - 1.0, 0, None)  # a point a second ago
    estado.accept({"role": "docencio", "pid": 1, "report": doc}, 6)
    return json.loads(json.dumps(estado.snapshot(6)))


def summary(**kw) -> dict:
    base = {
        "ok": True,
        "students": 2,
        "asked": 20,
        "answered": 20,
        "errors": 0,
        "unanswered": 0,
        "misrouted": 0,
        "duplicates": 0,
        "reconnects": 1,
        "by_kind": {"Tarea": 12, "Contenido": 8},
        "by_por": {"Tareo": 12, "Docencio": 8},
        "latency_p50": 0.0015,
        "latency_p95": 0.004,
        "latency_p99": 0.009,
        "students_bytes_sent": 2048,
        "students_bytes_received": 4096,
        "tareo_bytes_sent": 1024,
        "tareo_bytes_received": 512,
        "window_s": 2.0,
        "questions_per_second": 10.0,
        "profesor_count": 20,
    }
    return {**base, **kw}


def test_the_live_facts_come_from_the_class_state():
    shown = facts(class_state())
    assert shown["by kind"] == "Contenido 3, Pregunta Dificil 1, Tarea 2"
    assert shown["answered by"] == "Docencio 3, Profesor 1, Tareo 2"
    assert shown["rate"] == "6 questions/s"
    assert shown["latency"].startswith("p50 1.2 ms, p95 8.1 ms, p99 20.3 ms")
    assert shown["roles"] == "up: profesor, docencio; DOWN: tareo"
    assert set(facts(None).values()) <= {"-", "p50 -, p95 -, p99 - (last 5 s, at the Docencio)"}


@pytest.mark.parametrize(
    "report",
    [
        {"by_kind": [1, 2]},
        {"by_por": "abc"},
        {"latency": [1]},
        {"latency": {"p50": "x", "p95": 1e306, "p99": True}},
    ],
)
def test_the_live_facts_survive_any_report_the_profesor_takes(report):
    """The Profesor takes any small plain data as a report; these crashed the run's view."""
    state = {"roles": {"docencio": {"up": True, "report": report}}, "history": {"rate": ["x"]}}
    shown = facts(state)
    assert shown["rate"] == "-" and shown["roles"] == "up: docencio; DOWN: tareo"
    assert "p50 -" in shown["latency"]
    assert facts([1, 2])["by kind"] == "-", "not even a map"


def test_off_a_terminal_it_prints_a_few_plain_lines():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    state = class_state()
    with LiveView(40, console=console) as view:
        for answers in range(41):
            view.update(answers, state)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4, lines  # one per quarter
    assert lines[0].startswith("answers 10/40 (25%); by kind Contenido 3")
    assert lines[-1].startswith("answers 40/40 (100%)")
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue(), "no terminal codes"


def test_with_no_end_it_prints_at_the_end_at_least():
    out = io.StringIO()
    with LiveView(None, console=Console(file=out, force_terminal=False, width=200)) as view:
        view.update(7, class_state())
    assert out.getvalue().splitlines() == [view.plain_line()]
    assert view.plain_line().startswith("answers 7; ")


def test_on_a_terminal_it_draws_progress_and_facts_in_place():
    console = Console(record=True, force_terminal=True, width=120, file=io.StringIO())
    with LiveView(40, console=console) as view:
        view.update(20, class_state())
    text = console.export_text()
    assert "20/40" in text and "answers" in text
    assert "Contenido 3, Pregunta Dificil 1, Tarea 2" in text
    assert "p99 20.3 ms" in text


@pytest.mark.parametrize(
    ("kw", "profesor", "result"),
    [
        ({}, "answers: OK", "OK"),
        ({"ok": False, "profesor_count": 19}, "answers: MISMATCH", "FAILED"),
    ],
)
def test_the_summary_is_a_table_with_the_runs_facts(kw, profesor, result):
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(summary_table(summary(**kw), SETTINGS))
    text = console.export_text()
    assert "La clase: 2 estudiantes x 10 preguntas, codec msgpack, 7 B chunks" in text
    rows = {
        m.group(1).strip(): m.group(2).strip()
        for m in re.finditer(r"^│ (.+?)│ (.+?)│$", text, re.M)
    }
    assert rows["questions"] == "20 asked, 20 answered, 0 error answers, 0 unanswered"
    assert rows["routing"] == "0 misrouted, 0 duplicated, 1 reconnects"
    assert rows["by kind"] == "Contenido 8, Tarea 12"
    assert rows["answered by"] == "Docencio 8, Tareo 12"
    assert rows["latency"] == "p50 1.5 ms, p95 4.0 ms, p99 9.0 ms"
    assert rows["bytes on wire"].endswith("Docencio->Tareo 1.0 KiB, Tareo->Docencio 512 B")
    assert rows["throughput"].startswith("10 questions/s (20 answers in 2.00 s")
    assert rows["Profesor"].endswith(profesor)
    assert rows["result"] == result


def test_a_stopped_class_may_count_answers_its_students_never_read():
    assert count_matches(10, 10) and not count_matches(11, 10) and not count_matches(None, 0)
    assert count_matches(12, 10, in_flight=2) and not count_matches(13, 10, in_flight=2)
    assert not count_matches(9, 10, in_flight=2), "an answer received is never uncounted"


@pytest.mark.timeout(60)
def test_run_with_no_end_shows_its_panel_and_sums_up_on_ctrl_c(tmp_path):
    out, report = tmp_path / "out.txt", tmp_path / "r.json"
    with out.open("w") as sink:
        run = subprocess.Popen(
            [
                *(sys.executable, "-m", "ayudantia", "run", "--students", "2", "--questions", "0"),
                *("--interval", "0.01", "--panel", "--report", str(report)),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 40
            while "Panel: " not in out.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            url = re.search(r"Panel: (\S+)", out.read_text()).group(1)
            assert url.endswith("/panel") and "<canvas" in requests.get(url, timeout=5).text
            estado = url.removesuffix("/panel") + "/estado"
            while requests.get(estado, timeout=5).json()["count"] < 30:
                assert time.monotonic() < deadline, "the class did not ask"
                time.sleep(0.2)
            run.send_signal(signal.SIGINT)
            assert run.wait(40) == 0, out.read_text()
        finally:
            stop_run(run)
    s = json.loads(report.read_text())
    assert s["ok"] and s["answered"] >= 30 and s["misrouted"] == s["duplicates"] == 0
    assert s["answered"] <= s["profesor_count"] <= s["answered"] + s["unanswered"]
    assert re.search(r"│ result\s+│ OK", out.read_text())
