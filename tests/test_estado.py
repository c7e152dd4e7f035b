"""The class's state: the roles' reports to the Profesor, GET /estado, and who is up or down."""

from __future__ import annotations

import json
import signal

import pytest
import requests
from roles_helpers import ask, connect, profesor_count, recv_all, wait_for

from roles.estado import DOWN_AFTER, Cronometro, Estado, percentiles
from roles.informante import Informante
from roles.profesor import create_app, parse_count


class Clock:
    """A clock the test moves by hand (the store's ages and history follow it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def client(tmp_path):
    app = create_app(tmp_path / "p.sqlite3", "json")
    yield app.test_client()
    app.extensions["libro"].close()


def report(role: str = "tareo", **numbers) -> dict:
    return {"role": role, "pid": 1, "report": {"stats": {"answered": 1}, **numbers}}


def test_a_role_is_up_while_it_reports_and_down_after_it_stops():
    clock = Clock()
    estado = Estado(clock)
    assert estado.snapshot(0)["roles"]["tareo"] == {
        "up": False,
        "age": None,
        "pid": None,
        "report": None,
    }
    estado.accept(report(), 0)
    clock.now += DOWN_AFTER
    assert estado.snapshot(0)["roles"]["tareo"]["up"] is True
    clock.now += 0.01
    tareo = estado.snapshot(0)["roles"]["tareo"]
    assert tareo["up"] is False and tareo["age"] == pytest.approx(DOWN_AFTER + 0.01)
    assert tareo["report"] == {"stats": {"answered": 1}}, "the last numbers stay visible"
    estado.accept(report(), 0)
    assert estado.snapshot(0)["roles"]["tareo"]["up"] is True
    assert DOWN_AFTER < 2.0, "a silent role must show as down within 2 s"


def test_a_goodbye_shows_the_role_down_at_once_and_keeps_its_last_numbers():
    estado = Estado(Clock())
    estado.accept(report(), 0)
    estado.accept({"role": "tareo", "pid": 1, "bye": True}, 0)
    tareo = estado.snapshot(0)["roles"]["tareo"]
    assert tareo["up"] is False and tareo["report"] == {"stats": {"answered": 1}}


def test_the_history_gives_questions_per_second_and_the_docencios_latency():
    clock = Clock()
    estado = Estado(clock)
    latency = {"n": 3, "p50": 0.001, "p95": 0.002, "p99": 0.003}
    for count in (0, 10, 30):
        estado.accept(report("docencio", latency=latency), count)
        clock.now += 0.5
    history = estado.snapshot(30)["history"]
    assert history["rate"] == [20.0, 40.0, 0.0]
    assert history["p99"] == [0.003, 0.003, 0.003]
    assert history["t"][-1] == 0.0 and history["t"][0] == -1.0
    clock.now += 120
    assert len(estado.snapshot(30)["history"]["t"]) <= 1, "only the last minute is kept"


def test_the_charts_get_only_sane_latencies():
    """A reported latency of 1e306 s overflowed to Infinity in the page and froze it."""
    clock = Clock()
    estado = Estado(clock)
    for p50 in (1e306, -1.0, True, "1", 0.002):
        estado.accept(report("docencio", latency={"p50": p50, "p95": None}), 0)
        clock.now += 0.5
    estado.accept(report("docencio"), 0)
    assert estado.snapshot(0)["history"]["p50"] == [None, None, None, 0.002, None]


@pytest.mark.parametrize(
    "body",
    [
        b"[1]",
        b'{"role": "profesor", "report": {}}',
        b'{"role": "tareo"}',
        b'{"role": "tareo", "pid": "x", "report": {}}',
        b'{"role": "tareo", "report": {"a": NaN}}',
        b'{"role": "tareo", "report": {"a": {"b": {"c": {"d": 1}}}}}',
        b'{"role": "tareo", "report": {"a": "' + b"x" * 500 + b'"}}',
        b'{"role": "tareo", "report": {"a": [1, 2, 3, 4, 5]}}',
        b"\xff\xfe",
        b"[" * 10_000,
        # valid JSON, not encodable: accepted, it made every GET /estado a 500
        b'{"role": "tareo", "report": {"a": "\\ud800"}}',
        b'{"role": "tareo", "report": {"\\udfff": 1}}',
    ],
)
def test_a_bad_report_is_refused_and_moves_nothing(client, body):
    client.post("/preguntas", json={"id": "a"})
    response = client.post("/estado", data=body, content_type="application/json")
    assert response.status_code == 400, response.data
    assert "error" in response.get_json()
    state = json.loads(client.get("/estado").data)
    assert state["count"] == 1 and state["roles"]["tareo"]["report"] is None
    assert parse_count(client.get("/preguntas").get_json()["texto"]) == 1


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_report_that_a_web_page_could_send_cross_origin_is_refused(client, ctype):
    """text/plain and form bodies need no CORS preflight: any page could post them."""
    body = b'{"role": "tareo", "pid": 1, "report": {"a": 1}}'
    response = client.post("/estado", data=body, content_type=ctype)
    assert response.status_code == 415
    assert json.loads(client.get("/estado").data)["roles"]["tareo"]["report"] is None


def test_an_oversized_report_is_refused(client):
    body = json.dumps({"role": "tareo", "report": {"a": "x" * 100}}).encode() + b" " * 17_000
    response = client.post("/estado", data=body, content_type="application/json")
    assert response.status_code == 413


def test_reports_never_move_the_count(client):
    for _ in range(5):
        assert client.post("/estado", json=report(stats={"delivered": 99})).status_code == 204
    assert parse_count(client.get("/preguntas").get_json()["texto"]) == 0
    assert json.loads(client.get("/estado").data)["count"] == 0


def test_percentiles_are_nearest_rank_and_empty_is_none():
    assert percentiles([]) == {"n": 0, "p50": None, "p95": None, "p99": None}
    values = [i / 100 for i in range(1, 101)]
    assert percentiles(values) == {"n": 100, "p50": 0.5, "p95": 0.95, "p99": 0.99}


@pytest.mark.timeout(30)
def test_the_reporter_drops_reports_while_the_profesor_is_away_and_never_queues(procs):
    profesor = procs.start("profesor", "profesor", "--port", "0", "--db", str(procs.logdir / "p"))
    url = profesor.address
    profesor.stop()
    taken = []
    informante = Informante(url, "tareo", lambda: taken.append(1) or {"n": len(taken)}, every=0.05)
    with informante:
        assert wait_for(lambda: informante.dropped >= 5, 10)
        assert informante.sent == 0 and informante._thread.is_alive()
    assert not informante._thread.is_alive(), "close() ends the thread"
    assert informante.dropped == len(taken) + 1, "each report sent once, then dropped (+ bye)"


@pytest.mark.timeout(60)
def test_a_live_class_reports_its_numbers_and_the_tareo_goes_down_and_up(procs):
    clase = procs.clase()
    url = clase["profesor"].address

    def estado() -> dict:
        return requests.get(url + "/estado", timeout=5).json()

    assert wait_for(lambda: all(estado()["roles"][r]["up"] for r in ("docencio", "tareo")), 10)
    conn = connect(clase["docencio"])
    try:
        kinds = ["Contenido", "Tarea", "Pregunta Dificil"] * 4
        for n, tipo in enumerate(kinds):
            ask(conn, f"q{n}", tipo, de="Ana")
        answers = recv_all(conn, len(kinds))
        assert all("respuesta" in a for a in answers), answers
        assert wait_for(lambda: profesor_count(url) == len(kinds), 10)

        def reported() -> bool:
            roles = estado()["roles"]
            doc, tareo = roles["docencio"]["report"] or {}, roles["tareo"]["report"] or {}
            return (
                doc.get("answers") == len(kinds)
                and doc.get("students") == 1
                and tareo.get("stats", {}).get("answered") == 8
            )

        assert wait_for(reported, 10), estado()
        state = estado()
        doc = state["roles"]["docencio"]["report"]
        assert state["count"] == profesor_count(url) == len(kinds)
        assert doc["by_kind"] == {"Contenido": 4, "Tarea": 4, "Pregunta Dificil": 4}
        assert doc["by_por"] == {"Docencio": 4, "Tareo": 4, "Profesor": 4}
        latency = doc["latency"]
        assert latency["n"] == len(kinds) and 0 < latency["p50"] <= latency["p99"]
        assert doc["links"]["estudiantes"]["received"] > 0
        assert doc["links"]["tareo"]["sent"] > 0 and doc["wire"]["codec"] == "json"
        tareo_report = state["roles"]["tareo"]["report"]
        assert tareo_report["stats"]["answered"] == 8 and tareo_report["links_open"] == 1
    finally:
        conn.close()

    clase["tareo"].stop(signal.SIGKILL)  # no goodbye: down because its reports stop
    assert wait_for(lambda: not estado()["roles"]["tareo"]["up"], 10)
    tareo = estado()["roles"]["tareo"]
    assert tareo["age"] > DOWN_AFTER
    again = procs.start("tareo", "tareo", "--port", "0", "--profesor", url)
    assert wait_for(lambda: estado()["roles"]["tareo"]["up"], 10)
    assert estado()["roles"]["tareo"]["pid"] == again.pid


def test_every_text_of_the_page_is_in_the_panel_catalog(client):
    import re

    from ayudantia.i18n import catalog_ids
    from roles.panel import HERE

    page = (HERE / "panel.html").read_text(encoding="utf-8")
    script = (HERE / "panel.js").read_text(encoding="utf-8")
    used = set(re.findall(r"\{\{(.+?)\}\}", page)) | set(re.findall(r'\bt\("([^"]+)"\)', script))
    assert len(used) > 20
    assert used <= set(catalog_ids("en", "panel")), used - set(catalog_ids("en", "panel"))
    spanish_ids = catalog_ids("es", "panel")  # a missing one would show in English
    assert set(spanish_ids) == set(catalog_ids("en", "panel"))
    assert all(spanish_ids.values()), [k for k, v in spanish_ids.items() if not v]
    spanish = client.get("/panel").get_data(as_text=True)
    assert "{{" not in spanish and "__TEXTS__" not in spanish and 'lang="es"' in spanish
    assert "Llevamos:" in spanish and "preguntas respondidas" in spanish
    assert "So far:" in client.get("/panel?lang=en").get_data(as_text=True)
    assert client.get("/panel?lang=xx").status_code == 400
    assert client.get("/panel/panel.js").content_type.startswith("text/javascript")
    assert client.get("/panel/secret.py").status_code == 404
    assert "cdn" not in (page + script).lower() and "https://" not in page + script


@pytest.mark.timeout(30)
def test_a_keyed_profesor_takes_the_reporters_signed_reports_and_refuses_others(procs):
    """With the class's key, POST /estado is a signed write: the roles' reporter signs it."""
    key = "clave-de-la-clase"
    profesor = procs.start(
        "profesor",
        "profesor",
        *("--port", "0", "--db", str(procs.logdir / "p")),
        env={"AYUDANTIA_KEY": key},
    )
    url = profesor.address
    signed = Informante(
        url, "tareo", lambda: {"stats": {"answered": 1}}, every=0.05, key=key.encode()
    )
    with signed:
        assert wait_for(lambda: signed.sent >= 3, 10)
        assert wait_for(
            lambda: requests.get(url + "/estado", timeout=5).json()["roles"]["tareo"]["up"], 5
        )
    assert signed.dropped == 0
    unsigned = Informante(url, "docencio", lambda: {"stats": {}}, every=0.05)
    with unsigned:
        assert wait_for(lambda: unsigned.dropped >= 3, 10)
    assert unsigned.sent == 0
    assert not requests.get(url + "/estado", timeout=5).json()["roles"]["docencio"]["up"]


def test_answers_by_who_stay_a_few_names_whatever_the_tareo_says():
    """A Tareo answering with a new "por" each time grew by_por without bound, until the
    Profesor refused every report of the Docencio (shown down for the rest of the class)."""

    class Conn:
        bytes_sent = bytes_received = 0

    crono, conn = Cronometro(), Conn()
    for i, por in enumerate([*(f"Tareo-{n}" for n in range(100)), "Tareo", ["x"], None]):
        crono.start(conn, {"id": i, "tipo": "Tarea"})
        crono.stop(conn, {"id": i, "respuesta": "x", "por": por})
    numbers = crono.report()
    numbers.pop("closed_bytes")  # as docencio_report does
    assert numbers["by_por"] == {"otro": 102, "Tareo": 1}
    Estado().accept({"role": "docencio", "report": numbers}, 0)


@pytest.mark.timeout(30)
def test_a_refused_report_is_said_once_not_every_time(procs, caplog):
    profesor = procs.start("profesor", "profesor", "--port", "0", "--db", str(procs.logdir / "p"))
    caplog.set_level("DEBUG", logger="ayudantia.estado")
    informante = Informante(profesor.address, "tareo", lambda: {"x" * 50: 1}, every=0.05)
    with informante:
        assert wait_for(lambda: informante.refused >= 4, 10)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "longer than 40" in warnings[0].getMessage()
    assert informante.sent == 1, "only the goodbye was taken"
