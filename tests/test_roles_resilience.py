"""What broke the notebook's class: departed students, Profesor and Tareo outages, Ctrl+C."""

from __future__ import annotations

import signal
import socket
import time

import psutil
import pytest
from roles_helpers import ask, connect, port_is_free, profesor_count, recv_all, wait_for

pytestmark = pytest.mark.timeout(60)


def _no_crash(role) -> None:
    err = role.stderr()
    assert "Traceback" not in err and "Exception in thread" not in err, err


def test_student_leaving_mid_question_leaves_the_docencio_idle(procs):
    clase = procs.clase("json")
    docencio = clase["docencio"]
    proc = psutil.Process(docencio.pid)
    with connect(docencio) as conn:  # warm up every lazy part (link, HTTP session, conteo)
        for i, kind in enumerate(("Contenido", "Tarea", "Pregunta Dificil")):
            ask(conn, f"w{i}", kind)
        assert all("respuesta" in a for a in recv_all(conn, 3))
    url = clase["profesor"].address
    assert wait_for(lambda: profesor_count(url) == 3, 10)
    assert wait_for(lambda: proc.num_threads() < 16, 5)  # one loop, not a thread per student
    time.sleep(0.3)
    threads, fds = proc.num_threads(), proc.num_fds()

    for n in range(10):  # ask and leave before the answers come back
        conn = connect(docencio)
        for i in range(5):
            ask(conn, f"l{n}-{i}", ("Pregunta Dificil", "Tarea", "Contenido")[i % 3])
        conn.close()
    half = socket.create_connection(docencio.hostport)  # half a header, then gone
    half.sendall(b"AY\x01")
    half.close()

    with connect(docencio) as conn:  # the others are still served
        ask(conn, "x1", "Pregunta Dificil")
        ask(conn, "x2", "Tarea")
        got = recv_all(conn, 2)
    assert {a["id"] for a in got} == {"x1", "x2"} and all("respuesta" in a for a in got)

    assert wait_for(lambda: proc.num_threads() <= threads and proc.num_fds() <= fds, 10), (
        proc.num_threads(),
        threads,
        proc.num_fds(),
        fds,
    )
    proc.cpu_percent(None)
    time.sleep(1.0)
    assert proc.cpu_percent(None) < 15  # the notebook's Docencio sat at 100% here
    _no_crash(docencio)


def test_profesor_killed_and_restarted_mid_run(procs, tmp_path):
    db = tmp_path / "count.sqlite3"
    clase = procs.clase("json", db=db, profesor_timeout=1.0, timeout=5.0)
    profesor, tareo, docencio = clase["profesor"], clase["tareo"], clase["docencio"]
    url = profesor.address
    port = profesor.hostport[1]
    tareo_threads = psutil.Process(tareo.pid)
    with connect(docencio) as conn:
        for qid, kind in (("a1", "Tarea"), ("a2", "Pregunta Dificil"), ("a3", "Contenido")):
            ask(conn, qid, kind)
        assert all("respuesta" in a for a in recv_all(conn, 3))

        profesor.kill()  # SIGKILL: no goodbye
        for qid, kind in (
            ("b1", "Pregunta Dificil"),
            ("b2", "Pregunta Dificil"),
            ("b3", "Tarea"),
            ("b4", "Contenido"),
        ):
            ask(conn, qid, kind)
        got = {a["id"]: a for a in recv_all(conn, 4, timeout=10)}
        assert "error" in got["b1"] and "error" in got["b2"]  # an answer, not silence
        assert got["b3"]["por"] == "Tareo" and got["b4"]["por"] == "Docencio"
        assert tareo_threads.num_threads() < 40

        procs.start("profesor-again", "profesor", "--port", str(port), "--db", str(db))
        ask(conn, "c1", "Pregunta Dificil")
        (c1,) = recv_all(conn, 1)
        assert c1["id"] == "c1" and c1["por"] == "Profesor"
    # a1 a2 a3 (before), b3 b4 (during: retried by the Docencio until the Profesor is back), c1
    assert wait_for(lambda: profesor_count(url) == 6, 15), profesor_count(url)
    time.sleep(0.5)
    assert profesor_count(url) == 6  # and no more: errors are not counted, retries count once
    _no_crash(tareo)
    _no_crash(docencio)


def test_tareo_restart_the_docencio_reconnects(procs):
    clase = procs.clase("json", timeout=3.0)
    tareo, docencio = clase["tareo"], clase["docencio"]
    port = tareo.hostport[1]
    with connect(docencio) as conn:
        ask(conn, "t1", "Tarea")
        assert recv_all(conn, 1)[0]["por"] == "Tareo"
        assert tareo.stop() == 0
        ask(conn, "t2", "Tarea")
        ask(conn, "t3", "Contenido")
        got = {a["id"]: a for a in recv_all(conn, 2, timeout=10)}
        assert "error" in got["t2"] and got["t3"]["por"] == "Docencio"
        procs.start(
            "tareo-again", "tareo", "--port", str(port), "--profesor", clase["profesor"].address
        )

        def served() -> bool:
            ask(conn, "t4", "Tarea")
            return "respuesta" in recv_all(conn, 1, timeout=10)[0]

        assert wait_for(served, 10, interval=0.2)
    _no_crash(docencio)


@pytest.mark.parametrize("name", ["profesor", "tareo", "docencio"])
def test_sigint_exits_zero_and_frees_the_port(procs, name):
    clase = procs.clase("json")
    role = clase[name]
    host, port = role.hostport
    if name == "profesor":
        import requests

        session = requests.Session()  # a keep-alive connection left open
        assert session.get(role.address + "/").status_code == 200
    else:
        idle = connect(role)  # a client connected and silent
    for downstream in ("docencio", "tareo"):
        if downstream == name:
            break
        clase[downstream].stop()  # stop the ones in front first, as run does
    started = time.monotonic()
    assert role.stop(signal.SIGINT, timeout=8) == 0, role.stderr()
    assert time.monotonic() - started < 6
    assert port_is_free(host, port)
    if name != "profesor":
        idle.close()
    _no_crash(role)


def test_estudiante_sigint_exits_130(procs):
    clase = procs.clase("json")
    alumno = procs.start(
        "estudiante",
        "estudiante",
        "--docencio",
        clase["docencio"].address,
        "--questions",
        "1000",
        "--interval",
        "0.5",
        ready=False,
    )
    assert wait_for(lambda: "Respuesta recibida" in alumno.stdout(), 15)
    assert alumno.stop(signal.SIGINT, timeout=8) == 130  # interrupted: not everything was done
    assert "/1000 respondidas" in alumno.stdout()
