"""A student asking until stopped (``questions=0``) keeps bounded memory, and still reports
honestly: exact counts, duplicates told from strangers, a uniform sample of its latencies."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from roles_helpers import wait_for

from protocol.errors import AyudantiaError
from protocol.transport import Connection
from roles import estudiante
from roles.estudiante import Estudiante
from roles.muestra import Muestra


def fake_docencio(server: socket.socket) -> None:
    """Answers every question; every 10th twice (a duplicate); once, a stranger's answer."""
    sock, _ = server.accept()
    conn = Connection(sock, side="server")
    n = 0
    try:
        conn.send({"id": "Otro:abc:1", "respuesta": "no es tuya", "por": "Docencio"})
        while True:
            question = conn.recv()
            n += 1
            reply = {"id": question["id"], "respuesta": "ok", "por": "Docencio"}
            if n % 5 == 0:
                reply["por"] = f"Tareo-{n}"  # a Tareo naming itself anew each time
            if n % 7 == 0:
                reply = {"id": question["id"], "error": "pregunta rara"}
            conn.send(reply)
            if n % 10 == 0:
                conn.send(reply)
    except AyudantiaError:
        pass
    finally:
        conn.close()


@pytest.mark.timeout(60)
def test_a_student_with_no_end_keeps_only_its_unanswered_questions(monkeypatch):
    monkeypatch.setattr(estudiante, "MAX_LATENCIES", 50)
    monkeypatch.setattr(estudiante, "MAX_ERROR_TEXTS", 3)
    server = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=fake_docencio, args=(server,), daemon=True).start()
    alumno = Estudiante(
        "127.0.0.1", server.getsockname()[1], questions=0, interval=0.001, quiet=True, timeout=5
    )
    stop = threading.Event()
    worker = threading.Thread(target=alumno.run, args=(stop,), daemon=True)
    worker.start()
    try:
        assert wait_for(lambda: alumno.informe.answered >= 300, 40), alumno.informe
    finally:
        stop.set()
        worker.join(20)
        server.close()
    assert not worker.is_alive()
    informe = alumno.informe
    assert len(alumno._asked) == informe.unanswered, "an answered question is forgotten"
    assert len(informe.latencies) == 50 and informe.latencies_seen == informe.answered
    assert set(informe.by_por) == {"Docencio", "otro"}, "a few names, whatever 'por' says"
    assert sum(informe.by_por.values()) == informe.answered
    assert informe.errors >= 40 and informe.error_texts == ["pregunta rara"] * 3
    assert informe.duplicates >= 30, "a repeated answer is still told from a stranger's"
    assert informe.misrouted == 1


def test_the_sample_keeps_everything_until_full_then_stays_uniform():
    muestra = Muestra(1000, seed=7)
    for value in range(1000):
        muestra.add(value)
    assert muestra.exact and muestra.values == list(range(1000))
    for value in range(1000, 100_000):
        muestra.add(value)
    assert len(muestra.values) == 1000 and muestra.seen == 100_000 and not muestra.exact
    late = sum(v >= 50_000 for v in muestra.values)
    assert 400 < late < 600, "half the sample from the second half of the stream"
    with pytest.raises(ValueError):
        Muestra(0)


def silent_docencio(server: socket.socket, done: threading.Event) -> None:
    """Takes every question and answers none."""
    sock, _ = server.accept()
    conn = Connection(sock, side="server")
    try:
        while not done.is_set():
            conn.recv()
    except AyudantiaError:
        pass
    finally:
        conn.close()


@contextlib.contextmanager
def asking_a_silent_docencio(**kwargs: Any) -> Iterator[tuple[Estudiante, threading.Thread]]:
    """An endless Estudiante asking, on a thread, a Docencio that answers nothing.

    On exit the student is stopped and its thread joined, and the Docencio closed, even
    when the test fails.
    """
    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()
    threading.Thread(target=silent_docencio, args=(server, done), daemon=True).start()
    alumno = Estudiante("127.0.0.1", server.getsockname()[1], questions=0, quiet=True, **kwargs)
    stop = threading.Event()
    worker = threading.Thread(target=alumno.run, args=(stop,), daemon=True)
    worker.start()
    try:
        yield alumno, worker
    finally:
        stop.set()
        worker.join(10)
        done.set()
        server.close()


@pytest.mark.timeout(30)
def test_a_stopped_student_tells_overdue_questions_from_those_in_flight():
    with asking_a_silent_docencio(interval=0.01, timeout=0.3) as (alumno, _):
        assert wait_for(lambda: alumno.informe.questions >= 3, 10)
        first_ones = alumno.informe.questions
        time.sleep(0.6)  # those first questions are now older than the timeout
    informe = alumno.informe
    assert informe.answered == 0 and informe.unanswered == informe.questions
    assert informe.overdue >= first_ones


@pytest.mark.timeout(30)
def test_an_endless_student_waits_when_too_many_questions_go_unanswered(monkeypatch):
    monkeypatch.setattr(estudiante, "MAX_IN_FLIGHT", 40)
    with asking_a_silent_docencio(interval=0, timeout=5) as (alumno, worker):
        assert wait_for(lambda: alumno.informe.questions >= 40, 10)
        time.sleep(0.3)  # asking as fast as it can, it would be far past 40 by now
        assert alumno.informe.questions == 40
    assert not worker.is_alive()


@pytest.mark.timeout(30)
def test_an_endless_student_sums_up_what_it_asked_on_ctrl_c(tmp_path):
    """It said "N/0 respondidas": out of the questions it asked, not out of zero."""
    server = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=fake_docencio, args=(server,), daemon=True).start()
    out = tmp_path / "out.txt"
    docencio = f"127.0.0.1:{server.getsockname()[1]}"
    with out.open("w") as sink:
        alumno = subprocess.Popen(
            [
                *(sys.executable, "-m", "ayudantia", "estudiante", "--questions", "0"),
                *("--docencio", docencio, "--interval", "0.01", "--name", "Ana"),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        assert wait_for(lambda: "Respuesta recibida" in out.read_text(), 15), out.read_text()
        alumno.send_signal(signal.SIGINT)
        assert alumno.wait(15) == 130, out.read_text()
    finally:
        if alumno.poll() is None:
            alumno.kill()
            alumno.wait()
        server.close()
    m = re.search(r"^Ana: (\d+)/(\d+) respondidas", out.read_text(), re.M)
    assert m and int(m.group(2)) > 0 and int(m.group(1)) <= int(m.group(2)), out.read_text()
