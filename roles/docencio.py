"""El Docencio: the students' server and the Tareo's client (a :class:`~roles.base.Peer`).

What it decides:

* "Contenido": it answers itself ("Docencio: respondiendo pregunta de contenido");
* "Tarea" and "Pregunta Dificil": forwarded over its one persistent link to the Tareo; the
  link routes each answer back by id to the student who asked, exactly once, in whatever
  order answers come back; a Tareo that is down or late gives an error answer (same id);
* any other kind, or a malformed question (a name or id too long, or not valid text): an
  error answer, never silence;
* before an answer (its own or the Tareo's or the Profesor's) goes, the question's count
  key is committed to a durable outbox (:class:`~roles.outbox.Outbox`, SQLite), posted to
  the Profesor in batches until acknowledged, so a crash cannot lose a count (see
  docs/counting.md). An outbox that cannot be written turns the answer into an error
  answer: never an uncounted answer. Error answers are not counted.

Fairness: every student's forwarded questions are held against that student's connection;
while a student has too many unanswered, or does not read its answers, the Docencio stops
reading that student alone (see docs/servers.md).

Differences from the notebook's sketch, each a bug measured there: answers were matched to
students by luck (21 of 39 misrouted with two students), a departed student made the
server spin and spawn threads forever, the 4-byte header leaked into the text, and a
Profesor outage killed the handler thread.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import os
from pathlib import Path
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
from roles.estado import Cronometro
from roles.outbox import Outbox, default_outbox_path
from roles.profesor import ProfesorClient

# A question is a few dozen bytes; a forwarded one waits whole until its answer comes.
MAX_QUESTION_BYTES = 16 * 1024
# Questions one student may have waiting for the Tareo before the Docencio stops reading it.
MAX_FORWARDED = 64


def counts(reply: dict) -> bool:
    """Whether the student takes ``reply`` as an answer, so the Profesor must count it.

    The student's own test (roles/estudiante.py): a text ``respuesta``. A Tareo reply with
    a ``respuesta`` that is not text and no ``error`` used to be counted while its student
    took it as an error; one with both used to be an uncounted answer.
    """
    return isinstance(reply.get("respuesta"), str)


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
        outbox: str | Path | None = None,
        outbox_sync: str = "normal",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_held", MAX_FORWARDED)
        super().__init__(host, port, upstream=tareo, upstream_timeout=timeout, **kwargs)
        # A question bigger than the cap is refused at its header: nothing of it is buffered.
        self.limits = dataclasses.replace(
            self.limits, max_message=min(self.limits.max_message, MAX_QUESTION_BYTES)
        )
        # No path: the default one, named after the port we get (opened in start()).
        self.outbox = Outbox(
            ProfesorClient(
                profesor,
                self.wire.codec,
                timeout=min(timeout, 5.0),
                key=self.wire.key,
                tls=self.wire.tls,
            ),
            outbox,
            sync=outbox_sync,
        )
        # Per student, the keys of its counted answers sent but not yet out, in send order;
        # only while there are some (a deque costs ~600 bytes: 3 MB for 5,000 idle students).
        self._awaiting: dict[FrameConnection, collections.deque[str]] = {}
        # Who a nameless student is: this Docencio's run and the connection's number.
        self._run_token = os.urandom(4).hex()
        self._serial = itertools.count(1)
        self._identity: dict[FrameConnection, str] = {}
        self.delivered = 0
        self.errors = 0
        self.undeliverable = 0
        self.cronometro = Cronometro()  # the panel's latency and answers by kind

    def connection_made(self, conn: FrameConnection) -> None:
        super().connection_made(conn)
        if conn in self.clients:
            self._identity[conn] = f"{self._run_token}:{next(self._serial)}"
            self.log.debug("Docencio: nuevo estudiante conectado")  # summed up at INFO

    def connection_lost(self, conn: FrameConnection, error: BaseException | None) -> None:
        super().connection_lost(conn, error)
        self._identity.pop(conn, None)
        self.cronometro.forget(conn)
        self.undeliverable += conn.undelivered  # queued for it, never left: not counted
        for key in self._awaiting.pop(conn, ()):
            self.outbox.undelivered(key)

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
        self.cronometro.start(conn, pregunta)
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
        """Send ``reply`` to the student on ``conn``, its count key committed first.

        A counted answer (not an error, to a well-formed question) waits for its key's
        group commit in the outbox, then goes; if the outbox cannot be written the student
        gets an error answer instead. The key counts once its answer is delivered (its last
        byte left this process); one queued for a student who is then cut off or leaves is
        withdrawn. After a crash the next run counts every committed key (docs/counting.md).
        """
        if "respuesta" not in reply and "error" not in reply:
            reply = error(reply.get("id"), f"respuesta sin 'respuesta' ni 'error': {reply!r}")
        if not counts(reply) or pregunta is None:
            self._send(conn, reply)
            return
        key = count_key(pregunta, self._identity.get(conn, ""))
        conn.hold()  # waiting for the disk is this student's pending work too
        self.outbox.commit(key, lambda failed: self._committed(conn, key, reply, failed))

    def _committed(self, conn: FrameConnection, key: str, reply: dict, failed: str | None) -> None:
        """On the loop, once the key's group was written (``failed``: why it was not)."""
        if failed is not None:
            self._send(
                conn,
                error(
                    reply.get("id"),
                    f"el Docencio no puede registrar la respuesta para el conteo ({failed}); "
                    "no responde sin contar: pregunta más tarde",
                ),
            )
        else:
            self._send_counted(conn, key, reply)
        conn.release()

    def _send_counted(self, conn: FrameConnection, key: str, reply: dict) -> None:
        if conn not in self._identity:  # the student left while its key was written
            self.undeliverable += 1
            self.outbox.undelivered(key)
            return
        awaiting = self._awaiting.get(conn)
        if awaiting is None:
            awaiting = self._awaiting[conn] = collections.deque()
        awaiting.append(key)  # before sending: the receipt may come at once
        sent = self._send(conn, reply, on_delivered=lambda: self._delivered(conn))
        if sent is not None and sent is not reply:  # an error answer went in its place
            awaiting.pop()
            self.outbox.undelivered(key)
            if not awaiting:
                del self._awaiting[conn]
        # sent None: the connection is going; connection_lost withdraws what is awaiting

    def _send(self, conn: FrameConnection, reply: dict, on_delivered: Any = None) -> dict | None:
        try:
            sent = send_answer(conn, reply, on_delivered=on_delivered)
        except AyudantiaError as exc:  # the student left: nothing to deliver, nothing to count
            self.undeliverable += 1
            self.log.debug("estudiante ausente, respuesta %r descartada: %s", reply.get("id"), exc)
            return None
        self.cronometro.stop(conn, sent)
        if "error" in sent:
            self.errors += 1
        return sent

    def _delivered(self, conn: FrameConnection) -> None:
        awaiting = self._awaiting.get(conn)
        if awaiting:  # receipts come in send order, as the keys were appended
            self.delivered += 1
            self.outbox.delivered(awaiting.popleft())
            if not awaiting:
                del self._awaiting[conn]

    def start(self) -> tuple[str, int]:
        address = super().start()
        if self.outbox.path is None:
            self.outbox.open(default_outbox_path(self.port))
        return address

    async def on_start(self) -> None:
        self.outbox.bind(asyncio.get_running_loop())
        await super().on_start()

    async def on_stop(self) -> None:
        await super().on_stop()  # the link first: its waiting questions get error answers
        loop = asyncio.get_running_loop()
        # Questions whose keys are being written get their answers before the peers close.
        await loop.run_in_executor(None, self.outbox.wait_idle, 5.0)
        await asyncio.sleep(0)

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        # After the peers closed: their last receipts are in; post what we can, keep the rest.
        self.outbox.close(5.0)

    def stats(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "errors": self.errors,
            "undeliverable": self.undeliverable,
            "tareo_bytes_sent": self.upstream.bytes_sent,
            "tareo_bytes_received": self.upstream.bytes_received,
            "tareo_late": self.upstream.late,
            "conteo_posted": self.outbox.poster.posted,
            "conteo_backlog": self.outbox.poster.backlog,
            "conteo_lost": self.outbox.poster.lost,
            "conteo_rejected": self.outbox.poster.rejected,
            **self.outbox.stats(),
        }
