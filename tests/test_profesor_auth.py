"""The authenticated Profesor: signed writes over real HTTP, 401s that count nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests
from roles_helpers import profesor_count

from roles.profesor import Conteo, ProfesorClient, create_app
from roles.profesor_auth import HEADER, NonceBook, Verifier, sign_headers

KEY = "clave del profesor"


def signed_post(url: str, body: dict, key: str = KEY, *, now=time.time) -> requests.Response:
    data = json.dumps(body).encode()
    headers = {
        "Content-Type": "application/json",
        **sign_headers(key.encode(), "POST", "/preguntas", data, now=now),
    }
    return requests.post(url + "/preguntas", data=data, headers=headers, timeout=5)


@pytest.mark.timeout(60)
def test_writes_need_a_signed_request_and_401s_count_nothing(procs, tmp_path):
    profesor = procs.profesor(tmp_path / "a.db", env={"AYUDANTIA_KEY": KEY})
    url = profesor.address
    # the intruder of the issue: no credentials, one id, then a batch
    for body in ({"id": "intruso-1"}, {"ids": ["a", "b", "c", "d"]}):
        r = requests.post(url + "/preguntas", json=body, timeout=5)
        assert r.status_code == 401 and "signed" in r.json()["error"]
    assert requests.post(url + "/preguntas", timeout=5).status_code == 401  # no body either
    assert signed_post(url, {"id": "x"}, key="otra clave").status_code == 401
    assert signed_post(url, {"id": "x"}, now=lambda: time.time() - 60).status_code == 401
    assert signed_post(url, {"id": "x"}, now=lambda: time.time() + 60).status_code == 401
    assert profesor_count(url) == 0  # reads stay open
    # a good request counts; the same request replayed is refused and counts nothing
    data = json.dumps({"id": "bueno"}).encode()
    headers = {
        "Content-Type": "application/json",
        **sign_headers(KEY.encode(), "POST", "/preguntas", data),
    }
    assert (
        requests.post(url + "/preguntas", data=data, headers=headers, timeout=5).status_code == 200
    )
    again = requests.post(url + "/preguntas", data=data, headers=headers, timeout=5)
    assert again.status_code == 401 and "already used" in again.json()["error"]
    # altered in transit: same header, another body
    forged = requests.post(url + "/preguntas", data=b'{"id":"malo"}', headers=headers, timeout=5)
    assert forged.status_code == 401
    assert profesor_count(url) == 1
    # the roles' client signs its requests, and Conteo (the Docencio's poster) with it
    client = ProfesorClient(url, "msgpack", key=KEY.encode())
    assert client.post_ids(["c1", "c2"]) == 3
    conteo = Conteo(ProfesorClient(url, key=KEY.encode()))
    for i in range(5):
        conteo.add(f"d{i}")
    conteo.close(flush=10)
    assert conteo.posted == 5 and profesor_count(url) == 8
    unsigned = Conteo(ProfesorClient(url, timeout=2.0))  # a Docencio without the key
    unsigned.add("fuera")
    unsigned.close(flush=5)
    assert unsigned.rejected == 1 and profesor_count(url) == 8


@pytest.mark.timeout(60)
@pytest.mark.parametrize("source", ["flag", "top-level key", "[profesor] key"])
def test_every_source_of_the_key_turns_signing_on(procs, tmp_path, source):
    """The flag and both TOML places sign the Profesor, as the README now says (it said the
    Profesor ignored AYUDANTIA_KEY and a top-level key and refused --key)."""
    config = tmp_path / "clase.toml"
    table = "[profesor]\n" if source == "[profesor] key" else ""
    config.write_text(f'{table}key = "{KEY}"\n')
    flags = ["--key", KEY] if source == "flag" else ["--config", str(config)]
    profesor = procs.profesor(tmp_path / "k.db", *flags)
    r = requests.post(profesor.address + "/preguntas", json={"id": "sin-firma"}, timeout=5)
    assert r.status_code == 401
    assert signed_post(profesor.address, {"id": "firmada"}).status_code == 200
    assert profesor_count(profesor.address) == 1


def test_the_readme_says_the_profesors_key_signs():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    flat = " ".join(readme.split())
    assert "ignores `AYUDANTIA_KEY`" not in flat and "refuses `--key`" not in flat
    assert (
        "`--key`, `AYUDANTIA_KEY` or a top-level `key` (or one in `[profesor]`) each turn "
        "signing on" in flat
    )


@pytest.mark.timeout(60)
def test_private_profesor_signs_reads_too(procs, tmp_path):
    profesor = procs.profesor(tmp_path / "p.db", "--private", env={"AYUDANTIA_KEY": KEY})
    url = profesor.address
    assert requests.get(url + "/preguntas", timeout=5).status_code == 401
    assert requests.get(url + "/", timeout=5).status_code == 401
    assert ProfesorClient(url, key=KEY.encode()).count() == 0


def test_every_write_route_is_covered_even_one_added_later(tmp_path):
    """The check is a before_request hook: a route added later needs no line of its own."""
    app = create_app(tmp_path / "e.db", key=KEY.encode())
    hits = []

    @app.route("/nueva", methods=["GET", "POST"])
    def nueva():  # type: ignore[no-untyped-def]
        hits.append(1)
        return {"ok": True}

    client = app.test_client()
    assert client.post("/nueva", json={"x": 1}).status_code == 401
    assert client.get("/nueva").status_code == 200  # reads open
    data = b'{"x":1}'
    headers = sign_headers(KEY.encode(), "POST", "/nueva", data)
    assert client.post("/nueva", data=data, headers=headers).status_code == 200
    assert hits == [1, 1]
    app.extensions["libro"].close()


def test_the_panels_reports_are_signed_writes_too(tmp_path):
    """POST /estado (the live panel's reports) is refused unsigned, accepted signed."""
    app = create_app(tmp_path / "e.db", key=KEY.encode())
    client = app.test_client()
    report = b'{"role": "tareo", "pid": 1, "report": {}}'
    json_type = {"Content-Type": "application/json"}
    assert client.post("/estado", data=report, headers=json_type).status_code == 401
    headers = {**json_type, **sign_headers(KEY.encode(), "POST", "/estado", report)}
    assert client.post("/estado", data=report, headers=headers).status_code == 204
    again = client.post("/estado", data=report, headers=headers)  # the same nonce, replayed
    assert again.status_code == 401
    app.extensions["libro"].close()


def test_nonce_memory_is_bounded_and_expires_with_the_window():
    book = NonceBook(limit=3)
    assert [book.claim(n, until=100.0, now=0.0) for n in "abc"] == [None, None, None]
    assert book.claim("a", until=100.0, now=1.0) == "reused"
    assert book.claim("d", until=100.0, now=1.0) == "full"
    assert book.claim("d", until=200.0, now=150.0) is None  # the first three expired
    assert len(book) == 1


def test_verifier_reasons_never_echo_the_key():
    clock = [1000.0]
    verifier = Verifier(KEY.encode(), clock=lambda: clock[0])
    headers = sign_headers(KEY.encode(), "POST", "/preguntas", b"{}", now=lambda: 1000.0)
    assert verifier.check("POST", "/preguntas", headers[HEADER], b"{}") is None
    for bad in (None, "v1 nonsense", headers[HEADER].replace("sig=", "sig=0")):
        reason = verifier.check("POST", "/preguntas", bad, b"{}")
        assert reason and KEY not in reason
    assert "signature" in verifier.check("PUT", "/preguntas", headers[HEADER], b"{}")
    clock[0] = 1031.0
    fresh = sign_headers(KEY.encode(), "POST", "/preguntas", b"{}", now=lambda: 1000.0)
    assert "timestamp" in verifier.check("POST", "/preguntas", fresh[HEADER], b"{}")


def test_the_signature_covers_the_query_string(tmp_path):
    """A write signed for /nueva was accepted as /nueva?borrar=todo: args were unsigned."""
    app = create_app(tmp_path / "q.db", key=KEY.encode())
    seen = []

    @app.route("/nueva", methods=["POST"])
    def nueva():  # type: ignore[no-untyped-def]
        from flask import request

        seen.append(dict(request.args))
        return {"ok": True}

    client = app.test_client()
    data = b'{"x":1}'
    bare = sign_headers(KEY.encode(), "POST", "/nueva", data)
    assert client.post("/nueva?borrar=todo", data=data, headers=bare).status_code == 401
    with_query = sign_headers(KEY.encode(), "POST", "/nueva?borrar=todo", data)
    assert client.post("/nueva?borrar=nada", data=data, headers=with_query).status_code == 401
    assert client.post("/nueva?borrar=todo", data=data, headers=with_query).status_code == 200
    assert client.post("/nueva", data=data, headers=bare).status_code == 200
    lf = sign_headers(KEY.encode(), "POST", "/nueva\n1", data)  # %0A decodes to a line feed
    assert client.post("/nueva%0A1", data=data, headers=lf).status_code == 401
    qmark = sign_headers(KEY.encode(), "POST", "/nueva?x", data)  # %3F decodes to "?"
    assert client.post("/nueva%3Fx", data=data, headers=qmark).status_code == 401
    assert seen == [{"borrar": "todo"}, {}]
    app.extensions["libro"].close()


def test_nonces_expire_in_their_own_order():
    """Expiries are each client's ts + window, not arrival order: an early-expiring nonce
    behind one stamped 30 s ahead stayed, and the book filled (429) with expired nonces."""
    book = NonceBook(limit=3)
    assert book.claim("late", until=160.0, now=100.0) is None
    assert book.claim("early", until=101.0, now=100.0) is None
    assert book.claim("x", until=132.0, now=102.0) is None
    assert len(book) == 2  # "early" forgotten
    assert book.claim("y", until=132.0, now=102.0) is None
    assert book.claim("late", until=160.0, now=150.0) == "reused"
