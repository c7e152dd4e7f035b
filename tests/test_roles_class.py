"""The class end to end: real processes, real sockets, real HTTP on loopback."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections import Counter

import pytest
from procs import ayudantia_cmd
from roles_helpers import ask, connect, profesor_count, recv_all, wait_for

from roles.clase import RESPUESTA_CONTENIDO, RESPUESTAS

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize(
    ("codec", "chunk"), [("json", "0"), ("msgpack", "0"), ("pickle", "0"), ("json", "7")]
)
def test_run_the_whole_class(tmp_path, codec, chunk):
    report = tmp_path / "summary.json"
    done = subprocess.run(
        ayudantia_cmd(
            "run",
            *("--students", "2", "--questions", "15", "--interval", "0"),
            *("--codec", codec, "--chunk-size", chunk, "--report", str(report)),
        ),
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"│ result\s+│ OK", done.stdout), done.stdout
    s = json.loads(report.read_text())
    assert s["asked"] == s["answered"] == s["profesor_count"] == 30
    assert s["misrouted"] == s["duplicates"] == s["unanswered"] == 0
    assert set(s["by_por"]) == {"Docencio", "Tareo", "Profesor"}
    assert s["by_kind"]["Contenido"] == s["by_por"]["Docencio"]
    assert s["by_kind"]["Tarea"] == s["by_por"]["Tareo"]
    assert s["by_kind"]["Pregunta Dificil"] == s["by_por"]["Profesor"]
    assert s["students_bytes_sent"] > 0 and s["tareo_bytes_sent"] > 0
    assert 0 < s["latency_p50"] <= s["latency_p95"] <= s["latency_p99"]


def test_twenty_students_fifty_questions_each_every_answer_at_its_asker(procs):
    clase = procs.clase("msgpack")
    kinds = ("Contenido", "Tarea", "Pregunta Dificil")
    results: dict[str, list[dict]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(20)

    def student(n: int) -> None:
        name = f"alumno{n}"
        try:
            with connect(clase["docencio"], "msgpack") as conn:
                barrier.wait(10)
                for i in range(50):  # everyone asks at once, nobody waits for answers
                    ask(conn, f"{i}", kinds[(i + n) % 3], de=name)
                results[name] = recv_all(conn, 50, timeout=30)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=student, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(results) == 20
    for name, answers in results.items():
        n = int(name.removeprefix("alumno"))
        # the same ids ("0".."49") are used by every student: routing must not mix them up
        assert sorted(int(a["id"]) for a in answers) == list(range(50)), name
        for a in answers:
            assert "error" not in a, a
            kind = kinds[(int(a["id"]) + n) % 3]
            expected_por = {"Contenido": "Docencio", "Tarea": "Tareo"}.get(kind, "Profesor")
            assert a["por"] == expected_por
            if kind == "Contenido":
                assert a["respuesta"] == RESPUESTA_CONTENIDO
            else:
                assert a["respuesta"] in RESPUESTAS
    url = clase["profesor"].address
    assert wait_for(lambda: profesor_count(url) == 1000, 15), profesor_count(url)


def test_unknown_kinds_and_malformed_questions_get_error_answers(procs):
    clase = procs.clase("json")
    with connect(clase["docencio"]) as conn:
        ask(conn, "q1", "Chisme")
        conn.send({"id": "q2"})  # no tipo
        conn.send(["not", "a", "map"])
        conn.send({"tipo": "Tarea"})  # no id
        conn.send_payload(1, b"{not json")  # undecodable, framed correctly
        ask(conn, "q3", "Tarea")  # and the connection still serves
        got = recv_all(conn, 6, timeout=10)
    by_id = Counter(a["id"] for a in got)
    assert by_id == Counter({"q1": 1, "q2": 1, None: 3, "q3": 1})
    assert all("error" in a for a in got if a["id"] != "q3")
    assert next(a for a in got if a["id"] == "q3")["por"] == "Tareo"


def test_tareo_is_never_silent(procs):
    clase = procs.clase("json")
    with connect(clase["tareo"]) as conn:
        ask(conn, 1, "Contenido")  # the Tareo does not answer Contenido: it says so
        ask(conn, 2, "Pregunta Dificil")
        ask(conn, 3, "Tarea")
        conn.send({"id": 4, "tipo": 5})
        got = {a["id"]: a for a in recv_all(conn, 4, timeout=10)}
    assert "error" in got[1] and "error" in got[4]
    assert got[2]["por"] == "Profesor" and got[2]["respuesta"] in RESPUESTAS
    assert got[3]["por"] == "Tareo" and got[3]["respuesta"] in RESPUESTAS


def test_estudiante_prints_the_notebook_traces_and_exits_zero(procs, tmp_path):
    clase = procs.clase("json")
    report = tmp_path / "ana.json"
    done = subprocess.run(
        ayudantia_cmd(
            "estudiante",
            *("--docencio", clase["docencio"].address, "--questions", "6", "--interval", "0.001"),
            *("--seed", "3", "--name", "Ana", "--report", str(report)),
        ),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Alumno pregunta: ") == 6
    assert done.stdout.count("Respuesta recibida: ") == 6
    data = json.loads(report.read_text())
    assert data["ok"] and data["answered"] == 6 and data["misrouted"] == 0
