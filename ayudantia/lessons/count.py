"""count: a global in-memory counter that counts POSTs.

The notebook's Profesor keeps ``preguntas`` in a module global and adds one per POST.
A restart sets it back to 0, and a POST whose response was lost (the connection dropped
after the server counted) is retried by a careful client and counted twice. The project's
Profesor counts in SQLite, once per question id, however often the same id is posted.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import requests

from ayudantia.lessons._profesor import Served, real_profesor
from ayudantia.lessons._runner import N_, Context, Outcome, Row, T
from roles.profesor import parse_count

NAME = "count"
SECTION = "«Webservices»"
PATTERN = N_("a global in-memory counter that counts POSTs")
DEFECT = N_(
    "the notebook's Profesor (preguntas += 1 on each POST): the Docencio reports some "
    "answers, one report's response is lost and the report is retried, then the "
    "Profesor restarts"
)
FIX = N_(
    "the same reports to the project's Profesor (roles/profesor.py): each carries the "
    "question's id, counted once in a SQLite file"
)
WHY = N_(
    "a global lives in one process's memory: a restart starts it at 0 again. And a POST "
    "is not idempotent: a client that did not see the response cannot tell whether it "
    "was counted, so a retry counts twice. An id per question makes the retry harmless."
)
FIX_AT = (
    "roles/profesor.py Libro.add (INSERT OR IGNORE), create_app; roles/profesor.py Conteo (retries)"
)
HEADLINE = "after_restart"


def notebook_app() -> Any:
    """The notebook's counting route, anew; a new app is a new process: preguntas = 0."""
    from flask import Flask, request

    app = Flask("profesor-cuaderno")
    state = {"preguntas": 0}  # the notebook's global

    @app.route("/preguntas", methods=["GET", "POST"])
    def respuesta_ingeniosa() -> dict[str, str]:
        if request.method == "POST":
            state["preguntas"] += 1
        return {"texto": f"Llevamos: {state['preguntas']} preguntas respondidas"}

    return app


def _count(url: str) -> int:
    return parse_count(requests.get(url + "/preguntas", timeout=2.0).json()["texto"])


def _post(url: str, body: dict[str, Any]) -> None:
    requests.post(url + "/preguntas", json=body, timeout=2.0).raise_for_status()


def _post_and_drop(url: str, port: int, body: dict[str, Any], until: float) -> None:
    """Send a POST and close before reading: the response is lost. Wait until it counted."""
    before = _count(url)
    data = json.dumps(body).encode()
    head = (
        f"POST /preguntas HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: "
        f"application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall(head + data)
    while _count(url) == before and time.monotonic() < until:
        time.sleep(0.02)


def _scenario(ctx: Context, start: Any, answers: int) -> dict[str, int]:
    """``answers`` reports, the last one's response lost and retried, then a restart."""
    served: Served = start(0)
    port, url = served.port, served.url
    for n in range(answers - 1):
        _post(url, {"id": f"q{n}"})
    last = {"id": f"q{answers - 1}"}
    _post_and_drop(url, port, last, ctx.deadline(2.0))
    _post(url, last)  # the retry
    before = _count(url)
    served.stop()
    restarted = start(port)
    return {"before": before, "after": _count(restarted.url)}


def run(ctx: Context) -> Outcome:
    answers = ctx.pick(5, 20)
    bad = _scenario(ctx, lambda port: Served(ctx, notebook_app(), port), answers)
    good = _scenario(ctx, lambda port: real_profesor(ctx, port), answers)
    rows = [
        Row("answers", N_("answers reported"), answers, answers),
        Row("before", N_("count before the restart"), bad["before"], good["before"]),
        Row("after_restart", N_("count after the restart"), bad["after"], good["after"]),
        Row(
            "double", N_("answers counted twice"), bad["before"] - answers, good["before"] - answers
        ),
    ]
    notes = [
        T(
            "the last report's response was dropped before it was read, and the "
            "report was sent again"
        )
    ]
    return Outcome(
        rows,
        defect_showed=bad["before"] > answers and bad["after"] == 0,
        fix_held=good["before"] == answers and good["after"] == answers,
        notes=notes,
    )
