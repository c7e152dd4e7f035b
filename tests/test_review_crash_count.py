"""Review of issue 13 (crash-safe count): regressions for the holes found.

A scripted Docencio on a real loopback socket plays the crash the class can hit: it takes a
question and dies before its answer is seen (the next run posts the key), then answers the
re-ask with an error (a Tareo not up again yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import sqlite3
import threading
import time
from collections.abc import Callable

import pytest

import roles.estudiante
from protocol.errors import AyudantiaError
from protocol.transport import Connection
from roles.estudiante import Estudiante
from roles.outbox import Outbox
from roles.profesor import ProfesorClient

Script = list[Callable[[Connection, dict], dict | None]]


def _scripted_docencio(steps: Script) -> tuple[socket.socket, threading.Thread]:
    """Each question received runs the next step: a reply to send, or None to drop the
    connection without answering (a SIGKILL before the answer left)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        remaining = list(steps)
        while remaining:
            sock, _ = listener.accept()
            conn = Connection(sock, side="server", idle_timeout=10)
            try:
                while remaining:
                    question = conn.recv()
                    reply = remaining.pop(0)(conn, question)
                    if reply is None:
                        break
                    conn.send(reply)
            except AyudantiaError:  # the student left: the script ends
                return
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def _drop(conn: Connection, q: dict) -> None:
    return None


def _error(conn: Connection, q: dict) -> dict:
    return {"id": q["id"], "error": "el Tareo no está disponible"}


def _answer(conn: Connection, q: dict) -> dict:
    return {"id": q["id"], "respuesta": "Sí", "por": "Docencio"}


def _student(listener: socket.socket) -> Estudiante:
    port = listener.getsockname()[1]
    return Estudiante(
        "127.0.0.1", port, name="Ana", questions=1, interval=0, timeout=10, quiet=True
    )


@pytest.mark.timeout(30)
def test_an_error_to_a_reasked_question_is_asked_again_not_taken_as_final():
    """Before: the re-ask's error answer was final, while the crashed Docencio's outbox
    posted that key: the Profesor counted an answer the student never received."""
    listener, thread = _scripted_docencio([_drop, _error, _error, _answer])
    try:
        informe = _student(listener).run()
    finally:
        listener.close()
    thread.join(5)
    assert (informe.answered, informe.errors, informe.duplicates) == (1, 0, 0), informe
    assert informe.reconnects == 1


@pytest.mark.timeout(30)
def test_an_error_to_a_first_ask_stays_an_error_and_insisting_is_bounded(monkeypatch):
    listener, thread = _scripted_docencio([_error])
    try:
        assert _student(listener).run().errors == 1  # asked once: an error is an error
    finally:
        listener.close()
    thread.join(5)
    monkeypatch.setattr(roles.estudiante, "INSIST_TRIES", 3)
    listener, thread = _scripted_docencio([_drop] + [_error] * 4)
    try:
        informe = _student(listener).run()
    finally:
        listener.close()
    thread.join(5)
    assert (informe.answered, informe.errors, informe.unanswered) == (0, 1, 0), informe


@pytest.mark.timeout(30)
def test_a_reasked_question_still_insisting_at_the_deadline_is_an_error_not_silence(monkeypatch):
    monkeypatch.setattr(roles.estudiante, "INSIST_DELAY", 5.0)  # the deadline comes first
    monkeypatch.setattr(roles.estudiante, "INSIST_MAX_DELAY", 5.0)
    listener, thread = _scripted_docencio([_drop, _error, _answer])
    try:
        port = listener.getsockname()[1]
        student = Estudiante("127.0.0.1", port, name="Ana", questions=1, interval=0, timeout=2)
        student.quiet = True
        informe = student.run()
    finally:
        listener.close()
    thread.join(5)
    assert (informe.answered, informe.errors, informe.unanswered) == (0, 1, 0), informe
    assert informe.error_texts == ["el Tareo no está disponible"]


@pytest.mark.timeout(40)
def test_a_stuck_write_does_not_hang_the_outboxs_close(tmp_path):
    """A write that never returns (a hung fsync, played by a trigger that blocks) holds the
    store's lock: close() used to wait for it forever (rows(), then the store's close)."""
    outbox = Outbox(ProfesorClient(_nowhere(), timeout=0.5), tmp_path / "o.sqlite3")
    stall = threading.Event()
    try:
        assert _wait(lambda: outbox.store is not None)
        store = outbox.store
        assert store is not None
        with store._lock:
            store._db.create_function("stall", 0, lambda: stall.wait(60))
            store._db.execute(
                "CREATE TEMP TRIGGER stuck BEFORE INSERT ON outbox BEGIN SELECT stall(); END"
            )
        outbox.commit("k1", lambda failed: None)
        assert _wait(lambda: outbox._busy)
        closing = threading.Thread(target=outbox.close, args=(0.2,), daemon=True)
        closing.start()
        closing.join(20)
        assert not closing.is_alive(), "close() hung on the stuck write"
    finally:
        stall.set()


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _nowhere() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_a_roles_stats_never_replace_the_students_totals_in_the_summary():
    """The run's JSON report said errors = the last Docencio's, not the students': the
    chaos test's ``unanswered == errors`` compared two different things."""
    from ayudantia.commands.run import merge_stats

    summary = {"errors": 3, "answered": 10}
    merge_stats(summary, "docencio", {"errors": 9, "delivered": 5})
    merge_stats(summary, "tareo", {"errors": 1})
    assert summary == {
        "errors": 3,
        "answered": 10,
        "docencio_errors": 9,
        "delivered": 5,
        "tareo_errors": 1,
    }


@pytest.mark.timeout(40)
def test_a_full_outbox_refuses_new_keys_and_takes_them_again_once_drained(tmp_path):
    """The Profesor away for long: the outbox grew without bound. Now at ``max_rows`` new
    keys get a refusal (an error answer, never an uncounted one); marks still go; once the
    Profesor takes keys, new ones are committed again."""
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(ProfesorClient(_nowhere(), timeout=0.5), path, max_rows=3)
    results: list[str | None] = []

    async def commit(keys: list[str]) -> None:
        loop = asyncio.get_running_loop()
        outbox.bind(loop)
        for key in keys:
            done = loop.create_future()
            outbox.commit(key, done.set_result)
            results.append(await asyncio.wait_for(done, 10))

    try:
        asyncio.run(commit(["a", "b", "c", "d"]))
        assert results[:3] == [None, None, None]
        assert results[3] is not None and "lleno" in results[3], results
        assert outbox.full and _keys(path) == {"a", "b", "c"}
        outbox.delivered("a")  # a mark still goes while full
        assert _wait(lambda: outbox.store is not None and outbox.store.ready(10) == ["a"])
        outbox.acknowledged(["a"])  # the Profesor took it: room for one
        asyncio.run(commit(["e"]))
        assert results[4] is None and not outbox.full
        assert _keys(path) == {"b", "c", "e"}
    finally:
        outbox.close(0.1)


def _keys(path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {row[0] for row in db.execute("SELECT key FROM outbox")}
    finally:
        db.close()


def test_two_docencios_never_share_one_outbox(tmp_path):
    """The same --outbox twice: the second one's start marked every row of the first
    ready (posting answers still on their way). Now the second is refused, with a reason."""
    from roles.outbox import OutboxStore

    path = tmp_path / "o.sqlite3"
    first = OutboxStore(path)
    try:
        first.apply(["on-its-way"], [], [])
        with pytest.raises(sqlite3.OperationalError, match="in use by another Docencio"):
            OutboxStore(path)
        assert first.ready(10) == []  # not marked ready behind its back
    finally:
        first.close()
    again = OutboxStore(path)  # free once the first is closed (or its process died)
    again.close()


def test_a_count_that_grows_after_the_docencio_stopped_fails_the_run():
    from ayudantia.commands.run import settle_count

    summary = {"ok": True, "answered": 5, "profesor_count": 5}
    settle_count(summary, 5)
    assert summary == {"ok": True, "answered": 5, "profesor_count": 5}
    settle_count(summary, 6)  # one more key came with the Docencio's last posts
    assert summary["ok"] is False and summary["profesor_count"] == 6
    assert summary["profesor_count_before_stop"] == 5
    late = {"ok": False, "answered": 5, "profesor_count": 4}
    settle_count(late, 5)  # equal only after the wait timed out: still a failure
    assert late["ok"] is False and late["profesor_count"] == 5


@pytest.mark.timeout(40)
def test_keys_a_misconfigured_profesor_refuses_stay_in_the_outbox(tmp_path):
    """A 4xx (here a server that is not the Profesor: 404) deleted the keys from the outbox
    as if acknowledged: those counts were lost for good, even once the setup was fixed."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits = threading.Event()

    class NotAProfesor(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_error(404)
            hits.set()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotAProfesor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(ProfesorClient(url, timeout=2), path)
    try:
        assert _wait(lambda: outbox.store is not None)
        outbox.store.apply(["k1"], ["k1"], [])
        outbox.poster.poke()
        assert hits.wait(10)
        assert _wait(lambda: outbox.poster.rejected == 1)
        assert _keys(path) == {"k1"}
    finally:
        outbox.close(0.1)
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(20)
def test_chaos_finishes_with_no_startup_limit():
    """``run --chaos 2 --startup-timeout 0``: finish() joined with an infinite timeout and
    died with OverflowError (a traceback, the roles' cleanup cut short)."""
    from ayudantia.chaos import Chaos

    injector = Chaos(600.0, [], {}, lambda: 0.0, startup_timeout=math.inf)  # no fault comes
    injector.start()
    assert injector.finish() == []


@pytest.mark.timeout(20)
def test_chaos_injects_no_fault_once_calm():
    """Past ``calm_after`` no role is killed (here none could be: an injection with no roles
    fails, and finish() would raise it)."""
    from ayudantia.chaos import Chaos

    injector = Chaos(0.1, [], {}, lambda: 1.0, calm_after=0.0)
    injector.start()
    time.sleep(0.5)  # several mean gaps: a fault would have come
    assert injector.finish() == []


def _scripted_tareo(respuesta: object) -> tuple[socket.socket, threading.Thread]:
    """A Tareo on a real socket whose every answer carries ``respuesta`` as given."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            sock, _ = listener.accept()
            conn = Connection(sock, side="server", idle_timeout=30)
            with contextlib.suppress(AyudantiaError):
                while True:
                    q = conn.recv()
                    conn.send({"id": q["id"], "respuesta": respuesta, "por": "Tareo"})
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


@pytest.mark.timeout(60)
def test_an_answer_the_student_takes_as_an_error_is_not_counted(procs, tmp_path):
    """A Tareo answer whose ``respuesta`` is not text: the student takes it as an error,
    the Docencio committed its key (counted one answer more than the students received)."""
    from roles_helpers import ask, connect, recv_all

    from roles.clase import count_key

    tareo, _ = _scripted_tareo(42)
    outbox = tmp_path / "o.sqlite3"
    try:
        docencio = procs.start(
            "docencio",
            *("docencio", "--port", "0", "--profesor", _nowhere(), "--outbox", str(outbox)),
            *("--tareo", f"127.0.0.1:{tareo.getsockname()[1]}"),
        )
        conn = connect(docencio)
        ask(conn, "t1", "Tarea", de="Ana")
        assert recv_all(conn, 1)[0]["respuesta"] == 42
        ask(conn, "c1", "Contenido", de="Ana")  # committed after t1 would have been
        assert "respuesta" in recv_all(conn, 1)[0]
        conn.close()
        counted = {count_key({"id": "c1", "de": "Ana"}, "")}
        assert _wait(lambda: counted <= _keys(outbox))
        assert _keys(outbox) == counted
    finally:
        tareo.close()
