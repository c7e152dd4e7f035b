"""El Tareo: answers homework questions itself and asks the Profesor the hard ones.

What it decides, and nothing else (sockets, the loop and errors live in :mod:`roles.base`):

* "Tarea": one of the notebook's four answers, ``"por": "Tareo"``;
* "Pregunta Dificil": ``GET /respuesta`` on the Profesor, through ``requests`` in a bounded
  pool of threads (never on the loop), so one slow Profesor call never holds up the other
  questions on the same connection (answers may leave out of order: the ids route them);
  ``"por": "Profesor"``; a Profesor that is down or slow gives an error answer with the
  question's id; past ``max_in_flight`` hard questions at once, an error answer too, and
  one that waited in the queue longer than ``queue_timeout`` is answered with an error
  rather than asked late; a Tareo that stops answers every waiting one with an error.
  The pool's threads and the ``max_in_flight`` budget are shared fairly by source (the
  peer's address: one client however many connections it opens, or one Docencio link),
  see :mod:`roles.slots`: one source that floods cannot starve another's hard question;
* anything else, or a malformed question: an error answer, never silence.

The Tareo's clients are links (the Docencio's one connection carries every student), so
its hard questions are bounded by ``max_in_flight`` with error answers, never by pausing
the link: a paused link would make every student's Tarea wait behind one student's hard
questions. Fairness between students is the Docencio's (see docs/servers.md).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from random import SystemRandom
from typing import Any

import requests

from protocol.aio import FrameConnection
from protocol.errors import AyudantiaError, CodecError, DecodeError
from protocol.transport import Received
from roles.base import Server
from roles.clase import (
    DIFICIL,
    PROFESOR,
    RESPUESTAS,
    TAREA,
    TAREO,
    BadQuestion,
    answer,
    check_question,
    error,
    send_answer,
)
from roles.profesor import ProfesorClient
from roles.slots import FairSlots

SATURADO = "el Tareo está saturado; pregunta luego"


class Tareo(Server):
    role = "tareo"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        profesor: str = "http://127.0.0.1:4444",
        profesor_timeout: float = 5.0,
        workers: int = 16,
        max_in_flight: int = 1000,
        queue_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_held", 1 << 30)  # never pause a link for hard questions
        super().__init__(host, port, **kwargs)
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.profesor = ProfesorClient(
            profesor,
            self.wire.codec,
            timeout=profesor_timeout,
            key=self.wire.key,
            tls=self.wire.tls,
        )
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tareo-profesor")
        self.max_in_flight = max_in_flight
        self.queue_timeout = 2 * profesor_timeout if queue_timeout is None else queue_timeout
        # Hard questions owed, by token: the asker, the id, the source, when it arrived.
        self._waiting: dict[int, tuple[FrameConnection, Any, str, float]] = {}
        self._slots: FairSlots[int] = FairSlots(workers, max_in_flight)
        self._tokens = itertools.count()
        self._rng = SystemRandom()
        self.answered = 0
        self.errors = 0

    def connection_made(self, conn: FrameConnection) -> None:
        super().connection_made(conn)
        self.log.info("Servidor conectado a un nuevo cliente...")

    def message_received(self, conn: FrameConnection, received: Received) -> None:
        try:
            pregunta = check_question(received.obj)
        except BadQuestion as exc:
            self._send(conn, error(exc.id, f"pregunta malformada: {exc}"))
            return
        qid, tipo = pregunta["id"], pregunta["tipo"]
        self.log.debug("Recibimos una pregunta: %s", tipo)
        if tipo == TAREA:
            self._send(conn, answer(qid, self._rng.choice(RESPUESTAS), TAREO))
        elif tipo == DIFICIL:
            self._ask_later(conn, qid)
        else:
            self._send(conn, error(qid, f"el Tareo no responde preguntas de tipo {tipo!r}"))

    def decode_failed(self, conn: FrameConnection, exc: DecodeError) -> None:
        self._send(conn, error(None, f"mensaje ilegible: {exc}"))

    def _ask_later(self, conn: FrameConnection, qid: Any) -> None:
        """Queue a hard question for a pool slot, in its source's turn (roles.slots)."""
        source = conn.peer.rpartition(":")[0]
        token = next(self._tokens)
        admission = self._slots.admit(source, token)
        if not admission.admitted:
            self._send(conn, error(qid, SATURADO))
            return
        if admission.bumped is not None:  # a heavier source's newest question makes room
            self._answer_now(admission.bumped, SATURADO)
        self._waiting[token] = (conn, qid, source, time.monotonic())
        conn.hold()
        self._start_ready()

    def _start_ready(self) -> None:
        """Ask the Profesor the questions whose turn has come, one pool slot each."""
        while started := self._slots.ready():
            for source, token in started:
                owed = self._waiting.get(token)
                if owed is None or owed[0].is_closing:  # the asker left: no slot spent on it
                    self._waiting.pop(token, None)
                    self._slots.done(source)
                    if owed is not None:
                        owed[0].release()
                    continue
                task = self._ask_profesor(token, source, owed[3])
                self.spawn(task, name=f"profesor-{token}")

    def _answer_now(self, token: int, reason: str) -> None:
        owed = self._waiting.pop(token, None)
        if owed is not None:
            self._send(owed[0], error(owed[1], reason))
            owed[0].release()

    async def _ask_profesor(self, token: int, source: str, queued: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            texto = await loop.run_in_executor(self._pool, self._respuesta, queued)
            self.log.debug("CONSULTA AL PROFESOR: 200")
            reply_of = functools.partial(answer, respuesta=texto, por=PROFESOR)
        except (requests.RequestException, CodecError, RuntimeError, TimeoutError) as exc:
            self.log.warning("CONSULTA AL PROFESOR falló: %s", exc)
            reply_of = functools.partial(error, reason=f"el Profesor no está disponible: {exc}")
        finally:
            self._slots.done(source)  # whatever happened, the slot is free again
        owed = self._waiting.pop(token, None)
        if owed is None:  # already answered (the Tareo is stopping)
            return
        conn, qid = owed[0], owed[1]
        self._send(conn, reply_of(qid))  # send first: releasing may let a half-closed peer go
        conn.release()
        self._start_ready()

    def _respuesta(self, queued: float) -> str:
        """In the pool: ask the Profesor, unless this question waited too long to be worth it."""
        waited = time.monotonic() - queued
        if self.queue_timeout and waited > self.queue_timeout:
            raise TimeoutError(f"la pregunta esperó {waited:.1f} s en la cola del Tareo")
        return self.profesor.respuesta()

    def _send(self, conn: FrameConnection, message: dict[str, Any]) -> None:
        try:
            sent = send_answer(conn, message)
        except AyudantiaError as exc:  # the asker left
            self.log.debug("no se pudo responder %r: %s", message.get("id"), exc)
            return
        if "error" in sent:
            self.errors += 1
        else:
            self.answered += 1

    async def on_stop(self) -> None:
        owed, self._waiting = list(self._waiting.values()), {}
        self._slots.clear()
        for conn, qid, _source, _queued in owed:  # every one still waiting gets its error
            self._send(conn, error(qid, "el Tareo se está retirando"))
            conn.release()
        # Calls still running end within the Profesor timeout; nobody waits for their answers.
        self._pool.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict[str, Any]:
        return {"answered": self.answered, "errors": self.errors}
