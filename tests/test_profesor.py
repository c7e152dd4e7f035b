"""The Profesor: the notebook's routes and shapes, a count that persists and never doubles."""

from __future__ import annotations

import pickle
import threading

import msgpack
import pytest
import requests
from roles_helpers import profesor_count

from roles.clase import RESPUESTAS
from roles.profesor import Conteo, Libro, ProfesorClient, create_app, parse_count


@pytest.fixture
def client(tmp_path):
    app = create_app(tmp_path / "p.sqlite3", "json")
    yield app.test_client()
    app.extensions["libro"].close()


def count_of(client) -> int:
    return parse_count(client.get("/preguntas").get_json()["texto"])


def test_routes_and_shapes_exactly_as_the_notebook(client):
    assert client.get("/").get_json() == {"saludo": "Bienvenido a la clase"}
    r = client.get("/respuesta").get_json()
    assert set(r) == {"texto", "método"} and r["método"] == "GET" and r["texto"] in RESPUESTAS
    assert client.get("/preguntas").get_json() == {
        "texto": "Llevamos: 0 preguntas respondidas",
        "método": "GET",
    }
    assert client.post("/preguntas").get_json() == {
        "texto": "Llevamos: 1 preguntas respondidas",
        "método": "POST",
    }
    assert client.post("/").status_code == 405
    assert client.get("/nada").status_code == 404


def test_a_question_id_counts_once_however_often_it_is_posted(client):
    for _ in range(3):
        assert client.post("/preguntas", json={"id": "ana/1"}).status_code == 200
    client.post("/preguntas", json={"id": 7})
    client.post("/preguntas", json={"ids": ["ana/2", "ana/3", "ana/1"]})
    client.post("/preguntas")  # anonymous, as in the notebook: +1 each time
    client.post("/preguntas")
    assert count_of(client) == 1 + 1 + 2 + 2


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400),
        (b"[1, 2]", {"Content-Type": "application/json"}, 400),
        (b'{"id": [1]}', {"Content-Type": "application/json"}, 400),
        (b'{"id": true}', {"Content-Type": "application/json"}, 400),
        (b'{"ids": []}', {"Content-Type": "application/json"}, 400),
        (b"\xc1", {"Content-Type": "application/msgpack"}, 400),
        (pickle.dumps({"id": "x"}), {"Content-Type": "application/python-pickle"}, 415),
        (b"hello", {"Content-Type": "text/plain"}, 415),
        (b'{"id": "' + b"x" * 2_000_000 + b'"}', {"Content-Type": "application/json"}, 413),
    ],
)
def test_bad_bodies_get_4xx_and_leave_the_count(client, body, headers, status):
    client.post("/preguntas", json={"id": "before"})
    response = client.post("/preguntas", data=body, headers=headers)
    assert response.status_code == status
    assert "error" in response.get_json()
    assert count_of(client) == 1


def test_msgpack_by_negotiation(client):
    body = msgpack.packb({"id": "m1"})
    response = client.post(
        "/preguntas",
        data=body,
        headers={"Content-Type": "application/msgpack", "Accept": "application/msgpack"},
    )
    assert response.content_type == "application/msgpack"
    assert msgpack.unpackb(response.data) == {
        "texto": "Llevamos: 1 preguntas respondidas",
        "método": "POST",
    }
    assert client.get("/").content_type == "application/json"  # no Accept: JSON


def test_pickle_only_when_the_profesor_runs_pickle(tmp_path):
    app = create_app(tmp_path / "p.sqlite3", "pickle")
    client = app.test_client()
    kind = "application/python-pickle"
    response = client.post(
        "/preguntas",
        data=pickle.dumps({"id": "p1"}),
        headers={"Content-Type": kind, "Accept": kind},
    )
    assert response.status_code == 200 and response.content_type == kind
    assert pickle.loads(response.data)["texto"] == "Llevamos: 1 preguntas respondidas"
    app.extensions["libro"].close()


def test_the_count_survives_a_restart(tmp_path):
    path = tmp_path / "p.sqlite3"
    app = create_app(path)
    app.test_client().post("/preguntas", json={"ids": ["a", "b"]})
    app.extensions["libro"].close()
    again = create_app(path).test_client()
    again.post("/preguntas", json={"id": "a"})
    assert count_of(again) == 2


def test_concurrent_posts_never_lose_an_increment(tmp_path):
    libro = Libro(tmp_path / "p.sqlite3")

    def worker(n: int) -> None:
        for i in range(100):
            libro.add([f"{n}/{i}"] if i % 2 else None)
            libro.add([f"{n}/{i}"])  # a retry: never counted twice

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # per worker: 50 anonymous + 100 distinct ids
    assert libro.count() == 8 * 150
    libro.close()


@pytest.mark.timeout(60)
def test_served_by_waitress_over_real_http(procs, tmp_path):
    profesor = procs.start(
        "profesor", "profesor", "--port", "0", "--db", str(tmp_path / "p.sqlite3")
    )
    url = profesor.address
    response = requests.get(url + "/")
    assert response.json() == {"saludo": "Bienvenido a la clase"}
    assert response.headers["Server"] == "profesor"  # waitress's ident (Flask's says Werkzeug)
    client = ProfesorClient(url, "msgpack")
    errors: list[BaseException] = []

    def poster(n: int) -> None:
        try:
            for i in range(25):
                client.post_ids([f"{n}/{i}"])
                client.post_ids([f"{n}/{i}"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=poster, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert profesor_count(url) == 200
    assert client.respuesta() in RESPUESTAS


def test_conteo_retries_until_the_profesor_is_back(procs, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on (yet)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    conteo = Conteo(ProfesorClient(url, timeout=1.0))
    for i in range(5):
        conteo.add(f"q{i}")
    conteo.add("q0")  # a retry of the same question
    import time

    time.sleep(0.5)
    assert conteo.posted == 0 and conteo.backlog == 6
    procs.start("profesor", "profesor", "--port", str(port), "--db", str(tmp_path / "c.db"))
    deadline = time.monotonic() + 10
    while conteo.backlog and time.monotonic() < deadline:
        time.sleep(0.05)
    conteo.close()
    assert profesor_count(url) == 5


def test_conteo_drops_a_batch_the_profesor_refuses_and_counts_on(procs, tmp_path):
    """Review defect 2: a batch the Profesor refuses as malformed (400: a key over 256
    characters) is dropped and counted as rejected, not retried forever; the keys behind it
    are counted."""
    import time

    profesor = procs.start("profesor", "profesor", "--port", "0", "--db", str(tmp_path / "r.db"))
    url = profesor.address
    conteo = Conteo(ProfesorClient(url, timeout=2.0), batch=1)
    conteo.add("k" * 300)  # what a 250-character name made before the door checked names
    for i in range(6):
        conteo.add(f"after-{i}")
    deadline = time.monotonic() + 10
    while conteo.backlog and time.monotonic() < deadline:
        time.sleep(0.05)
    conteo.close()
    assert conteo.rejected == 1 and conteo.posted == 6
    assert profesor_count(url) == 6
