"""El Tareo: answers homework questions itself and asks the Profesor the hard ones.

What it decides, and nothing else (sockets, threads and errors live in :mod:`roles.base`):

* "Tarea": one of the notebook's four answers, ``"por": "Tareo"``;
* "Pregunta Dificil": ``GET /respuesta`` on the Profesor, in a bounded worker pool so one
  slow Profesor call never holds up the other questions on the same connection (so answers
  may leave out of order: the ids route them); ``"por": "Profesor"``; a Profesor that is
  down or slow (timeout) gives an error answer with the question's id;
* anything else, or a malformed question: an error answer, never silence.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from random import SystemRandom
from typing import Any

import requests

from protocol.errors import AyudantiaError, CodecError, DecodeError
from protocol.transport import Connection
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
        self.profesor = ProfesorClient(profesor, self.wire.codec, timeout=profesor_timeout)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tareo-profesor")
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._rng = SystemRandom()
        self.answered = 0
        self.errors = 0

    def handle(self, conn: Connection) -> None:
        self.log.info("Servidor conectado a un nuevo cliente...")
        while True:
            try:
                pregunta = check_question(conn.recv())
            except DecodeError as exc:
                self._send(conn, error(None, f"mensaje ilegible: {exc}"))
                continue
            except BadQuestion as exc:
                self._send(conn, error(exc.id, f"pregunta malformada: {exc}"))
                continue
            qid, tipo = pregunta["id"], pregunta["tipo"]
            self.log.debug("Recibimos una pregunta: %s", tipo)
            if tipo == TAREA:
                self._send(conn, answer(qid, self._rng.choice(RESPUESTAS), TAREO))
            elif tipo == DIFICIL:
                if not self._slots.acquire(blocking=False):
                    self._send(conn, error(qid, "el Tareo está saturado; pregunta luego"))
                    continue
                try:
                    self._pool.submit(self._ask_profesor, conn, qid)
                except RuntimeError:  # the pool is shutting down
                    self._slots.release()
                    self._send(conn, error(qid, "el Tareo se está retirando"))
            else:
                self._send(conn, error(qid, f"el Tareo no responde preguntas de tipo {tipo!r}"))

    def _ask_profesor(self, conn: Connection, qid: Any) -> None:
        try:
            texto = self.profesor.respuesta()
            self.log.debug("CONSULTA AL PROFESOR: 200")
            self._send(conn, answer(qid, texto, PROFESOR))
        except (requests.RequestException, CodecError) as exc:
            self.log.warning("CONSULTA AL PROFESOR falló: %s", exc)
            self._send(conn, error(qid, f"el Profesor no está disponible: {exc}"))
        finally:
            self._slots.release()

    def _send(self, conn: Connection, message: dict[str, Any]) -> None:
        try:
            conn.send(message)
        except AyudantiaError as exc:  # the asker left; its handler thread cleans up
            self.log.debug("no se pudo responder %r: %s", message.get("id"), exc)
            return
        if "error" in message:
            self.errors += 1
        else:
            self.answered += 1

    def on_stop(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.profesor.close()
