"""El Tareo: answers homework questions itself and asks the Profesor the hard ones.

What it decides, and nothing else (sockets, the loop and errors live in :mod:`roles.base`):

* "Tarea": one of the notebook's four answers, ``"por": "Tareo"``;
* "Pregunta Dificil": ``GET /respuesta`` on the Profesor, through ``requests`` in a bounded
  pool of threads (never on the loop), so one slow Profesor call never holds up the other
  questions on the same connection (answers may leave out of order: the ids route them);
  ``"por": "Profesor"``; a Profesor that is down or slow gives an error answer with the
  question's id; past ``max_in_flight`` hard questions at once, an error answer too;
* anything else, or a malformed question: an error answer, never silence.
"""

from __future__ import annotations

import asyncio
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
        **kwargs: Any,
    ) -> None:
        super().__init__(host, port, **kwargs)
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.profesor = ProfesorClient(profesor, self.wire.codec, timeout=profesor_timeout)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tareo-profesor")
        self.max_in_flight = max_in_flight
        self._in_flight = 0
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
            if self._in_flight >= self.max_in_flight:
                self._send(conn, error(qid, "el Tareo está saturado; pregunta luego"))
                return
            self._in_flight += 1
            conn.hold()
            self.spawn(self._ask_profesor(conn, qid), name=f"profesor-{qid}")
        else:
            self._send(conn, error(qid, f"el Tareo no responde preguntas de tipo {tipo!r}"))

    def decode_failed(self, conn: FrameConnection, exc: DecodeError) -> None:
        self._send(conn, error(None, f"mensaje ilegible: {exc}"))

    async def _ask_profesor(self, conn: FrameConnection, qid: Any) -> None:
        loop = asyncio.get_running_loop()
        try:
            texto = await loop.run_in_executor(self._pool, self.profesor.respuesta)
            self.log.debug("CONSULTA AL PROFESOR: 200")
            reply = answer(qid, texto, PROFESOR)
        except (requests.RequestException, CodecError, RuntimeError) as exc:
            self.log.warning("CONSULTA AL PROFESOR falló: %s", exc)
            reply = error(qid, f"el Profesor no está disponible: {exc}")
        finally:
            self._in_flight -= 1
            conn.release()
        self._send(conn, reply)

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
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._close_pool)

    def _close_pool(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.profesor.close()

    def stats(self) -> dict[str, Any]:
        return {"answered": self.answered, "errors": self.errors}
