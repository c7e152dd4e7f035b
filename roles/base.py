"""The machinery every server role shares, so each role file holds only what that role decides.

The notebook asks for it ("se puede reducir considerablemente el código utilizando de forma
correcta la herencia"): its three socket classes repeat bind/listen/accept/thread code and
each gets a different part wrong. Here a :class:`Server` runs one event loop (uvloop where
it installs) in one thread: every peer is a :class:`~protocol.aio.FrameConnection` on that
loop, with flow control both ways, so one student who floods or never reads is pushed back
by TCP alone and the others never wait for it. Subclasses override the
:class:`~protocol.aio.Handler` callbacks (``message_received`` and friends).

A :class:`Link` is the event-loop client that carries many requests at once over one
persistent connection and routes each reply to its caller by id, with a deadline per
request, so nothing waits forever and no reply reaches the wrong caller. A :class:`Peer`
is a server that is also a client: it owns a :class:`Link` upstream.

Blocking work (HTTP through ``requests``) never runs on the loop's thread: roles hand it to
a small bounded executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import resource
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from protocol.aio import FrameConnection, Handler, Limits, Speech, is_peer_fault
from protocol.errors import AyudantiaError, ConnectionClosed, EncodeError, Refused, Timeout
from protocol.transport import Received
from roles.client import Client, Unreachable, backoff_delays
from roles.signals import handle_signals
from roles.wire import WireSettings, tls_client_kwargs, tls_server_kwargs

__all__ = ["Client", "Link", "Peer", "Server", "Unreachable", "WireSettings", "new_event_loop"]

LOOPS = ("auto", "asyncio", "uvloop")
# Seconds between two summary lines of who came and went (per-client lines are DEBUG: two
# INFO lines per student were 8,613 lines for 4,500 connections, and their writes a large
# part of a serial student's cycle; py-spy, issue 23). No traffic, no line and no timer.
SUMMARY_EVERY = 10.0
# File descriptors a server needs beyond one per client: listener, loop, log, executor, links.
_SPARE_FDS = 64


def new_event_loop(kind: str = "auto") -> tuple[asyncio.AbstractEventLoop, str]:
    """A fresh event loop of ``kind`` and the name of what it is (``uvloop`` or ``asyncio``)."""
    if kind not in LOOPS:
        raise ValueError(f"unknown loop {kind!r}; choose from {', '.join(LOOPS)}")
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise ValueError("--loop uvloop: uvloop is not installed here") from None
        else:
            return uvloop.new_event_loop(), "uvloop"
    return asyncio.new_event_loop(), "asyncio"


def stop_loop_thread(
    loop: asyncio.AbstractEventLoop | None,
    stop: asyncio.Event | None,
    thread: threading.Thread | None,
    timeout: float,
) -> None:
    """Set a background loop's ``stop`` event from another thread, then wait for the thread.

    Either may not exist yet (never started) or be gone already (the loop closed): then
    there is nothing to tell, and a loop closing meanwhile is no error.
    """
    if loop is not None and stop is not None and not loop.is_closed():
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)
    if thread is not None:
        thread.join(timeout)


def raise_fd_limit(needed: int) -> tuple[int, str | None]:
    """Raise the soft RLIMIT_NOFILE toward ``needed``; (descriptors available, why not more)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed, None
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            return soft, f"cannot raise the open-file limit from {soft} to {target}: {exc}"
    if soft < needed:
        return soft, (
            f"the hard open-file limit is {hard} (ulimit -Hn), below the {needed} this cap needs"
        )
    return soft, None


class Server(Handler):
    """A TCP server on one event loop. Subclasses override the Handler callbacks.

    Binds to loopback unless told otherwise, sets SO_REUSEADDR so a restart can take the
    port at once, refuses clients past ``max_clients``, and treats every peer error as that
    peer's problem: a broken or hostile client is logged and dropped, the server keeps
    serving. :meth:`start` runs the loop in a background thread (for tests and in-process
    use); :meth:`serve_until_signal` does the same and waits for SIGINT/SIGTERM.
    """

    role = "server"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        wire: WireSettings | None = None,
        max_clients: int = 10_000,
        loop: str = "auto",
        max_held: int | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if max_clients < 1:
            raise ValueError("max_clients must be at least 1")
        self.host = host
        self.port = port
        self.wire = wire or WireSettings()
        self.max_clients = max_clients
        self.loop_kind = loop
        self.loop_name = ""
        self.log = logger or logging.getLogger(f"ayudantia.{self.role}")
        self.speech: Speech = self.wire.speech()
        overrides = {"max_held": max_held} if max_held is not None else {}
        self.limits: Limits = self.wire.limits(**overrides)
        self.clients: set[FrameConnection] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._stopped = threading.Event()
        self.served = 0
        self.dropped = 0
        self.refused = 0
        self._comings = [0, 0, 0]  # since the last summary: connected, left, left on an error
        self._summary: asyncio.TimerHandle | None = None

    # -- lifecycle (from any thread) --------------------------------------------------

    def start(self) -> tuple[str, int]:
        """Bind, listen and serve on a loop in a background thread; returns (host, port)."""
        if self._thread is not None:
            return self.address
        loop, self.loop_name = new_event_loop(self.loop_kind)
        self.loop = loop
        self._thread = threading.Thread(
            target=self._run_loop, args=(loop,), name=f"{self.role}-loop", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join(5.0)
            raise self._startup_error
        self.log.info(
            "%s escuchando en %s:%s (codec %s, loop %s)",
            self.role,
            self.host,
            self.port,
            self.wire.codec,
            self.loop_name,
        )
        return self.address

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            if not self._ready.is_set():
                self._startup_error = exc
            else:
                self.log.exception("%s: the event loop failed", self.role)
        finally:
            self._ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._stopped.set()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, finish the role's own work, close every peer, end the loop."""
        stop_loop_thread(self.loop, self._stop, self._thread, timeout)
        self.log.info("%s detenido", self.role)

    def serve_until_signal(self) -> int:
        """Serve until SIGINT or SIGTERM, then stop cleanly; returns 0."""
        self.start()
        with handle_signals() as stop_requested:
            while not stop_requested.is_set() and not self._stopped.is_set():
                stop_requested.wait(0.5)
        self.stop()
        return 0

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def client_count(self) -> int:
        return len(self.clients)

    # -- the loop ---------------------------------------------------------------------

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        available, why = raise_fd_limit(self.max_clients + _SPARE_FDS)
        if why is not None:
            cap = max(1, available - _SPARE_FDS)
            self.log.warning(
                "%s: --max-clients %d needs %d open files; %s: serving at most %d clients",
                self.role,
                self.max_clients,
                self.max_clients + _SPARE_FDS,
                why,
                cap,
            )
            self.max_clients = cap
        await self.on_start()
        try:
            server = await loop.create_server(
                self._new_connection,
                self.host,
                self.port,
                reuse_address=True,
                backlog=min(4096, max(128, self.max_clients)),
                **tls_server_kwargs(self.wire),
            )
        except BaseException:
            await self.on_stop()
            raise
        sock = server.sockets[0]
        self.host, self.port = sock.getsockname()[:2]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            await self.on_stop()
            for conn in list(self.clients):
                if conn.writing_paused:
                    conn.abort()  # it does not read: what is queued for it would never leave
                else:
                    conn.close()
            await self._wait_clients_gone(2.0)
            for conn in list(self.clients):
                conn.abort()

    async def _wait_clients_gone(self, timeout: float) -> None:
        waits = [c.closed for c in self.clients if c.closed is not None]
        if waits:
            await asyncio.wait(waits, timeout=timeout)

    def _new_connection(self) -> FrameConnection:
        return FrameConnection(
            self, speech=self.speech, limits=self.limits, name=self.role, side="server"
        )

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> asyncio.Task:
        """A task on the loop whose failure is logged rather than lost."""
        assert self.loop is not None
        task = self.loop.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error(
                "%s: task %s failed", self.role, task.get_name(), exc_info=task.exception()
            )

    # -- hooks for subclasses ---------------------------------------------------------

    async def on_start(self) -> None:
        """Before the server listens: open upstream links, pools."""

    async def on_stop(self) -> None:
        """After the server stops listening, before its peers are closed: flush, close links."""

    # -- Handler ----------------------------------------------------------------------

    def connection_made(self, conn: FrameConnection) -> None:
        if len(self.clients) >= self.max_clients:
            self.refused += 1
            self.log.warning(
                "rechazando %s: %d clientes ya conectados", conn.peer, self.max_clients
            )
            conn.refuse_busy(f"server full: {self.max_clients} clients connected")
            return
        self.clients.add(conn)
        self.log.debug("cliente conectado: %s", conn.peer)
        self._tally(0)

    def connection_lost(self, conn: FrameConnection, error: BaseException | None) -> None:
        if conn not in self.clients:
            return
        self.clients.discard(conn)
        self.served += 1
        clean = error is None or isinstance(error, ConnectionClosed)
        self._tally(1 if clean else 2)
        if clean:
            self.log.debug("cliente desconectado: %s", conn.peer)
        elif isinstance(error, Timeout):
            self.log.debug("cliente %s desconectado: %s", conn.peer, error)
        elif is_peer_fault(error):
            self.dropped += 1
            self.log.warning(
                "cliente %s enviando datos inválidos, desconectado: %s", conn.peer, error
            )
        elif isinstance(error, AyudantiaError | OSError):
            self.log.debug("cliente %s: %s", conn.peer, error)
        else:
            self.log.error("error atendiendo a %s: %r", conn.peer, error)

    def _tally(self, which: int) -> None:
        """Count a client's coming or going for the next summary line (timer made lazily)."""
        self._comings[which] += 1
        if self._summary is None and self.loop is not None:
            self._summary = self.loop.call_later(SUMMARY_EVERY, self._log_summary)

    def _log_summary(self) -> None:
        came, left, failed = self._comings
        self._comings = [0, 0, 0]
        self._summary = None
        self.log.info(
            "%s: en %g s, %d clientes conectados y %d desconectados (%d por un error o un "
            "plazo); %d conectados ahora",
            self.role,
            SUMMARY_EVERY,
            came,
            left + failed,
            failed,
            len(self.clients),
        )


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


class Peer(Server):
    """A server that is also a client: it serves its own clients and owns a :class:`Link`.

    The link starts before the server listens and closes after it stops listening.
    """

    role = "peer"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        upstream: tuple[str, int],
        upstream_timeout: float = 10.0,
        upstream_wire: WireSettings | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(host, port, **kwargs)
        wire = upstream_wire or dataclasses.replace(self.wire, idle_timeout=None)
        self.upstream = Link(
            upstream[0],
            upstream[1],
            wire=wire,
            timeout=upstream_timeout,
            logger=logging.getLogger(f"ayudantia.{self.role}.upstream"),
        )

    async def on_start(self) -> None:
        self.upstream.start()

    async def on_stop(self) -> None:
        await self.upstream.close()

    def wait_upstream(self, timeout: float) -> bool:
        """From any thread: whether the upstream link came up within ``timeout`` seconds."""
        assert self.loop is not None
        future = asyncio.run_coroutine_threadsafe(self.upstream.wait_up(timeout), self.loop)
        try:
            return bool(future.result(timeout + 1.0))
        except Exception:
            return False
