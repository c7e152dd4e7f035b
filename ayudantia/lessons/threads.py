"""threads: a thread per client and a thread per question.

The notebook's servers start a thread for every student and, in the Docencio, another for
every question forwarded to the Tareo; each waits there until its answer comes. The
lesson gives N students M questions each, answered after the same short wait (the
Tareo's or the Profesor's work), first by that design and then by an event-loop server
built on roles/base.py, and samples the process's threads and resident memory.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from ayudantia.lessons import _loopback as lo
from ayudantia.lessons._runner import N_, Context, Outcome, Q, Row
from protocol.aio import FrameConnection
from protocol.errors import AyudantiaError
from protocol.transport import Connection, Received
from roles.base import Server
from roles.clase import answer

NAME = "threads"
SECTION = "«Servidor Multicliente», «P2P»"
PATTERN = N_("a thread per client and a thread per question")
DEFECT = N_(
    "N students ask M questions each; the server starts a thread per student, and a "
    "thread per question that waits for its answer (as the Docencio waits for the Tareo)"
)
FIX = N_(
    "the same students and questions, with the same wait, on one event loop "
    "(a roles/base.py Server): a wait is a timer, not a thread"
)
WHY = N_(
    "a thread costs a stack, a kernel task and scheduling; a thread per question makes "
    "the count grow with students times questions, and the server falls over at a few "
    "thousand. An event loop waits for every socket and timer from one thread."
)
FIX_AT = "roles/base.py Server (one loop thread); protocol/aio.py FrameConnection"
HEADLINE = "threads"
WAIT = 0.2  # the answer's work: the Tareo's or the Profesor's
ANSWER = lo.prefixed("Actualizamos los tests")


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """Peak threads and resident memory of this process, sampled every 10 ms."""

    def __init__(self, ctx: Context) -> None:
        self.base_threads, self.base_rss = threading.active_count(), _rss_mib()
        self.threads, self.rss = 0, 0.0
        self._stop = threading.Event()
        self._worker = ctx.thread(self._run, name="threads-sampler")
        ctx.stack.callback(self._stop.set)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.threads = max(self.threads, threading.active_count() - self.base_threads - 1)
            self.rss = max(self.rss, _rss_mib() - self.base_rss)

    def stop(self) -> tuple[int, float]:
        self._stop.set()
        self._worker.join(2.0)
        return self.threads, self.rss


# -- the notebook's design -----------------------------------------------------------------


def _procesar_pregunta(sock: socket.socket, lock: threading.Lock) -> None:
    time.sleep(WAIT)  # waiting for the Tareo, in this question's own thread
    with contextlib.suppress(OSError), lock:
        sock.sendall(ANSWER)


def _listen_client(sock: socket.socket, until: float) -> None:
    lock = threading.Lock()
    with contextlib.suppress(OSError), sock:
        for _pregunta in lo.notebook_questions(sock, until):
            threading.Thread(target=_procesar_pregunta, args=(sock, lock), daemon=True).start()


def _accept_connections(server: socket.socket, until: float) -> None:
    server.settimeout(0.05)
    while time.monotonic() < until:
        try:
            sock, _ = server.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        threading.Thread(target=_listen_client, args=(sock, until), daemon=True).start()


def _defect(ctx: Context, students: int, questions: int) -> dict[str, Any]:
    server = lo.listener(ctx)
    until = ctx.deadline(ctx.budget * 0.45)
    sampler = Sampler(ctx)
    ctx.thread(_accept_connections, server, until, name="threads-accept")
    socks = [lo.connect(ctx, server.getsockname(), timeout=ctx.budget / 3) for _ in range(students)]
    for sock in socks:
        sock.sendall(lo.prefixed("Pregunta Dificil") * questions)
    answered = sum(lo.read_exactly(s, len(ANSWER) * questions) for s in socks) // len(ANSWER)
    threads, rss = sampler.stop()
    for sock in socks:
        sock.close()
    return {"threads": threads, "rss": rss, "answered": answered}


# -- the event loop -------------------------------------------------------------------------


class WaitingServer(Server):
    """Answers each question after WAIT seconds: a timer on the loop, not a thread."""

    role = "lesson"

    def message_received(self, conn: FrameConnection, received: Received) -> None:
        assert self.loop is not None
        self.loop.call_later(WAIT, self._answer, conn, received.obj.get("id"))

    def _answer(self, conn: FrameConnection, qid: Any) -> None:
        with contextlib.suppress(AyudantiaError):
            conn.send_obj(answer(qid, "Actualizamos los tests", "Tareo"))


def _settle(base: int, until: float) -> None:
    """Wait for the notebook's threads to end, so they are not in the next baseline."""
    while threading.active_count() > base and time.monotonic() < until:
        time.sleep(0.02)


def _fix(ctx: Context, students: int, questions: int) -> dict[str, Any]:
    sampler = Sampler(ctx)  # before the server starts: its loop thread counts
    server = WaitingServer()
    server.start()
    ctx.stack.callback(server.stop)
    conns = []
    for _ in range(students):
        conn = Connection.connect(*server.address, idle_timeout=ctx.budget / 3)
        ctx.stack.callback(conn.close)
        conns.append(conn)
    for s, conn in enumerate(conns):
        for n in range(questions):
            conn.send({"id": n, "tipo": "Pregunta Dificil", "de": f"e{s}"})
    answered = sum(1 for conn in conns for _ in range(questions) if "respuesta" in conn.recv())
    threads, rss = sampler.stop()
    return {"threads": threads, "rss": rss, "answered": answered}


def run(ctx: Context) -> Outcome:
    students, questions = ctx.pick((20, 10), (100, 20))
    total = students * questions
    base = threading.active_count()
    bad = _defect(ctx, students, questions)
    _settle(base, ctx.deadline(2 * WAIT + 1.0))
    good = _fix(ctx, students, questions)
    rows = [
        Row(
            "load",
            N_("students x questions"),
            f"{students} x {questions}",
            f"{students} x {questions}",
        ),
        Row("threads", N_("peak threads the server added"), bad["threads"], good["threads"]),
        Row("rss", N_("peak resident memory added"), Q(bad["rss"], "MiB"), Q(good["rss"], "MiB")),
        Row("answered", N_("answers received"), bad["answered"], good["answered"]),
    ]
    return Outcome(
        rows,
        defect_showed=bad["threads"] >= students + questions,
        fix_held=good["answered"] == total and good["threads"] <= 2,
    )
