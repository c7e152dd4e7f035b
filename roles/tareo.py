"""El Tareo: answers homework questions itself and asks the Profesor the hard ones.

What it decides, and nothing else (sockets, the loop and errors live in :mod:`roles.base`):

* "Tarea": one of the notebook's four answers, ``"por": "Tareo"``;
* "Pregunta Dificil": the Profesor's answer (``GET /respuesta``), through ``requests`` in a
  bounded pool of threads (never on the loop), so one slow Profesor call never holds up the
  other questions on the same connection (answers may leave out of order: the ids route
  them); ``"por": "Profesor"``. Calls are grouped: at most ``workers`` run at once, and
  each takes the hard questions that queued while the others ran (at most ``batch``) in
  one ``GET /respuesta?n=K``, one answer drawn per question; while a call runs, the next
  waits up to ``gather`` seconds for its batch to fill; a lone question is the notebook's
  ``GET /respuesta``, asked at once. One call per question was most of the class's CPU:
  about 1 ms of it between ``requests`` here and Flask in the Profesor, two thirds of a
  2,000-question class's 1.7 CPU-seconds (yappi and py-spy, issue 23). A Profesor that
  is down or slow gives an error answer with each question's id; past ``max_in_flight``
  hard questions at once, an error answer too, and one that waited in the queue longer
  than ``queue_timeout`` is answered with an error rather than asked late; a Tareo that
  stops answers every waiting one with an error. The calls and the ``max_in_flight``
  budget are shared fairly by source (the peer's address: one client however many
  connections it opens, or one Docencio link), see :mod:`roles.slots`: each call's batch
  takes the sources' questions in turn, so one source that floods cannot starve another's
  hard question;
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
from roles.slots import FairSlots

SATURADO = "el Tareo está saturado; pregunta luego"
# Hard questions one Profesor call may carry (GET /respuesta?n=K).
BATCH = 256
# Seconds a batch may wait for more questions while another call is under way: a class of
# 10 x 200 made 86-251 calls at 0, 24-74 at 0.03, and ran at 3,000-4,800 questions/s
# against 4,500-7,800 (paired rounds, issue 23). A question asked while no call runs goes
# at once.
GATHER = 0.03
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
        gather: float = GATHER,
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
        self.max_in_flight = max_in_flight
        self.queue_timeout = 2 * profesor_timeout if queue_timeout is None else queue_timeout
        # Hard questions owed, by token: the asker, the id, the source, when it arrived.
        self._waiting: dict[int, tuple[FrameConnection, Any, str, float]] = {}
        self._slots: FairSlots[int] = FairSlots(workers, max_in_flight)
        self.batch = batch
        self._call_soon = False  # a look at the queue is scheduled for this loop iteration
        self.gather = gather
        self._gather_timer: asyncio.TimerHandle | None = None
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
        if not self._call_soon:  # once per loop iteration: what it read shares one call
            self._call_soon = True
            assert self.loop is not None
            self.loop.call_soon(self._start_ready)

    def _start_ready(self, force: bool = False) -> None:
        """Ask the Profesor the questions whose turn has come: one call per free slot, each
        for a batch that takes the waiting sources' questions in turn (roles.slots).

        While a call is under way, a batch that is not full waits up to ``gather`` seconds
        for more questions (``force``: the wait is over): a call costs the same for one
        question or many. With no call under way a question is asked at once.
        """
        self._call_soon = False
        # A Profesor that ignores ``?n=`` (the notebook's) gets one question per call, so
        # the other slots share the queue instead of one slot asking a batch one by one
        # (and nothing waits to gather a batch that would not be asked as one).
        size = self.batch if self.profesor.batching else 1
        slots = self._slots
        if (
            not force
            and self.gather
            and size > 1
            and slots.calls
            and slots.held - slots.running < size
        ):
            if self._gather_timer is None and slots.held > slots.running:
                assert self.loop is not None
                self._gather_timer = self.loop.call_later(self.gather, self._gathered)
            return
        while batch := self._slots.take(size):
            asked = []
            for _source, token in batch:
                owed = self._waiting.get(token)
                if owed is None or owed[0].is_closing:  # the asker left: nothing to ask
                    self._waiting.pop(token, None)
                    if owed is not None:
                        owed[0].release()
                    continue
                asked.append((token, owed[3]))
            if not asked:
                self._slots.finished(batch)
                continue
            self.profesor_calls += 1
            self.spawn(self._ask_profesor(batch, asked), name=f"profesor-{asked[0][0]}")

    def _gathered(self) -> None:
        self._gather_timer = None
        self._start_ready(force=True)

    def _answer_now(self, token: int, reason: str) -> None:
        owed = self._waiting.pop(token, None)
        if owed is not None:
            self._send(owed[0], error(owed[1], reason))
            owed[0].release()

    async def _ask_profesor(
        self, batch: list[tuple[str, int]], asked: list[tuple[int, float]]
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            replies = await loop.run_in_executor(self._pool, self._respuestas, asked)
            self.log.debug("CONSULTA AL PROFESOR: 200 (%d preguntas)", len(asked))
        except (requests.RequestException, CodecError, RuntimeError, TimeoutError) as exc:
            self.log.warning("CONSULTA AL PROFESOR falló: %s", exc)
            failed = functools.partial(error, reason=f"el Profesor no está disponible: {exc}")
            replies = [failed] * len(asked)
        finally:
            self._slots.finished(batch)  # whatever happened, the slot is free again
        for (token, _), reply_of in zip(asked, replies, strict=True):
            owed = self._waiting.pop(token, None)
            if owed is None:  # already answered (the Tareo is stopping)
                continue
            conn, qid = owed[0], owed[1]
            self._send(conn, reply_of(qid))  # send first: releasing may let a half-closed peer go
            conn.release()
        self._start_ready()

    def _respuestas(self, asked: list[tuple[int, float]]) -> list[Reply]:
        """In the pool: how to answer each question of a batch, the Profesor asked once for
        them all; one that waited too long to be worth asking gets an error instead.

        A Profesor that answers one text for many (the notebook's, which ignores ``?n=``)
        is asked again for the rest, each time only for those still within
        ``queue_timeout``: a slot's later calls must not ask questions that expired
        while its earlier ones ran.
        """
        replies: list[Reply | None] = [None] * len(asked)
        todo = list(range(len(asked)))
        while todo:
            now = time.monotonic()
            fresh = []
            for i in todo:
                waited = now - asked[i][1]
                if self.queue_timeout and waited > self.queue_timeout:
                    replies[i] = functools.partial(
                        error,
                        reason=f"el Profesor no está disponible: la pregunta esperó {waited:.1f} s "
                        "en la cola del Tareo",
                    )
                else:
                    fresh.append(i)
            if not fresh:
                break
            textos = self.profesor.respuestas_once(len(fresh))
            for i, texto in zip(fresh, textos, strict=False):  # fewer from the notebook's
                replies[i] = functools.partial(answer, respuesta=texto, por=PROFESOR)
            todo = fresh[len(textos) :]
        return [r for r in replies if r is not None]

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
        if self._gather_timer is not None:
            self._gather_timer.cancel()
            self._gather_timer = None
        for conn, qid, _source, _queued in owed:  # every one still waiting gets its error
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
