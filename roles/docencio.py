"""El Docencio: the students' server and the Tareo's client (a :class:`~roles.base.Peer`).

What it decides:

* "Contenido": it answers itself ("Docencio: respondiendo pregunta de contenido");
* "Tarea" and "Pregunta Dificil": forwarded over its one persistent link to the Tareo; the
  link routes each answer back by id to the student who asked, exactly once, in whatever
  order answers come back; a Tareo that is down or late gives an error answer (same id);
* any other kind, or a malformed question: an error answer, never silence;
* after delivering each answer (its own or the Tareo's or the Profesor's) it queues the
  question for the Profesor's count (:class:`~roles.profesor.Conteo`), which retries until
  the Profesor has it. Error answers are not counted.

Differences from the notebook's sketch, each a bug measured there: answers were matched to
students by luck (21 of 39 misrouted with two students), a departed student made the
server spin and spawn threads forever, the 4-byte header leaked into the text, and a
Profesor outage killed the handler thread.
"""

from __future__ import annotations

from typing import Any

from protocol.errors import AyudantiaError, DecodeError
from protocol.transport import Connection
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
)
from roles.profesor import Conteo, ProfesorClient


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
        super().__init__(host, port, upstream=tareo, upstream_timeout=timeout, **kwargs)
        self.conteo = Conteo(ProfesorClient(profesor, self.wire.codec, timeout=min(timeout, 5.0)))
        self.delivered = 0
        self.errors = 0
        self.undeliverable = 0

    def handle(self, conn: Connection) -> None:
        self.log.info("Docencio: nuevo estudiante conectado")
        while True:
            try:
                pregunta = check_question(conn.recv())
            except DecodeError as exc:
                self.deliver(conn, None, error(None, f"mensaje ilegible: {exc}"))
                continue
            except BadQuestion as exc:
                self.deliver(conn, None, error(exc.id, f"pregunta malformada: {exc}"))
                continue
            tipo = pregunta["tipo"]
            self.log.debug("Recibimos una pregunta: %s", tipo)
            if tipo == CONTENIDO:
                self.log.debug("Docencio: respondiendo pregunta de contenido")
                self.deliver(conn, pregunta, answer(pregunta["id"], RESPUESTA_CONTENIDO, DOCENCIO))
            elif tipo in (TAREA, DIFICIL):
                self.upstream.request(
                    pregunta,
                    lambda reply, conn=conn, pregunta=pregunta: self.deliver(conn, pregunta, reply),
                )
            else:
                self.deliver(
                    conn,
                    pregunta,
                    error(pregunta["id"], f"nadie responde preguntas de tipo {tipo!r}"),
                )

    def deliver(self, conn: Connection, pregunta: dict[str, Any] | None, reply: dict) -> None:
        """Send ``reply`` to the student on ``conn``; count it if it is an answer."""
        if "respuesta" not in reply and "error" not in reply:
            reply = error(reply.get("id"), f"respuesta sin 'respuesta' ni 'error': {reply!r}")
        try:
            conn.send(reply)
        except AyudantiaError as exc:  # the student left: nothing to deliver, nothing to count
            self.undeliverable += 1
            self.log.debug("estudiante ausente, respuesta %r descartada: %s", reply.get("id"), exc)
            return
        if "error" in reply:
            self.errors += 1
            return
        self.delivered += 1
        if pregunta is not None:
            self.conteo.add(count_key(pregunta))

    def on_stop(self) -> None:
        super().on_stop()
        self.conteo.close(flush=5.0)

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
        }
