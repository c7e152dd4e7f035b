"""The Tareo asks the Profesor once for every hard question that queued: GET /respuesta?n=K.

Real sockets throughout: a real Profesor process (or, for the Profesors that do not batch or
that lie, a small HTTP server on a real socket in this process), a Tareo on its own event
loop, and a blocking client speaking the wire format to it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from protocol.encoder import frame_buffers
from protocol.errors import CodecError
from protocol.transport import Connection
from roles.clase import DIFICIL, RESPUESTAS, TAREA
from roles.profesor import MAX_RESPUESTAS, ProfesorClient, create_app
from roles.tareo import Tareo


@pytest.fixture
def app_client(tmp_path):
    app = create_app(tmp_path / "p.sqlite3", "json")
    yield app.test_client()
    app.extensions["libro"].close()


def test_respuesta_with_n_draws_n_answers(app_client):
    body = app_client.get("/respuesta?n=7").get_json()
    assert set(body) == {"texto", "textos", "método"} and body["método"] == "GET"
    assert len(body["textos"]) == 7 and all(t in RESPUESTAS for t in body["textos"])
    assert body["texto"] == body["textos"][0]
    assert len(app_client.get(f"/respuesta?n={MAX_RESPUESTAS}").get_json()["textos"]) == 1000


@pytest.mark.parametrize(
    "query", ["n=0", "n=-1", "n=abc", "n=", "n=01", "n=1.5", f"n={MAX_RESPUESTAS + 1}", "n=2&n=3"]
)
def test_a_bad_n_is_a_400(app_client, query):
    response = app_client.get(f"/respuesta?{query}")
    assert response.status_code == 400, query
    assert "'n'" in response.get_json()["error"]


class _Notebook(BaseHTTPRequestHandler):
    """A Profesor as the notebook wrote it: one ``texto`` per GET, whatever the query."""

    seen: list[str]
    reply: Any = None  # what GET /respuesta?n=K answers (None: the notebook's shape)
    delay = 0.0

    def do_GET(self) -> None:
        self.seen.append(self.path)
        time.sleep(self.delay)
        body = {"texto": RESPUESTAS[0], "método": "GET"}
        if "?" in self.path and self.reply is not None:
            body = self.reply
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def http_profesor(reply: Any = None, delay: float = 0.0) -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (_Notebook,), {"seen": seen, "reply": reply, "delay": delay})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_profesor_that_ignores_n_is_asked_one_by_one():
    with http_profesor() as (url, seen):
        client = ProfesorClient(url, timeout=5.0)
        assert client.respuestas(3) == [RESPUESTAS[0]] * 3
        assert seen == ["/respuesta?n=3", "/respuesta", "/respuesta"]
        assert client.batching is False
        assert client.respuestas(2) == [RESPUESTAS[0]] * 2
        assert seen[3:] == ["/respuesta", "/respuesta"]
        client.close()


@pytest.mark.parametrize(
    "reply",
    [
        {"textos": ["a", "b"]},  # two for three
        {"textos": ["a", 2, "c"]},  # not all text
        {"textos": "abc"},  # not a list
        {"método": "GET"},  # nothing at all
    ],
)
def test_a_profesor_whose_textos_lie_is_a_codec_error(reply):
    with http_profesor(reply) as (url, _):
        client = ProfesorClient(url, timeout=5.0)
        with pytest.raises(CodecError):
            client.respuestas(3)
        client.close()


@contextlib.contextmanager
def tareo(url: str, **kwargs: Any) -> Iterator[Tareo]:
    server = Tareo(profesor=url, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def ask(server: Tareo, questions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Send every question at once, then read one answer per question; by id."""
    with Connection.connect(*server.address) as conn:
        for q in questions:
            conn.send(q)
        answers = [conn.recv() for _ in questions]
    by_id = {a["id"]: a for a in answers}
    assert len(by_id) == len(questions), answers  # each id answered once
    return by_id


def hard(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": f"d{i}", "tipo": DIFICIL, "de": "t"} for i in range(start, start + n)]


@pytest.mark.timeout(60)
def test_hard_questions_that_queue_share_a_call(procs, tmp_path):
    profesor = procs.start("profesor", "profesor", "--port", "0", "--db", str(tmp_path / "p.db"))
    questions = [*hard(60), {"id": "t0", "tipo": TAREA, "de": "t"}]
    with tareo(profesor.address, workers=1) as server:
        answers = ask(server, questions)
        calls = server.profesor_calls
    for q in questions[:-1]:
        a = answers[q["id"]]
        assert a["por"] == "Profesor" and a["respuesta"] in RESPUESTAS, a
    assert answers["t0"]["por"] == "Tareo"
    assert 1 <= calls <= 30, calls  # one call per question was 60
    assert server.stats()["answered"] == 61


@pytest.mark.timeout(60)
def test_a_failed_call_is_an_error_answer_for_each_of_its_questions():
    # This Profesor lies for any n > 1 (one text for many questions).
    with http_profesor({"textos": ["solo una"]}) as (url, seen), tareo(url, workers=1) as server:
        answers = ask(server, hard(20))
    assert any("?n=" in path for path in seen)
    for i in range(20):
        a = answers[f"d{i}"]
        if "respuesta" in a:  # a question that went alone: the notebook's call, answered
            assert a["respuesta"] == RESPUESTAS[0]
        else:
            assert "el Profesor no está disponible" in a["error"], a
    assert sum("error" in a for a in answers.values()) >= 2


@pytest.mark.timeout(60)
def test_a_question_that_waited_too_long_in_the_queue_is_not_asked_late():
    # One call at a time, each taking 1 s: the questions queued behind the first waited
    # longer than queue_timeout (0.2 s) when their turn came.
    with (
        http_profesor(delay=1.0) as (url, seen),
        tareo(url, workers=1, queue_timeout=0.2) as server,
        Connection.connect(*server.address) as conn,
    ):
        conn.send(hard(1)[0])
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:  # the first call is under way
            time.sleep(0.01)
        for q in hard(3, start=1):
            conn.send(q)
        answers = {a["id"]: a for a in (conn.recv() for _ in range(4))}
    assert answers["d0"]["respuesta"] == RESPUESTAS[0]
    for i in (1, 2, 3):
        assert "en la cola del Tareo" in answers[f"d{i}"]["error"], answers[f"d{i}"]
    assert len(seen) == 1  # the late ones never reached the Profesor


def test_the_environment_still_rules_the_profesor_client(procs, tmp_path, monkeypatch):
    """requests' environment (proxies, NO_PROXY, REQUESTS_CA_BUNDLE) is read once per
    session now, not on every call: it must still be obeyed."""
    import requests

    profesor = procs.start("profesor", "profesor", "--port", "0", "--db", str(tmp_path / "e.db"))
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nobody listens there
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "bundle.pem"))
    through_proxy = ProfesorClient(profesor.address, timeout=2.0)
    with pytest.raises(requests.ConnectionError):
        through_proxy.respuesta()
    assert through_proxy._local.settings["verify"] == str(tmp_path / "bundle.pem")
    through_proxy.close()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = ProfesorClient(profesor.address, timeout=2.0)
    assert direct.respuestas(2)[0] in RESPUESTAS
    direct.close()


def send_at_once(conn: Connection, questions: list[dict[str, Any]]) -> None:
    """Every question in one write, so the Tareo reads them in one loop iteration (one batch)."""
    codec = conn.codec
    wire = b"".join(
        bytes(b) for q in questions for b in frame_buffers(codec.id, codec.encode(q), more=False)
    )
    conn.sock.sendall(wire)


@pytest.mark.timeout(60)
def test_a_batch_to_a_profesor_that_ignores_n_does_not_ask_the_expired_ones():
    # review23: the notebook's Profesor answers one text for ?n=4; the other three had
    # waited the whole call (1 s > queue_timeout 0.2 s) and were then asked one by one
    # anyway, each a full Profesor call, in the same pool slot.
    with (
        http_profesor(delay=1.0) as (url, seen),
        tareo(url, workers=1, queue_timeout=0.2) as server,
        Connection.connect(*server.address) as conn,
    ):
        send_at_once(conn, hard(4))
        answers = {a["id"]: a for a in (conn.recv() for _ in range(4))}
    assert seen == ["/respuesta?n=4"], seen  # the expired three never reached the Profesor
    assert answers["d0"]["respuesta"] == RESPUESTAS[0]
    for i in (1, 2, 3):
        assert "en la cola del Tareo" in answers[f"d{i}"]["error"], answers[f"d{i}"]


@pytest.mark.timeout(60)
def test_once_the_profesor_ignores_n_each_question_takes_its_own_slot():
    # review23: after the fallback every later batch was still one slot asking K questions
    # one by one while the other workers idled; one question per call keeps them all busy.
    with (
        http_profesor() as (url, seen),
        tareo(url, workers=4) as server,
        Connection.connect(*server.address) as conn,
    ):
        send_at_once(conn, hard(3))
        first = [conn.recv() for _ in range(3)]
        assert server.profesor.batching is False
        calls = server.profesor_calls
        send_at_once(conn, hard(8, start=3))
        later = [conn.recv() for _ in range(8)]
        assert server.profesor_calls - calls == 8  # one call per question, not one for all
    assert all(a["respuesta"] == RESPUESTAS[0] for a in first + later), first + later
    assert seen[0] == "/respuesta?n=3" and seen[1:] == ["/respuesta"] * 10, seen


def test_respuestas_once_makes_one_call_to_a_profesor_that_ignores_n():
    with http_profesor() as (url, seen):
        client = ProfesorClient(url, timeout=5.0)
        assert client.respuestas_once(5) == [RESPUESTAS[0]]
        assert client.respuestas_once(5) == [RESPUESTAS[0]]
        assert seen == ["/respuesta?n=5", "/respuesta"]
        client.close()


@pytest.mark.timeout(60)
def test_questions_asked_while_a_call_runs_wait_to_share_the_next():
    """While a call is under way the next batch gathers (``gather`` seconds at most), even
    with free slots: questions sent one by one go in one call, not one call each."""
    with (
        http_profesor({"textos": [RESPUESTAS[0]] * 10}, delay=0.5) as (url, seen),
        tareo(url, workers=16, gather=0.2) as server,
        Connection.connect(*server.address) as conn,
    ):
        conn.send(hard(1)[0])
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:  # the first call is under way
            time.sleep(0.01)
        for q in hard(10, start=1):
            conn.send(q)
        answers = {a["id"]: a for a in (conn.recv() for _ in range(11))}
    assert all(a.get("respuesta") == RESPUESTAS[0] for a in answers.values()), answers
    assert seen == ["/respuesta", "/respuesta?n=10"], seen
    assert server.profesor_calls == 2
