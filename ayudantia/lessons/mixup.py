"""mixup: one socket to the Tareo shared by every student's thread, read with recv(4096).

The notebook's Docencio starts a thread per question; each sends on the one client socket
to the Tareo and calls ``recv(4096)`` on it. Whichever thread wakes first takes whatever
answer has arrived (or two answers glued together), so students get each other's answers
and some get none. The project's Docencio keeps one link to the Tareo too, but every
question carries an id and the link routes each answer to the one who asked.
"""

from __future__ import annotations

import re
import socket
import threading
from typing import Any

from ayudantia.lessons import _loopback as lo
from ayudantia.lessons._profesor import real_profesor
from ayudantia.lessons._runner import N_, Context, Outcome, Q, Row
from protocol.transport import Connection
from roles.docencio import Docencio
from roles.tareo import Tareo

NAME = "mixup"
SECTION = "«P2P»"
PATTERN = N_("one socket to the Tareo shared by every student's thread, read with recv(4096)")
DEFECT = N_(
    "several students ask at once; the notebook's Docencio starts a thread per question, "
    "and each sends on the one socket to the Tareo and reads the answer with recv(4096)"
)
FIX = N_(
    "the same students through the project's Docencio and Tareo (roles/docencio.py, "
    "roles/tareo.py): one link, each answer routed by the question's id"
)
WHY = N_(
    "a socket is one byte stream: nothing in it says which thread an answer is for, and "
    "the kernel hands the bytes to whichever recv runs first. Answers need an id, and one "
    "reader that routes each answer to the caller waiting for that id."
)
FIX_AT = (
    "roles/link.py Link.request, Link._on_reply, Link._resolve; roles/docencio.py "
    "Docencio._forwarded"
)
HEADLINE = "misrouted"
_QID = re.compile(rb"\[(\w+-\d+)\]")


def _tareo_reply(pregunta: str) -> str:
    """The Tareo's answer, naming its question so the lesson can tell where it went."""
    return f"Actualizamos los tests [{pregunta.rsplit(' ', 1)[-1]}]"


def _student_of(qid: bytes | str) -> str:
    """The student who asked: ``e3`` for question ``e3-5``."""
    text = qid.decode() if isinstance(qid, bytes) else qid
    return text.split("-", 1)[0]


def _procesar_pregunta(
    tareo: socket.socket, qid: str, start: threading.Barrier, out: dict[str, Any]
) -> None:
    """The notebook's consultar_a_tareo, in its own thread per question."""
    try:
        start.wait()  # the students ask at once: every question's thread is running
        tareo.sendall(lo.prefixed(f"Tarea {qid}"))
        response = tareo.recv(4096)
    except (OSError, threading.BrokenBarrierError):
        response = b""
    got = _QID.findall(response)
    mine = _student_of(qid)  # the notebook forwards the whole read to this thread's student
    with out["lock"]:
        out["misrouted"] += sum(_student_of(q) != mine for q in got)
        out["right"] += sum(_student_of(q) == mine for q in got)
        out["glued"] += len(got) > 1


def _defect(ctx: Context, students: int, questions: int) -> dict[str, Any]:
    server = lo.listener(ctx)
    ctx.thread(
        lo.serve_notebook, server, ctx.deadline(ctx.budget / 2), _tareo_reply, name="mixup-tareo"
    )
    tareo = lo.connect(ctx, server.getsockname(), timeout=ctx.pick(0.5, 2.0))
    out: dict[str, Any] = {"lock": threading.Lock(), "right": 0, "misrouted": 0, "glued": 0}
    start = threading.Barrier(students * questions, timeout=ctx.budget / 3)
    threads = [
        threading.Thread(
            target=_procesar_pregunta, args=(tareo, f"e{s}-{n}", start, out), daemon=True
        )
        for s in range(students)
        for n in range(questions)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(ctx.budget / 2)
    tareo.close()
    out["none"] = students * questions - out["right"]  # their asker never read the answer
    return out


def _student(address: tuple[str, int], name: str, questions: int, timeout: float) -> list[Any]:
    with Connection.connect(*address, idle_timeout=timeout) as conn:
        for n in range(questions):
            conn.send({"id": f"{name}-{n}", "tipo": "Tarea", "de": name})
        return [conn.recv() for _ in range(questions)]


def _fix(ctx: Context, students: int, questions: int) -> dict[str, Any]:
    profesor = real_profesor(ctx)
    tareo = Tareo(profesor=profesor.url)
    tareo.start()
    ctx.stack.callback(tareo.stop)
    docencio = Docencio(tareo=tareo.address, profesor=profesor.url, timeout=ctx.budget)
    docencio.start()
    ctx.stack.callback(docencio.stop)
    docencio.wait_upstream(ctx.budget / 2)
    answers: dict[str, list[Any]] = {}

    def ask(name: str) -> None:
        answers[name] = _student(docencio.address, name, questions, ctx.budget / 2)

    threads = [threading.Thread(target=ask, args=(f"e{s}",), daemon=True) for s in range(students)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(ctx.budget / 2)
    misrouted = sum(
        not str(a.get("id", "")).startswith(name + "-")
        for name, got in answers.items()
        for a in got
    )
    right = sum(
        "respuesta" in a and str(a["id"]).startswith(name + "-")
        for name, got in answers.items()
        for a in got
    )
    return {
        "misrouted": misrouted,
        "right": right,
        "none": students * questions - right,
    }


def run(ctx: Context) -> Outcome:
    students, questions = ctx.pick((4, 6), (8, 20))
    total = students * questions
    bad = _defect(ctx, students, questions)
    good = _fix(ctx, students, questions)
    rows = [
        Row("asked", N_("questions asked at once"), total, total),
        Row(
            "misrouted",
            N_("answers delivered to the wrong student"),
            bad["misrouted"],
            good["misrouted"],
        ),
        Row(
            "none",
            N_("questions whose student never got the answer"),
            bad["none"],
            good["none"],
        ),
        Row("glued", N_("reads holding two answers or more"), bad["glued"], None),
        Row(
            "right",
            N_("answers to the right student"),
            Q(bad["right"]),
            Q(good["right"]),
        ),
    ]
    return Outcome(
        rows,
        defect_showed=bad["misrouted"] > 0,
        fix_held=good["misrouted"] == 0 and good["right"] == total,
    )
