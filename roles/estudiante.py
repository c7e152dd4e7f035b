"""El Estudiante: asks the Docencio questions and checks that every answer is its own.

As in the notebook it asks without waiting (a listener thread takes the answers) and prints
"Alumno pregunta: <tipo>" and "Respuesta recibida: <texto>". What changed: every question
carries an id and the student's name, so the student can tell an answer to its own question
from one that reached it by mistake (``misrouted``) or twice (``duplicates``); it waits for
its answers with a deadline instead of forever; if the Docencio restarts it reconnects with
backoff and asks its unanswered questions again (same ids: nothing is counted twice). A
Docencio that refuses it (a permanent refusal, or a connection closed again and again
before any answer) is not retried forever: the student stops and ``gave_up`` says why.

``interval`` paces the questions like the notebook (which waits 1 to 6 s): between two
questions it waits ``interval * (1 + 5 * random())`` seconds; 0 asks as fast as it can.
``questions=0`` asks until stopped (``ayudantia run --questions 0``: until Ctrl+C).

``start_fd`` is the start barrier of ``ayudantia run``: the read end of a pipe the run
closes once every student is connected. The student connects, then blocks on it until
end-of-file (or :data:`BARRIER_TIMEOUT`, or a stop), so the whole class starts asking
together and the run's window measures students asking at once, not students starting.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import random
import select
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from protocol.errors import AyudantiaError, DecodeError, Refused
from protocol.transport import Connection
from roles.clase import TIPOS
from roles.client import Client, Unreachable
from roles.estado import ANSWERERS
from roles.muestra import Muestra
from roles.signals import SignalEvent

# A student never waits longer than this for the start barrier; then it starts anyway.
BARRIER_TIMEOUT = 60.0
# A question asked again after a reconnect may already be counted (its answer was committed,
# or even sent, by a Docencio that died before the student saw it): an error answer to it is
# not taken as final but asked again, up to this many times, INSIST_DELAY s apart, doubling.
INSIST_TRIES = 20
INSIST_DELAY = 0.1
INSIST_MAX_DELAY = 1.0
# What a student keeps of its answered questions is bounded, however long it asks
# (``questions=0``): a sample of its latencies, the first error texts, and counters.
MAX_LATENCIES = 100_000
MAX_ERROR_TEXTS = 100
# Unanswered questions a student lets pile up before it waits for answers: a Docencio that
# reads but never answers must not make an endless student (interval 0) grow forever.
MAX_IN_FLIGHT = 10_000


@dataclass
class _Asked:
    """A question still waiting for its answer (answered ones leave ``_asked``)."""

    tipo: str
    sent: float
    error: str | None = None  # the error answer of a re-ask (see _insisting, _give_up)
    reasked: bool = False  # asked again after a reconnect: it may be counted already
    tries: int = 0  # error answers to it not taken as final (see INSIST_TRIES)


@dataclass
class Informe:
    """What one student saw: the numbers ``ayudantia run`` adds up."""

    name: str
    questions: int = 0
    answered: int = 0
    errors: int = 0
    misrouted: int = 0
    duplicates: int = 0
    reconnects: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    started: float = 0.0
    finished: float = 0.0
    # time.time() stamps, comparable across the class's processes (see ayudantia run).
    connected_at: float = 0.0
    released_at: float = 0.0  # when the start barrier let this student go
    first_question_at: float = 0.0
    last_answer_at: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)
    by_por: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # all, or a uniform sample of
    latencies_seen: int = 0  # ... this many (more than len(latencies) when sampled)
    error_texts: list[str] = field(default_factory=list)  # the first MAX_ERROR_TEXTS
    # Unanswered at the end after waiting longer than the student's timeout: not merely
    # in flight when a Ctrl+C stopped an endless class, but never answered.
    overdue: int = 0

    @property
    def unanswered(self) -> int:
        return self.questions - self.answered - self.errors

    @property
    def ok(self) -> bool:
        return (
            self.answered == self.questions
            and not self.errors
            and not self.misrouted
            and not self.duplicates
        )

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["unanswered"] = self.unanswered
        out["ok"] = self.ok
        return out


class Estudiante(Client):
    role = "estudiante"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        name: str | None = None,
        questions: int = 10,
        interval: float = 1.0,
        seed: int | None = None,
        timeout: float | None = 30.0,
        out: TextIO | None = None,
        quiet: bool = False,
        start_fd: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("backoff", 0.2)  # a student never reconnects more than ~5 times/s
        kwargs.setdefault("max_backoff", 2.0)
        super().__init__(host, port, **kwargs)
        self.name = name or f"Estudiante-{os.getpid()}"
        self.questions = questions
        self.interval = interval
        self.timeout = math.inf if timeout is None else timeout  # None: no limit
        self.gave_up: str | None = None  # why the student stopped before it was done
        self.rng = random.Random(seed)
        self.out = out or sys.stdout
        self.quiet = quiet
        self.start_fd = start_fd
        self._token = os.urandom(3).hex()  # ids unique across runs, whatever the seed
        self._asked: dict[str, _Asked] = {}  # only the questions still unanswered
        self._prefix = f"{self.name}:{self._token}:"  # of this student's question ids
        self._last_n = 0  # the highest question number asked so far
        self._por: Counter[str] = Counter()
        self._latencies = Muestra(MAX_LATENCIES, seed)
        self._lock = threading.Lock()
        self._print_lock = threading.Lock()
        self._all_done = threading.Event()
        self._stop: threading.Event | SignalEvent = threading.Event()
        self._conn_lock = threading.Lock()
        self._live: Connection | None = None  # where new questions go (see _listen)
        self._insist: dict[str, float] = {}  # re-asked ids an error answered: when to ask again
        self._bytes = [0, 0]
        self.informe = Informe(self.name)

    def say(self, text: str) -> None:
        if not self.quiet:
            with self._print_lock:
                print(text, file=self.out, flush=True)

    # -- the run ----------------------------------------------------------------------

    def run(self, stop: threading.Event | SignalEvent | None = None) -> Informe:
        """Ask every question, wait for the answers (or the deadline), report."""
        if stop is not None:
            self._stop = stop
        informe = self.informe
        informe.started = time.time()
        self._live = self.connect()
        informe.connected_at = time.time()
        self.say(f"Cliente conectado exitosamente al servidor ({self.where}).")
        if self.start_fd is not None:
            wait_barrier(self.start_fd, self._stop)
        informe.released_at = time.time()
        listener = threading.Thread(target=self._listen, name=f"{self.name}-listen", daemon=True)
        listener.start()
        try:
            numbers = range(1, self.questions + 1) if self.questions else itertools.count(1)
            for n in numbers:
                while len(self._asked) >= MAX_IN_FLIGHT and not self._stop.is_set():
                    self._stop.wait(0.01)
                    self._ask_again()  # the questions to insist on are among those waited for
                if self._stop.is_set():
                    break
                tipo = self.rng.choice(TIPOS)
                qid = f"{self._prefix}{n}"
                question = {"id": qid, "tipo": tipo, "de": self.name}
                with self._conn_lock:  # asked and sent on one connection, never two
                    with self._lock:
                        self._asked[qid] = _Asked(tipo, time.perf_counter())
                        self._last_n = n
                        informe.questions += 1
                        informe.by_kind[tipo] = informe.by_kind.get(tipo, 0) + 1
                    conn = self._live
                self.say(f"Alumno pregunta: {tipo}")
                if n == 1:
                    informe.first_question_at = time.time()
                self._send(conn, question)
                self._ask_again()
                if self.interval > 0 and (n < self.questions or not self.questions):
                    self._stop.wait(self.interval * (1 + 5 * self.rng.random()))
            deadline = time.monotonic() + self.timeout
            while not self._all_done.is_set() and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                with self._lock:
                    if self._pending_count() == 0:
                        break
                self._all_done.wait(min(left, 0.1))
                self._ask_again()
        finally:
            self.close()
            listener.join(5.0)
            self._give_up()
            informe.finished = time.time()
            self._collect()
        return informe

    def _pending_count(self) -> int:
        return len(self._asked)

    def _was_asked(self, qid: str) -> bool:
        """Whether ``qid`` names one of this student's questions (answered or not)."""
        number = qid.removeprefix(self._prefix)
        if number == qid or not number.isdigit() or len(number) > 12:
            return False
        return 1 <= int(number) <= self._last_n

    def _send(self, conn: Connection | None, question: dict[str, Any]) -> None:
        if conn is None:
            return
        # On failure the listener sees the broken link, reconnects and asks again.
        with contextlib.suppress(AyudantiaError, OSError):
            conn.send(question)

    def _listen(self) -> None:
        while not self.closing:
            conn = self.conn
            assert conn is not None
            try:
                while True:
                    try:
                        reply = conn.recv()
                    except DecodeError as exc:
                        self.say(f"Respuesta ilegible: {exc}")
                        continue
                    self._take(reply)
            except AyudantiaError as lost:
                if self.closing:
                    return
                exc = lost
                self.say(f"Conexión perdida ({exc}); reconectando...")
            self._bytes[0] += conn.bytes_sent
            self._bytes[1] += conn.bytes_received
            try:
                self.session_ended(conn, exc)
                self.reconnect()
            except (Refused, Unreachable) as exc:
                self.say(f"Conexión terminada: {exc}")
                self.gave_up = str(exc)
                self._stop.set()
                return
            self.informe.reconnects += 1
            # What went unanswered is asked again (same ids: counted once), each question
            # exactly once: one asked from now on goes on the new connection, by the asker.
            with self._conn_lock:
                with self._lock:
                    again = []
                    for qid, a in self._asked.items():  # every one still unanswered
                        a.reasked = True
                        again.append({"id": qid, "tipo": a.tipo, "de": self.name})
                    self._insist.clear()  # all in ``again``: asked once on the new connection
                live = self._live = self.conn
            for question in again:
                self._send(live, question)

    def _take(self, reply: Any) -> None:
        now = time.perf_counter()
        informe = self.informe
        qid = reply.get("id") if isinstance(reply, dict) else None
        with self._lock:
            asked = self._asked.get(qid) if isinstance(qid, str) else None
            if asked is None:
                if isinstance(qid, str) and self._was_asked(qid):  # ours, answered already
                    informe.duplicates += 1
                    text = f"Respuesta repetida recibida: {reply!r}"
                else:
                    informe.misrouted += 1
                    text = f"Respuesta ajena recibida: {reply!r}"
            elif self._insisting(qid, asked, reply):
                text = f"Se vuelve a preguntar tras un error: {reply.get('error')}"
            else:
                del self._asked[qid]
                self._insist.pop(qid, None)  # answered while waiting to be asked again
                if isinstance(reply.get("respuesta"), str):
                    por = reply.get("por")
                    self._por[por if por in ANSWERERS else "otro"] += 1  # a few names, ever
                    self._latencies.add(now - asked.sent)
                    informe.answered += 1
                    text = f"Respuesta recibida: {reply['respuesta']}"
                else:
                    error_text = str(reply.get("error"))
                    if len(informe.error_texts) < MAX_ERROR_TEXTS:
                        informe.error_texts.append(error_text)
                    informe.errors += 1
                    text = f"Error recibido: {error_text}"
                informe.last_answer_at = time.time()
                if self.questions and informe.answered + informe.errors >= self.questions:
                    self._all_done.set()
        self.say(text)

    def _insisting(self, qid: str, asked: _Asked, reply: dict) -> bool:
        """An error answer to a re-asked question, to be asked again (with the lock held).

        Why: a Docencio killed after committing (or sending) that question's answer posts
        its key on the next run; if the student, who never saw that answer, took the error
        answer to its re-ask as final, the Profesor would count an answer nobody received.
        Errors from a restarting class are passing (a Tareo not up yet), so ask again.
        """
        if (
            isinstance(reply.get("respuesta"), str)
            or not asked.reasked
            or asked.tries >= INSIST_TRIES
        ):
            return False
        asked.tries += 1
        asked.error = str(reply.get("error"))  # what it is if no answer comes (see _give_up)
        delay = min(INSIST_DELAY * 2 ** (asked.tries - 1), INSIST_MAX_DELAY)
        self._insist[qid] = time.monotonic() + delay
        return True

    def _ask_again(self) -> None:
        """Send the re-asked questions whose error-answer delay is over, on the live
        connection (a reconnect in between asks them itself and clears the list)."""
        if not self._insist:
            return
        now = time.monotonic()
        with self._conn_lock:
            with self._lock:
                due = [qid for qid, at in self._insist.items() if at <= now and qid in self._asked]
                for qid in due:
                    del self._insist[qid]
                questions = [
                    {"id": qid, "tipo": self._asked[qid].tipo, "de": self.name} for qid in due
                ]
            conn = self._live
        for question in questions:
            self._send(conn, question)

    def _give_up(self) -> None:
        """Re-asked questions still waiting after an error answer: that error is final (the
        class is over), so they are errors, not silence."""
        with self._lock:
            self._insist.clear()
            for qid, a in list(self._asked.items()):
                if a.error is not None:
                    del self._asked[qid]
                    self.informe.errors += 1
                    if len(self.informe.error_texts) < MAX_ERROR_TEXTS:
                        self.informe.error_texts.append(a.error)

    def _collect(self) -> None:
        informe = self.informe
        conn = self.conn
        if conn is not None:
            self._bytes[0] += conn.bytes_sent
            self._bytes[1] += conn.bytes_received
        informe.bytes_sent, informe.bytes_received = self._bytes
        now = time.perf_counter()
        with self._lock:
            informe.overdue = sum(now - a.sent > self.timeout for a in self._asked.values())
            informe.by_por = dict(self._por)
            informe.latencies = list(self._latencies.values)
            informe.latencies_seen = self._latencies.seen


def wait_barrier(
    fd: int, stop: threading.Event | SignalEvent, timeout: float = BARRIER_TIMEOUT
) -> bool:
    """Block until ``fd`` reads end-of-file (the barrier opened), ``stop`` is set or ``timeout``
    passes; True if the barrier opened. Closes ``fd`` either way.

    End-of-file also comes when the run that holds the write end dies, so a student whose
    run is gone starts (and fails to find its Docencio) instead of hanging.
    """
    deadline = time.monotonic() + timeout
    try:
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([fd], [], [], min(left, 0.1))
            if ready and not os.read(fd, 1):
                return True
        return False
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
