"""outage: an HTTP call with no timeout or error handling, in the handler thread.

The notebook's Tareo calls ``requests.get(URL)`` inside the thread that serves a student,
with no timeout and no ``try``. With the Profesor down the call raises, the exception ends
that thread, and the student's question is never answered; after the Profesor comes back
the student is still connected to a dead handler. The project's Tareo answers with an
error (the question's id) while the Profesor is down, and serves again once it is back.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

import requests

from ayudantia.lessons import _loopback as lo
from ayudantia.lessons._profesor import real_profesor
from ayudantia.lessons._runner import N_, Context, Outcome, Q, Row, T, Text, quiet_logger
from protocol.transport import Connection
from roles.tareo import Tareo

NAME = "outage"
SECTION = "«Servidor Multicliente»"
PATTERN = N_("an HTTP call with no timeout or error handling in the handler thread")
DEFECT = N_(
    'with the Profesor down, a student asks the notebook\'s Tareo a "Pregunta Dificil"; '
    "then the Profesor starts again and the student asks again"
)
FIX = N_("the same two questions to the project's Tareo (roles/tareo.py), on the same Profesor")
WHY = N_(
    "requests.get raises ConnectionError when nothing listens, and waits forever for a "
    "Profesor that accepts and never answers. Uncaught, the exception ends the thread "
    "that was the student's only handler: nobody answers, nobody says why. An outside "
    "call needs a timeout, and its failure is an answer too."
)
FIX_AT = (
    "roles/tareo.py Tareo._ask_profesor (error answer); roles/profesor.py "
    "ProfesorClient._call (timeout)"
)
HEADLINE = "down"


def _notebook_tareo(server: socket.socket, url: str, until: float, out: dict[str, Any]) -> None:
    """One student's handler thread; what ends it is recorded instead of printed."""
    try:
        with server.accept()[0] as sock:
            for pregunta in lo.notebook_questions(sock, until):
                if pregunta == "Pregunta Dificil":
                    respuesta = requests.get(url + "/respuesta")  # no timeout, no try
                    sock.sendall(lo.prefixed(respuesta.json()["texto"]))
    except Exception as exc:  # the thread dies here (the notebook would print a traceback)
        out["died"] = type(exc).__name__


def _heard(sock: socket.socket, patience: float) -> Text:
    """What the student got: an answer, the connection closed, or nothing in time."""
    start = time.monotonic()
    try:
        sock.settimeout(patience)
        data = sock.recv(4096)
    except TimeoutError:
        return T("none after {s}", s=Q(patience, "s"))
    except OSError:
        data = b""
    if data:
        return T("an answer")
    return T("none: the connection closed after {s}", s=Q(time.monotonic() - start, "s"))


def run(ctx: Context) -> Outcome:
    patience = ctx.pick(0.6, 2.0)
    port = lo.free_port()
    url = f"http://127.0.0.1:{port}"
    # the notebook's Tareo and the project's, both pointed at a Profesor that is down
    server = lo.listener(ctx)
    out: dict[str, Any] = {}
    handler = ctx.thread(
        _notebook_tareo, server, url, ctx.deadline(ctx.budget * 0.8), out, name="outage-tareo"
    )
    student = lo.connect(ctx, server.getsockname())
    ctx.stack.enter_context(quiet_logger("ayudantia.tareo"))  # its warning is the lesson's row
    tareo = Tareo(profesor=url, profesor_timeout=1.0)
    tareo.start()
    ctx.stack.callback(tareo.stop)
    conn = Connection.connect(*tareo.address, idle_timeout=ctx.budget)
    ctx.stack.callback(conn.close)

    student.sendall(lo.prefixed("Pregunta Dificil"))
    down_heard = _heard(student, patience)
    start = time.monotonic()
    conn.send({"id": 1, "tipo": "Pregunta Dificil", "de": "Ana"})
    down_reply = conn.recv()
    down_took = time.monotonic() - start

    real_profesor(ctx, port)  # the Profesor is back, on the same port
    with contextlib.suppress(OSError):
        student.sendall(lo.prefixed("Pregunta Dificil"))
    back_heard = _heard(student, patience)
    conn.send({"id": 2, "tipo": "Pregunta Dificil", "de": "Ana"})
    back_reply = conn.recv()

    rows = [
        Row(
            "down",
            N_("answer while the Profesor is down"),
            down_heard,
            T(
                "an error answer for id {id}, after {s}",
                id=down_reply.get("id"),
                s=Q(down_took, "s"),
            )
            if "error" in down_reply
            else T("an answer"),
        ),
        Row(
            "handler",
            N_("the student's handler"),
            T("dead: {error}", error=out.get("died", "?"))
            if not handler.is_alive()
            else T("alive"),
            T("alive") if "respuesta" in back_reply else T("dead"),
        ),
        Row(
            "back",
            N_("answer after the Profesor is back"),
            back_heard,
            T("an answer from the {por}", por=back_reply.get("por", "?"))
            if "respuesta" in back_reply
            else T("none"),
        ),
    ]
    notes = [T("the Tareo answered: {error}", error=str(down_reply.get("error")))]
    return Outcome(
        rows,
        defect_showed=T("an answer") not in (down_heard, back_heard) and "died" in out,
        fix_held=down_reply.get("id") == 1
        and "error" in down_reply
        and back_reply.get("por") == "Profesor"
        and back_reply.get("id") == 2,
        notes=notes,
    )
