"""What the hostile review of the event-loop servers found (its D1, D3, D5, D9), each a test.

Real processes and raw sockets. A "hung Profesor" is a real listening socket that accepts
HTTP connections and never answers, so the Tareo's Profesor calls wait out their timeout.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from roles_helpers import ask, connect, profesor_count, recv_all, wait_for

from protocol.framing import FrameDecoder, Message, encode_message

pytestmark = pytest.mark.timeout(90)


def frame(obj: dict) -> bytes:
    return encode_message(1, json.dumps(obj).encode())


def read_all_until_eof(sock: socket.socket, timeout: float = 15.0) -> list[dict]:
    """Every message the server sends until it closes (or the timeout fails the test)."""
    sock.settimeout(timeout)
    decoder, got = FrameDecoder(), []
    while True:
        event = decoder.next_event()
        if isinstance(event, Message):
            got.append(json.loads(bytes(event.payload)))
            continue
        data = sock.recv(65536)
        if not data:
            return got
        decoder.receive_data(data)


@pytest.fixture
def hung_profesor() -> Iterator[str]:
    """An HTTP address that accepts and never answers."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        for s in held:
            s.close()
        listener.close()


@pytest.mark.parametrize("tipo", ["Contenido", "Tarea", "Pregunta Dificil"])
def test_d3_a_half_closed_student_still_gets_its_answers(procs, tipo):
    """Review D3: a student that asks, then shuts its writing half, gets every answer
    (forwarded ones included) before the Docencio closes."""
    docencio = procs.clase("json")["docencio"]
    with socket.create_connection(docencio.hostport) as sock:
        for i in range(5):
            sock.sendall(frame({"id": i, "tipo": tipo, "de": "ana"}))
        sock.shutdown(socket.SHUT_WR)
        got = read_all_until_eof(sock)
    assert sorted(a["id"] for a in got) == list(range(5)), got
    assert all("respuesta" in a for a in got), got


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_d5_eof_never_cuts_off_staged_questions(procs, loop):
    """Review D5: 600 questions sent at once, then EOF: 600 answers, not the first turns'."""
    eco = procs.start("eco", "eco", "--port", "0", "--loop", loop, "--log-level", "WARNING")
    with socket.create_connection(eco.hostport) as sock:
        sock.sendall(b"".join(frame({"n": i}) for i in range(600)))
        sock.shutdown(socket.SHUT_WR)
        got = read_all_until_eof(sock)
    assert [m["n"] for m in got] == list(range(600))


def test_d1_one_students_hard_questions_never_stall_the_others_tarea(procs, hung_profesor):
    """Review D1: a student floods "Pregunta Dificil" while the Profesor hangs; another
    student's Tarea (which the Tareo answers itself) is still answered, not timed out."""
    tareo = procs.start(
        "tareo", "tareo", "--port", "0", "--profesor", hung_profesor, "--timeout", "5"
    )
    docencio = procs.docencio(tareo, hung_profesor, "--timeout", "4")
    with connect(docencio) as flooder, connect(docencio) as other:
        for i in range(400):  # far more than any per-connection hold
            ask(flooder, f"d{i}", "Pregunta Dificil", de="inundador")
        time.sleep(0.5)
        for i in range(5):
            ask(other, f"t{i}", "Tarea", de="otro")
        got = recv_all(other, 5, timeout=20)
    assert sorted(a["id"] for a in got) == [f"t{i}" for i in range(5)]
    assert all("respuesta" in a for a in got), got


def test_d9_a_stopping_tareo_answers_every_waiting_hard_question(procs, hung_profesor):
    """Review D9: SIGINT while hard questions wait on the Profesor: each gets an error
    answer with its id before the Tareo closes, none is left silent."""
    tareo = procs.start("tareo", "tareo", "--port", "0", "--profesor", hung_profesor)
    with socket.create_connection(tareo.hostport) as sock:
        for i in range(40):
            sock.sendall(frame({"id": i, "tipo": "Pregunta Dificil", "de": "ana"}))
        time.sleep(1.0)  # every question reached the Tareo and waits on the Profesor
        tareo.proc.send_signal(signal.SIGINT)
        got = read_all_until_eof(sock)
    assert sorted(a["id"] for a in got) == list(range(40)), got
    assert all("error" in a for a in got)
    assert tareo.proc.wait(20) == 0  # the calls under way end within the Profesor timeout


def test_d8_answers_dropped_with_a_cut_off_student_are_not_counted(procs, tmp_path):
    """Review D8: a student that never reads is cut off at the send deadline with answers
    still queued for it; those were never delivered, so they are not counted: the
    Profesor's count equals the answers that left the Docencio."""
    clase = procs.clase("json")
    profesor, tareo = clase["profesor"], clase["tareo"]
    clase["docencio"].stop()
    stats = tmp_path / "d.json"
    docencio = procs.docencio(
        tareo, profesor.address, "--send-timeout", "1", "--stats", str(stats), name="docencio2"
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(docencio.hostport)
    sock.setblocking(False)
    deadline = time.monotonic() + 6.0
    n = 0
    try:
        while time.monotonic() < deadline:  # until the Docencio cuts it off (or 6 s)
            burst = b"".join(
                frame({"id": n + i, "tipo": "Contenido", "de": "mudo"}) for i in range(64)
            )
            try:
                sent = sock.send(burst)
                if sent < len(burst):
                    break  # a question cut in half: stop here, the rest never counts anyway
                n += 64
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                break
    finally:
        sock.close()
    assert docencio.stop() == 0
    counters = json.loads(stats.read_text(encoding="utf-8"))
    assert counters["undeliverable"] > 0, counters  # it really was cut off with answers queued
    assert wait_for(lambda: profesor_count(profesor.address) == counters["delivered"], 10), (
        profesor_count(profesor.address),
        counters,
    )
