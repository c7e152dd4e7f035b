"""El Tareo: answers homework questions itself and asks the Profesor the hard ones.

What it decides, and nothing else (sockets, the loop and errors live in :mod:`roles.base`):

* "Tarea": one of the notebook's four answers, ``"por": "Tareo"``;
* "Pregunta Dificil": the Profesor's answer (``GET /respuesta``), through ``requests`` in a
  bounded pool of threads (never on the loop), so one slow Profesor call never holds up the
  other questions on the same connection (answers may leave out of order: the ids route
  them); ``"por": "Profesor"``. Calls are grouped: at most ``workers`` run at once, and each
  takes every hard question that queued while the others ran (at most ``batch``) in one
  ``GET /respuesta?n=K``, one answer drawn per question; a lone question is the notebook's
  ``GET /respuesta``. One call per question was most of the class's CPU: about 1 ms of it
  between ``requests`` here and Flask in the Profesor, two thirds of a 2,000-question
  class's 1.7 CPU-seconds with the Profesor's (yappi and py-spy, issue 23). A Profesor
  that is down or slow gives an error answer with each question's id; past
  ``max_in_flight`` hard questions at once, an error answer too, and one that waited in the
  queue longer than ``queue_timeout`` is answered with an error rather than asked late; a
  Tareo that stops answers every waiting one with an error;
* anything else, or a malformed question: an error answer, never silence.

The Tareo's clients are links (the Docencio's one connection carries every student), so
its hard questions are bounded by ``max_in_flight`` with error answers, never by pausing
the link: a paused link would make every student's Tarea wait behind one student's hard
questions. Fairness between students is the Docencio's (see docs/servers.md).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import time
from collections.abc import Callable
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
from roles.profesor import MAX_RESPUESTAS, ProfesorClient

# Hard questions one Profesor call may carry (GET /respuesta?n=K).
BATCH = 256
# How to answer one question, given its id: an answer or an error answer.
Reply = Callable[[Any], dict[str, Any]]


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
        batch: int = BATCH,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_held", 1 << 30)  # never pause a link for hard questions
        super().__init__(host, port, **kwargs)
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if not 1 <= batch <= MAX_RESPUESTAS:
            raise ValueError(f"batch must be from 1 to {MAX_RESPUESTAS}")
        self.profesor = ProfesorClient(
            profesor,
            self.wire.codec,
            timeout=profesor_timeout,
            key=self.wire.key,
            tls=self.wire.tls,
        )
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tareo-profesor")
        self.workers = workers
        self.batch = batch
        self.max_in_flight = max_in_flight
        self.queue_timeout = 2 * profesor_timeout if queue_timeout is None else queue_timeout
        self._waiting: dict[int, tuple[FrameConnection, Any]] = {}  # hard questions owed
        # Hard questions not yet given to a call: (token, when it queued), oldest first.
        self._queue: collections.deque[tuple[int, float]] = collections.deque()
        self._calls = 0  # Profesor calls under way (at most ``workers``)
        self._call_soon = False  # a look at the queue is scheduled for this loop iteration
        self._tokens = itertools.count()
        self.profesor_calls = 0
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
            if len(self._waiting) >= self.max_in_flight:
                self._send(conn, error(qid, "el Tareo está saturado; pregunta luego"))
                return
            token = next(self._tokens)
            self._waiting[token] = (conn, qid)
            conn.hold()
            self._queue.append((token, time.monotonic()))
            if not self._call_soon:  # once per loop iteration: what it read goes in one call
                self._call_soon = True
                assert self.loop is not None
                self.loop.call_soon(self._call_profesor)
        else:
            self._send(conn, error(qid, f"el Tareo no responde preguntas de tipo {tipo!r}"))

    def decode_failed(self, conn: FrameConnection, exc: DecodeError) -> None:
        self._send(conn, error(None, f"mensaje ilegible: {exc}"))

    def _call_profesor(self) -> None:
        """Start Profesor calls for the queued hard questions, while fewer than ``workers``
        run: each takes the oldest ``batch`` of them."""
        self._call_soon = False
        while self._queue and self._calls < self.workers:
            n = min(self.batch, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
            self._calls += 1
            self.profesor_calls += 1
            self.spawn(self._ask_profesor(batch), name=f"profesor-{batch[0][0]}")

    async def _ask_profesor(self, batch: list[tuple[int, float]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            try:
                replies = await loop.run_in_executor(self._pool, self._respuestas, batch)
                self.log.debug("CONSULTA AL PROFESOR: 200 (%d preguntas)", len(batch))
            except (requests.RequestException, CodecError, RuntimeError, TimeoutError) as exc:
                self.log.warning("CONSULTA AL PROFESOR falló: %s", exc)
                failed = functools.partial(error, reason=f"el Profesor no está disponible: {exc}")
                replies = [failed] * len(batch)
        finally:
            self._calls -= 1
            if self._queue and not self._call_soon:
                self._call_profesor()
        for (token, _), reply_of in zip(batch, replies, strict=True):
            owed = self._waiting.pop(token, None)
            if owed is None:  # already answered (the Tareo is stopping)
                continue
            conn, qid = owed
            self._send(conn, reply_of(qid))  # send first: releasing may let a half-closed peer go
            conn.release()

    def _respuestas(self, batch: list[tuple[int, float]]) -> list[Reply]:
        """In the pool: how to answer each question of ``batch``, the Profesor asked once for
        them all; a question that waited too long to be worth asking gets an error instead."""
        now = time.monotonic()
        waited = [now - queued for _, queued in batch]
        late = [bool(self.queue_timeout) and w > self.queue_timeout for w in waited]
        fresh = late.count(False)
        textos = iter(self.profesor.respuestas(fresh) if fresh else ())
        return [
            functools.partial(
                error,
                reason=f"el Profesor no está disponible: la pregunta esperó {w:.1f} s "
                "en la cola del Tareo",
            )
            if stale
            else functools.partial(answer, respuesta=next(textos), por=PROFESOR)
            for w, stale in zip(waited, late, strict=True)
        ]

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
        self._queue.clear()
        for conn, qid in owed:  # every hard question still waiting gets its error answer
            self._send(conn, error(qid, "el Tareo se está retirando"))
            conn.release()
        # Calls still running end within the Profesor timeout; nobody waits for their answers.
        self._pool.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict[str, Any]:
        return {
            "answered": self.answered,
            "errors": self.errors,
            "profesor_calls": self.profesor_calls,
        }
