"""Hostile peers against the class's roles: real Tareo and Docencio processes, Profesor bodies."""

from __future__ import annotations

import contextlib
import json
import pickle
import socket
from pathlib import Path

import pytest

from ayudantia.lessons.pickle import TouchMarker
from protocol.framing import HEADER, MAGIC, VERSION, encode_message
from protocol.transport import Connection
from tests.procs import running

QUESTION = {"id": "q1", "tipo": "Tarea", "de": "Ana"}
# Both servers under attack: no Profesor to reach, slow readers dropped fast, quiet logs.
NO_PROFESOR = ("--profesor", "http://127.0.0.1:9")
HOSTILE_SETUP = (*NO_PROFESOR, "--read-timeout", "1", "--log-level", "WARNING")


@pytest.fixture(scope="module")
def tareo():
    with running("tareo", "--port", "0", *HOSTILE_SETUP) as proc:
        yield proc


@pytest.fixture(scope="module")
def docencio(tareo):
    with running(
        "docencio", "--port", "0", "--tareo", f"{tareo.host}:{tareo.port}", *HOSTILE_SETUP
    ) as proc:
        yield proc


@pytest.fixture(params=["tareo", "docencio"])
def role(request):
    return request.getfixturevalue(request.param)


def closed_by_server(sock: socket.socket, within: float = 8.0) -> None:
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"server kept the connection open for {within}s")


def answers(role) -> dict:
    assert role.proc.poll() is None, "".join(role.output)
    with Connection.connect(role.host, role.port, read_timeout=10, idle_timeout=10) as conn:
        conn.send(QUESTION)
        reply = conn.recv()
    assert isinstance(reply, dict) and reply.get("id") == "q1", reply
    return reply


@pytest.mark.parametrize(
    "wire",
    [
        HEADER.pack(MAGIC, VERSION, 1, 0, 0, 0xFFFFFFFF),
        b"\x00" * 64,
        b"AY\x01",
        encode_message(3, b"\xdd\xff\xff\xff\xff") + b"AY",
    ],
    ids=["huge-length", "garbage", "half-header", "msgpack-huge-array"],
)
def test_garbage_then_a_good_client_is_served(role, wire):
    with socket.create_connection((role.host, role.port), timeout=5) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(wire)
        closed_by_server(sock)
    answers(role)


def test_pickle_frame_to_a_role_that_did_not_opt_in(role, tmp_path: Path):
    marker = tmp_path / "pwned"
    with socket.create_connection((role.host, role.port), timeout=5) as sock:
        sock.sendall(encode_message(2, pickle.dumps(TouchMarker(marker))))
        closed_by_server(sock)
    assert not marker.exists()
    answers(role)


def test_malformed_json_gets_an_error_not_a_crash(role):
    with Connection.connect(role.host, role.port, read_timeout=10, idle_timeout=10) as conn:
        conn.send_payload(1, b'{"id": "q1", "tipo": ')
        with contextlib.suppress(Exception):
            conn.recv()  # an error reply, or a close: either is fine
    answers(role)


# --- Profesor: bodies that lie -------------------------------------------------------------


@pytest.fixture
def profesor(tmp_path: Path):
    profesor = pytest.importorskip("roles.profesor")
    app = profesor.create_app(tmp_path / "libro.sqlite3", "json")
    yield app.test_client()
    libro = app.extensions.get("libro")
    if libro is not None and hasattr(libro, "close"):
        libro.close()


def count(client) -> str:
    return client.get("/preguntas").get_json()["texto"]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"ids": [1, 2', "application/json", 400),  # malformed
        (b"\xff\xfe", "application/json", 400),  # invalid UTF-8
        (b"[1, 2, 3]", "application/json", 400),  # not a map
        (b'{"ids": "abc"}', "application/json", 400),  # wrong type
        (b'{"ids": []}', "application/json", 400),  # empty
        (b'{"ids": [true]}', "application/json", 400),  # bool is not an id
        (b'{"ids": [{"a": 1}]}', "application/json", 400),  # map is not an id
        (b'{"id": "' + b"x" * 300 + b'"}', "application/json", 400),  # id too long
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400),  # deeply nested
        (b"9" * 50_000, "application/json", 400),  # huge integer
        (b"\xdd\xff\xff\xff\xff", "application/msgpack", 400),  # huge msgpack array
        (pickle.dumps({"ids": [1]}), "application/python-pickle", 415),  # not opted in
        (b"<xml/>", "application/xml", 415),  # unknown type
        (b'{"ids": ["' + b"a" * (2 * 1024 * 1024) + b'"]}', "application/json", 413),  # oversized
    ],
    ids=[
        "malformed",
        "utf8",
        "not-map",
        "wrong-type",
        "empty",
        "bool",
        "map-id",
        "long-id",
        "nested",
        "huge-int",
        "msgpack-huge",
        "pickle",
        "xml",
        "oversized",
    ],
)
def test_profesor_bad_bodies_get_4xx_and_leave_the_count(profesor, body, content_type, status):
    before = count(profesor)
    resp = profesor.post("/preguntas", data=body, content_type=content_type)
    assert resp.status_code == status, resp.data[:200]
    assert count(profesor) == before
    # and a good body still counts
    ok = profesor.post(
        "/preguntas", data=json.dumps({"ids": ["z"]}), content_type="application/json"
    )
    assert ok.status_code == 200
