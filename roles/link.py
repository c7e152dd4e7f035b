"""The event-loop client a server keeps upstream: many requests over one connection.

A :class:`Link` carries many requests at once over one persistent connection and routes
each reply to its caller by id, with a deadline per request, so nothing waits forever and
no reply reaches the wrong caller. It owns its pending table, the handler its connection
reports to, and what it does when the server refuses the link itself (say why to every
asker, look again rarely). A :class:`~roles.base.Peer` is a server that owns one upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol.aio import FrameConnection, Handler
from protocol.errors import AyudantiaError, ConnectionClosed, EncodeError, Refused, Timeout
from protocol.transport import Received
from roles.client import backoff_delays
from roles.wire import WireSettings, tls_client_kwargs

__all__ = ["LINK_REFUSALS", "REFUSED_RETRY", "Link", "Reply"]

Reply = Callable[[dict[str, Any]], None]
# Refusals that say the link itself is wrong (not one request): no quick retry can help.
LINK_REFUSALS = frozenset({"codec", "signature", "version"})
REFUSED_RETRY = 30.0  # seconds between looks at a server that refused the link


@dataclass(slots=True)
class _Pending:
    reply: Reply
    original_id: Any
    timer: asyncio.TimerHandle


class _LinkHandler(Handler):
    def __init__(self, link: Link) -> None:
        self.link = link

    def message_received(self, conn: FrameConnection, received: Received) -> None:
        self.link._on_reply(received.obj)

    def decode_failed(self, conn: FrameConnection, error: Exception) -> None:
        # one bad reply: the stream itself is still in step
        self.link.log.warning("respuesta ilegible de %s: %s", self.link.where, error)


class Link:
    """Many requests in flight over one persistent connection, on the loop; replies by id.

    :meth:`request` rewrites the request's ``id`` to one unique on this link (so two
    callers' ids can never collide), remembers who asked, and sends. Each reply gets the
    caller's id back and goes to that caller's ``reply`` callback, whatever the order.
    Every request ends in exactly one call to its callback: the reply, or an error map
    ``{"id": ..., "error": ...}`` when the link is down, the request cannot be encoded
    (that request's error alone: the link stays up), the reply is late (``timeout``), or the
    connection drops while it waits. A supervisor task keeps the link up, reconnecting with
    backoff and jitter. :meth:`close` wins over a connect in flight.
    """

    role = "link"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        wire: WireSettings | None = None,
        timeout: float = 10.0,
        max_pending: int = 10_000,
        connect_timeout: float = 2.0,
        max_request: int = 64 * 1024,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.wire = wire or WireSettings()
        # A quiet upstream is fine: the deadlines live per request.
        self.limits = self.wire.limits(
            idle_timeout=None, max_held=1 << 30, pause_reads_on_writes=False
        )
        self.speech = self.wire.speech()
        self.timeout = timeout
        self.max_pending = max_pending
        self.max_request = max_request
        self.connect_timeout = connect_timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.log = logger or logging.getLogger(f"ayudantia.{self.role}")
        self.conn: FrameConnection | None = None
        self.connections = 0
        self.late = 0
        self.refused: Refused | None = None  # the link itself was refused (LINK_REFUSALS)
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._bytes = [0, 0]
        self._closing = False
        self._task: asyncio.Task | None = None
        self._up = asyncio.Event()

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    # -- lifecycle (on the loop) ------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"{self.role}-supervisor"
        )

    async def wait_up(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up.wait(), timeout)
        return self._up.is_set()

    @property
    def up(self) -> bool:
        return self._up.is_set() and self.conn is not None and not self.conn.is_closing

    async def close(self) -> None:
        """Close the link: a connect in flight is cancelled, every waiting request answered."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._drop_connection()
        self._fail_all("el enlace se está cerrando")

    # -- requests ---------------------------------------------------------------------

    def request(self, message: dict[str, Any], reply: Reply) -> None:
        """Send ``message``; ``reply`` is called exactly once, with the answer or an error."""
        original = message.get("id")
        conn = self.conn
        if self.refused is not None:
            _call_reply(self.log, reply, {"id": original, "error": self._refused_reason()})
            return
        if self._closing or not self.up or conn is None:
            _call_reply(self.log, reply, {"id": original, "error": f"{self.where} no disponible"})
            return
        if len(self._pending) >= self.max_pending or conn.writing_paused:
            _call_reply(
                self.log, reply, {"id": original, "error": f"{self.where} saturado, intenta luego"}
            )
            return
        wire_id = str(next(self._ids))
        try:
            payload = conn.encode({**message, "id": wire_id})
        except EncodeError as exc:  # this question's problem, not the link's
            _call_reply(
                self.log,
                reply,
                {"id": original, "error": f"la pregunta no se puede enviar en {exc.codec}: {exc}"},
            )
            return
        if len(payload) > self.max_request:  # re-encoding can grow it (json escapes)
            _call_reply(
                self.log,
                reply,
                {
                    "id": original,
                    "error": f"la pregunta ocupa {len(payload)} bytes en {conn.codec.name}; "
                    f"el máximo es {self.max_request}",
                },
            )
            return
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.timeout, self._expire, wire_id)
        self._pending[wire_id] = _Pending(reply, original, timer)
        try:
            conn.send_payload(conn.codec.id, payload)
        except AyudantiaError as exc:
            self._resolve(wire_id, {"error": f"{self.where} no disponible: {exc}"})

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _refused_reason(self) -> str:
        assert self.refused is not None
        return f"{self.where} rechaza a este Docencio ({self.refused.reason}): {self.refused.text}"

    @property
    def bytes_sent(self) -> int:
        conn = self.conn
        return self._bytes[0] + (conn.bytes_sent if conn is not None else 0)

    @property
    def bytes_received(self) -> int:
        conn = self.conn
        return self._bytes[1] + (conn.bytes_received if conn is not None else 0)

    def _expire(self, wire_id: str) -> None:
        self._resolve(wire_id, {"error": f"{self.where} no respondió en {self.timeout:g} s"})

    def _on_reply(self, answer: Any) -> None:
        if not isinstance(answer, dict):
            self.log.warning("respuesta que no es un mapa de %s: %r", self.where, answer)
            return
        if not self._resolve(answer.get("id"), answer):
            self.late += 1
            self.log.debug("respuesta tardía o desconocida: %r", answer.get("id"))

    def _resolve(self, wire_id: Any, answer: dict[str, Any]) -> bool:
        entry = self._pending.pop(wire_id, None) if isinstance(wire_id, str) else None
        if entry is None:
            return False
        entry.timer.cancel()
        _call_reply(self.log, entry.reply, {**answer, "id": entry.original_id})
        return True

    def _fail_all(self, reason: str) -> None:
        entries = list(self._pending.values())
        self._pending.clear()
        for entry in entries:
            entry.timer.cancel()
            _call_reply(self.log, entry.reply, {"id": entry.original_id, "error": reason})

    # -- the supervisor ---------------------------------------------------------------

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        delays = iter(backoff_delays(self.backoff, self.max_backoff))
        attempts = 0
        while not self._closing:
            attempts += 1
            try:
                conn = await self._connect(loop)
            except (OSError, TimeoutError) as exc:
                if attempts == 1 or attempts % 20 == 0:
                    self.log.info("%s no disponible (%s); reintentando", self.where, exc)
                await asyncio.sleep(next(delays))
                continue
            self.conn = conn
            self.refused = None
            self.connections += 1
            if self.connections > 1 or attempts > 1:
                self.log.info("conectado a %s (intento %d)", self.where, attempts)
            attempts = 0
            delays = iter(backoff_delays(self.backoff, self.max_backoff))
            self._up.set()
            assert conn.closed is not None
            try:
                error = await asyncio.shield(conn.closed)
            finally:
                self._up.clear()
                self._drop_connection()
            if isinstance(error, Refused) and error.reason in LINK_REFUSALS:
                # Retrying at once with the same settings cannot help: say why to every asker
                # from now on, and look again only rarely (someone may fix the server).
                self.refused = error
                self.log.error(
                    "%s rechaza este enlace: %s; se reintenta en %g s",
                    self.where,
                    error.text,
                    REFUSED_RETRY,
                )
                self._fail_all(self._refused_reason())
                await asyncio.sleep(REFUSED_RETRY)
                continue
            reason = f"conexión con {self.where} perdida" + (f": {error}" if error else "")
            if not self._closing:
                self.log.warning("%s; reconectando", reason)
            self._fail_all(reason)
            if not self._closing:
                await asyncio.sleep(next(delays))

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> FrameConnection:
        handler = _LinkHandler(self)

        def factory() -> FrameConnection:
            return FrameConnection(
                handler, speech=self.speech, limits=self.limits, name="upstream", side="client"
            )

        transport, conn = await asyncio.wait_for(
            loop.create_connection(
                factory, self.host, self.port, **tls_client_kwargs(self.wire, self.host)
            ),
            self.connect_timeout,
        )
        if self._closing:  # close() won while we connected: this connection never goes live
            transport.abort()
            raise ConnectionClosed("link closed while connecting")
        try:  # with a key: the handshake first; its failure closes conn, and says why there
            await conn.wait_ready(self.connect_timeout)
        except Timeout:
            conn.abort()
            raise
        except AyudantiaError:
            pass
        return conn

    def _drop_connection(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            self._bytes[0] += conn.bytes_sent
            self._bytes[1] += conn.bytes_received
            conn.close()


def _call_reply(log: logging.Logger, reply: Reply, answer: dict[str, Any]) -> None:
    try:
        reply(answer)
    except Exception:  # a caller's bug must not kill the link
        log.exception("error entregando respuesta %r", answer.get("id"))
