"""El Docencio: the students' server and the Tareo's client (a :class:`~roles.base.Peer`).

What it decides:

* "Contenido": it answers itself ("Docencio: respondiendo pregunta de contenido");
* "Tarea" and "Pregunta Dificil": forwarded over its one persistent link to the Tareo; the
  link routes each answer back by id to the student who asked, exactly once, in whatever
  order answers come back; a Tareo that is down or late gives an error answer (same id);
* any other kind, or a malformed question (a name or id too long, or not valid text): an
  error answer, never silence;
* after delivering each answer (its own or the Tareo's or the Profesor's) it queues the
  question's count key for the Profesor (:class:`~roles.profesor.Conteo`), which posts in
  batches and retries until the Profesor has it. Error answers are not counted.

Fairness: every student's forwarded questions are held against that student's connection;
while a student has too many unanswered, or does not read its answers, the Docencio stops
reading that student alone (see docs/servers.md).

Differences from the notebook's sketch, each a bug measured there: answers were matched to
students by luck (21 of 39 misrouted with two students), a departed student made the
server spin and spawn threads forever, the 4-byte header leaked into the text, and a
Profesor outage killed the handler thread.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Any

from protocol.aio import FrameConnection
from protocol.errors import AyudantiaError, DecodeError
from protocol.transport import Received
from roles.base import Peer
from roles.clase import (
    CONTENIDO,
    DIFICIL,
    DOCENCIO,
    RESPUESTA_CONTENIDO,
    TAREA,
    BadQuestion,
    answer,
    check_question,
    count_key,
    error,
    send_answer,
)
from roles.profesor import Conteo, ProfesorClient

# A question is a few dozen bytes; a forwarded one waits whole until its answer comes.
MAX_QUESTION_BYTES = 16 * 1024
# Questions one student may have waiting for the Tareo before the Docencio stops reading it.
MAX_FORWARDED = 64


class Docencio(Peer):
    role = "docencio"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tareo: tuple[str, int] = ("127.0.0.1", 4445),
        profesor: str = "http://127.0.0.1:4444",
        timeout: float = 10.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_held", MAX_FORWARDED)
        super().__init__(host, port, upstream=tareo, upstream_timeout=timeout, **kwargs)
        # A question bigger than the cap is refused at its header: nothing of it is buffered.
        self.limits = dataclasses.replace(
            self.limits, max_message=min(self.limits.max_message, MAX_QUESTION_BYTES)
        )
        self.conteo = Conteo(
            ProfesorClient(
                profesor,
                self.wire.codec,
                timeout=min(timeout, 5.0),
                key=self.wire.key,
                tls=self.wire.tls,
            )
        )
        # Who a nameless student is: this Docencio's run and the connection's number.
        self._run_token = os.urandom(4).hex()
        self._serial = itertools.count(1)
        self._identity: dict[FrameConnection, str] = {}
        self.delivered = 0
        self.errors = 0
        self.undeliverable = 0

    def connection_made(self, conn: FrameConnection) -> None:
        super().connection_made(conn)
        if conn in self.clients:
            self._identity[conn] = f"{self._run_token}:{next(self._serial)}"
            self.log.info("Docencio: nuevo estudiante conectado")

    def connection_lost(self, conn: FrameConnection, error: BaseException | None) -> None:
        super().connection_lost(conn, error)
        self._identity.pop(conn, None)
        self.undeliverable += conn.undelivered  # queued for it, never left: not counted

    def message_received(self, conn: FrameConnection, received: Received) -> None:
        try:
            pregunta = check_question(received.obj)
        except BadQuestion as exc:
            self.deliver(conn, None, error(exc.id, f"pregunta malformada: {exc}"))
            return
        if received.wire_bytes > MAX_QUESTION_BYTES:  # it would wait whole until answered
            self.deliver(
                conn,
                None,
                error(
                    pregunta["id"],
                    f"la pregunta ocupa {received.wire_bytes} bytes; "
                    f"el máximo es {MAX_QUESTION_BYTES}",
                ),
            )
            return
        tipo = pregunta["tipo"]
        self.log.debug("Recibimos una pregunta: %s", tipo)
        if tipo == CONTENIDO:
            self.deliver(conn, pregunta, answer(pregunta["id"], RESPUESTA_CONTENIDO, DOCENCIO))
        elif tipo in (TAREA, DIFICIL):
            conn.hold()  # this student's pending work: reading it pauses past the limit
            who = {k: pregunta[k] for k in ("id", "de") if k in pregunta}  # all the count needs
            self.upstream.request(
                pregunta, lambda reply, conn=conn, who=who: self._forwarded(conn, who, reply)
            )
        else:
            self.deliver(
                conn, pregunta, error(pregunta["id"], f"nadie responde preguntas de tipo {tipo!r}")
            )

    def decode_failed(self, conn: FrameConnection, exc: DecodeError) -> None:
        self.deliver(conn, None, error(None, f"mensaje ilegible: {exc}"))

    def _forwarded(self, conn: FrameConnection, pregunta: dict[str, Any], reply: dict) -> None:
        self.deliver(conn, pregunta, reply)  # first: releasing may let a half-closed peer go
        conn.release()

    def deliver(self, conn: FrameConnection, pregunta: dict[str, Any] | None, reply: dict) -> None:
        """Send ``reply`` to the student on ``conn``; count it once it is delivered.

        Delivered means its last byte left this process: an answer still queued for a
        student who is then cut off (it stopped reading) or who left is never counted.
        """
        if "respuesta" not in reply and "error" not in reply:
            reply = error(reply.get("id"), f"respuesta sin 'respuesta' ni 'error': {reply!r}")
        counted = "error" not in reply and pregunta is not None
        key = count_key(pregunta, self._identity.get(conn, "")) if counted else None  # type: ignore[arg-type]
        try:
            sent = send_answer(
                conn, reply, on_delivered=(lambda: self._delivered(key)) if counted else None
            )
        except AyudantiaError as exc:  # the student left: nothing to deliver, nothing to count
            self.undeliverable += 1
            self.log.debug("estudiante ausente, respuesta %r descartada: %s", reply.get("id"), exc)
            return
        if "error" in sent:
            self.errors += 1

    def _delivered(self, key: str | None) -> None:
        self.delivered += 1
        if key is not None:
            self.conteo.add(key)

    async def on_stop(self) -> None:
        await super().on_stop()  # the link first: its waiting questions get error answers
        loop = self.loop
        assert loop is not None
        await loop.run_in_executor(None, self.conteo.close, 5.0)

    def stats(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "errors": self.errors,
            "undeliverable": self.undeliverable,
            "tareo_bytes_sent": self.upstream.bytes_sent,
            "tareo_bytes_received": self.upstream.bytes_received,
            "tareo_late": self.upstream.late,
            "conteo_posted": self.conteo.posted,
            "conteo_backlog": self.conteo.backlog,
            "conteo_lost": self.conteo.lost,
            "conteo_rejected": self.conteo.rejected,
        }
