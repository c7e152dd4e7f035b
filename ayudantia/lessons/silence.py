"""silence: a question of a kind nobody handles gets no answer at all.

The notebook's Tareo answers "Tarea" and "Pregunta Dificil" and silently drops anything
else: a "Contenido" question sent to it (or any new kind) leaves the student waiting
forever, with nothing in either program to say why. The project answers every question,
with an error answer carrying the question's id when it cannot help.
"""

from __future__ import annotations

import random
import socket
import time

from ayudantia.lessons import _loopback as lo
from ayudantia.lessons._runner import N_, Context, Outcome, Q, Row, T
from protocol.transport import Connection
from roles.clase import RESPUESTAS, TAREA
from roles.tareo import Tareo

NAME = "silence"
SECTION = "«Servidor Multicliente»"
PATTERN = N_('unknown kinds (and "Contenido" at the Tareo) get no answer')
DEFECT = N_(
    'a student asks the notebook\'s Tareo a "Contenido" question and one of a kind '
    "nobody knows, and waits for the answers (cut by the lesson's deadline)"
)
FIX = N_("the same two questions to the project's Tareo (roles/tareo.py)")
WHY = N_(
    "the handler's if/elif has no else: a question it does not recognize is read and "
    "dropped, and the student's recv blocks with nothing on the way. A protocol has to "
    "answer every request, if only to say it cannot."
)
FIX_AT = "roles/tareo.py Tareo.message_received; roles/clase.py error, check_question"
HEADLINE = "answers"
KINDS = ("Contenido", "Chisme")


def _notebook_reply(pregunta: str) -> str | None:
    """The notebook's if/elif: Tarea and Pregunta Dificil, and no else."""
    if pregunta == TAREA:
        return random.choice(RESPUESTAS)
    elif pregunta == "Pregunta Dificil":
        return random.choice(RESPUESTAS)  # (the notebook asks the Profesor here)
    return None


def _wait_answers(sock: socket.socket, until: float) -> int:
    answers = 0
    while time.monotonic() < until:
        sock.settimeout(max(0.01, until - time.monotonic()))
        try:
            head = sock.recv(4)
        except TimeoutError:
            break
        if not head:
            break
        sock.recv(int.from_bytes(head, byteorder="big"))
        answers += 1
    return answers


def run(ctx: Context) -> Outcome:
    patience = ctx.pick(0.8, 3.0)
    server = lo.listener(ctx)
    ctx.thread(
        lo.serve_notebook,
        server,
        ctx.deadline(patience + 0.5),
        _notebook_reply,
        name="silence-tareo",
    )
    student = lo.connect(ctx, server.getsockname())
    start = time.monotonic()
    for kind in KINDS:
        student.sendall(lo.prefixed(kind))
    silent = _wait_answers(student, start + patience)
    waited = time.monotonic() - start

    tareo = Tareo(profesor="http://127.0.0.1:9")
    tareo.start()
    ctx.stack.callback(tareo.stop)
    replies = []
    with Connection.connect(*tareo.address, idle_timeout=patience) as conn:
        start = time.monotonic()
        for number, kind in enumerate(KINDS, start=7):
            conn.send({"id": number, "tipo": kind, "de": "Ana"})
        replies = [conn.recv() for _ in KINDS]
        answered_in = time.monotonic() - start
    ids = [r.get("id") for r in replies if "error" in r]
    rows = [
        Row(
            "answers",
            N_("answers received"),
            T("{n} of {total}", n=silent, total=len(KINDS)),
            T("{n} of {total}", n=len(ids), total=len(KINDS)),
        ),
        Row(
            "waited",
            N_("the student waited"),
            T("{s}, and gave up", s=Q(waited, "s")),
            Q(answered_in, "s"),
        ),
        Row("ids", N_("question ids in the error answers"), None, ", ".join(str(i) for i in ids)),
    ]
    notes = (
        [T("the Tareo answered: {error}", error=str(replies[0].get("error")))] if replies else []
    )
    return Outcome(rows, defect_showed=silent == 0, fix_held=ids == [7, 8], notes=notes)
