"""Bodies that lie, sent over real HTTP to a real Profesor process: 4xx, count unchanged."""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.procs import RoleProcess, running


@pytest.fixture(scope="module")
def profesor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoleProcess]:
    db = tmp_path_factory.mktemp("profesor") / "libro.sqlite3"
    with running("profesor", "--port", "0", "--db", str(db)) as proc:
        yield proc


def url(proc: RoleProcess, path: str) -> str:
    return f"http://{proc.host}:{proc.port}{path}"


def count(proc: RoleProcess) -> int:
    texto = requests.get(url(proc, "/preguntas"), timeout=10).json()["texto"]
    m = re.fullmatch(r"Llevamos: (\d+) preguntas respondidas", texto)
    assert m, texto
    return int(m.group(1))


BODIES = {
    "malformed": (b'{"id": "a', "application/json", 400),
    "bad-utf8": (b'{"id": "\xff"}', "application/json", 400),
    "not-a-map": (b'["a"]', "application/json", 400),
    "id-wrong-type": (b'{"id": {"x": 1}}', "application/json", 400),
    "deeply-nested": (b"[" * 50_000 + b"]" * 50_000, "application/json", 400),
    "huge-integer": (b'{"id": ' + b"9" * 20_000 + b"}", "application/json", 400),
    "msgpack-huge-map": (b"\xdf\xff\xff\xff\xff", "application/msgpack", 400),
    "pickle-not-opted-in": (pickle.dumps({"id": "p"}), "application/python-pickle", 415),
    "oversized": (b'{"id": "' + b"a" * (3 * 1024 * 1024) + b'"}', "application/json", 413),
}


@pytest.mark.parametrize("name", list(BODIES))
def test_bad_body_gets_4xx_and_leaves_the_count(profesor: RoleProcess, name: str) -> None:
    body, content_type, status = BODIES[name]
    before = count(profesor)
    resp = requests.post(
        url(profesor, "/preguntas"), data=body, headers={"Content-Type": content_type}, timeout=30
    )
    assert resp.status_code == status, resp.text[:200]
    assert count(profesor) == before
    assert profesor.proc.poll() is None, "the Profesor keeps serving"


def test_good_body_still_counts_once(profesor: RoleProcess) -> None:
    before = count(profesor)
    for _ in range(3):  # a retried POST counts its id once
        resp = requests.post(url(profesor, "/preguntas"), json={"id": "hostil-ok"}, timeout=10)
        assert resp.status_code == 200
    assert count(profesor) == before + 1
    assert json.loads(requests.get(url(profesor, "/"), timeout=10).text) == {
        "saludo": "Bienvenido a la clase"
    }


def test_profesor_binds_loopback_by_default(profesor: RoleProcess, tmp_path: Path) -> None:
    assert profesor.host == "127.0.0.1"


HOST_CASES = [
    (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 400),  # no Host: RFC 9112 §3.2
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n", 400),  # two
    (b"GET / HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n", 400),  # empty
    (b"POST /preguntas HTTP/1.1\r\nContent-Length: 10\r\n\r\n" + b'{"id":"h"}', 400),
    (b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", 200),
    (b"GET / HTTP/1.0\r\n\r\n", 200),  # HTTP/1.0 has no Host requirement
]


@pytest.mark.parametrize(("request_bytes", "status"), HOST_CASES)
def test_an_http_1_1_request_without_one_host_is_a_400(
    profesor: RoleProcess, request_bytes: bytes, status: int
) -> None:
    import socket

    before = count(profesor)
    with socket.create_connection((profesor.host, profesor.port), timeout=10) as sock:
        sock.sendall(request_bytes)
        head = sock.recv(4096).split(b"\r\n", 1)[0]
    assert head.split()[1] == str(status).encode(), head
    assert count(profesor) == before  # the Host-less POST counted nothing


@pytest.mark.timeout(60)
def test_the_https_profesor_answers_400_without_one_host_too(procs, tmp_path: Path) -> None:
    """cheroot (HTTPS) kept the last of two Host headers and answered 200; waitress (HTTP)
    joins them, and the app's check answers 400. Every case, over TLS."""
    import socket
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    tls = ("--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"))
    profesor = procs.profesor(tmp_path / "p.db", *tls)
    host, port = profesor.address.removeprefix("https://").rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    for request_bytes, status in HOST_CASES:
        with (
            socket.create_connection((host, int(port)), timeout=10) as sock,
            ctx.wrap_socket(sock, server_hostname="127.0.0.1") as conn,
        ):
            conn.sendall(request_bytes)
            head = conn.recv(4096).split(b"\r\n", 1)[0]
        assert head.split()[1] == str(status).encode(), (request_bytes, head)
    texto = requests.get(
        profesor.address + "/preguntas", timeout=10, verify=str(tmp_path / "ca.pem")
    ).json()["texto"]
    assert texto.startswith("Llevamos: 0 "), texto  # the Host-less POST counted nothing
