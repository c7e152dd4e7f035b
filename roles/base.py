"""The machinery every server role shares, so each role file holds only what that role decides.

The notebook asks for it ("se puede reducir considerablemente el código utilizando de forma
correcta la herencia"): its three socket classes repeat bind/listen/accept/thread code and
each gets a different part wrong. Here a :class:`Server` runs one event loop (uvloop where
it installs, :mod:`roles.loop`) in one thread: every peer is a
:class:`~protocol.aio.FrameConnection` on that loop, with flow control both ways, so one
student who floods or never reads is pushed back by TCP alone and the others never wait for
it. Subclasses override the :class:`~protocol.aio.Handler` callbacks (``message_received``
and friends).

A :class:`Peer` is a server that is also a client: it owns a :class:`~roles.link.Link`
upstream (the event-loop client that carries many requests at once, in :mod:`roles.link`).

Blocking work (HTTP through ``requests``) never runs on the loop's thread: roles hand it to
a small bounded executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from protocol.aio import FrameConnection, Handler, Limits, Speech, is_peer_fault
from protocol.errors import AyudantiaError, ConnectionClosed, Timeout
from protocol.tls_server import TlsServerProtocol
from roles.client import Client, Unreachable
from roles.link import Link
from roles.listener import Listener, bind_listeners
from roles.loop import LOOPS, new_event_loop, raise_fd_limit, stop_loop_thread
from roles.signals import handle_signals
from roles.wire import WireSettings, server_protocol_factory

__all__ = [
    "LOOPS",
    "Client",
    "Link",
    "Peer",
    "Server",
    "Unreachable",
    "WireSettings",
    "new_event_loop",
    "raise_fd_limit",
    "stop_loop_thread",
]

# Seconds between two summary lines of who came and went (per-client lines are DEBUG: two
# INFO lines per student were 8,613 lines for 4,500 connections, and their writes a large
# part of a serial student's cycle; py-spy, issue 23). No traffic, no line and no timer.
SUMMARY_EVERY = 10.0
# File descriptors a server needs beyond one per client: listener, loop, log, executor, links.
_SPARE_FDS = 64
# Connections turned away as busy that may linger at once (each drains for the refusal's
# quarter of a second, protocol.aio._REFUSAL_LINGER, so the close does not reset the
# refusal away). Past this, a busy peer gets a plain close: a flood of connects holds at
# most max_clients + REFUSING_MAX sockets open, and each refused one costs a descriptor.
REFUSING_MAX = 16


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
        self.refusing: set[FrameConnection] = set()  # turned away as busy, still draining
        # TLS connections not handed to us yet (protocol.tls_server): counted, and closed
        # at stop, since neither a client nor a refusal holds them.
        self.handshaking: set[TlsServerProtocol] = set()
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

    def serve_until_signal(self, before_stop: Callable[[], None] | None = None) -> int:
        """Serve until SIGINT or SIGTERM, then stop cleanly; returns 0.

        ``before_stop`` runs as soon as the signal comes, before the (maybe slow) stop:
        whatever tells others we are here (a LAN announcement) goes first.
        """
        self.start()
        with handle_signals() as stop_requested:
            while not stop_requested.is_set() and not self._stopped.is_set():
                stop_requested.wait(0.5)
        if before_stop is not None:
            before_stop()
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

    @property
    def open_connections(self) -> int:
        """Sockets this server holds for peers: its clients, the busy ones still draining
        and, over TLS, those whose handshake is not over (or was refused and drains)."""
        return len(self.clients) + len(self.refusing) + len(self.handshaking)

    def tls_opened(self, conn: TlsServerProtocol) -> bool:
        """A TLS connection arrived (:class:`~protocol.tls_server.HandshakeGate`): may its
        handshake start? Not when the sockets already held reach the cap + REFUSING_MAX:
        a handshake holds its socket up to the handshake timeout before a busy refusal
        could count it, so silent connects would otherwise hold one each without bound."""
        if self.open_connections >= self.max_clients + REFUSING_MAX:
            self.refused += 1
            return False
        self.handshaking.add(conn)
        return True

    def tls_settled(self, conn: TlsServerProtocol) -> None:
        """A TLS connection counted by :meth:`tls_opened` reached us or closed."""
        self.handshaking.discard(conn)

    def _room(self) -> int:
        """Sockets the listener may still take (:mod:`roles.listener`): the cap and the
        busy refusals that may drain, less what is held."""
        return self.max_clients + REFUSING_MAX - self.open_connections

    # -- the loop ---------------------------------------------------------------------

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        available, why = raise_fd_limit(self.max_clients + REFUSING_MAX + _SPARE_FDS)
        if why is not None:
            cap = max(1, available - REFUSING_MAX - _SPARE_FDS)
            self.log.warning(
                "%s: --max-clients %d needs %d open files; %s: serving at most %d clients",
                self.role,
                self.max_clients,
                self.max_clients + REFUSING_MAX + _SPARE_FDS,
                why,
                cap,
            )
            self.max_clients = cap
        await self.on_start()
        try:
            socks = await bind_listeners(
                self.host, self.port, backlog=min(4096, max(128, self.max_clients))
            )
        except BaseException:
            await self.on_stop()
            raise
        listener = Listener(
            socks, server_protocol_factory(self.wire, self._new_connection, self), self._room
        )
        self.host, self.port = listener.sockname
        listener.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            listener.close()
            await self.on_stop()
            for conn in list(self.clients):
                if conn.writing_paused:
                    conn.abort()  # it does not read: what is queued for it would never leave
                else:
                    conn.close()
            await self._wait_clients_gone(2.0)
            for conn in list(self.clients | self.refusing):
                conn.abort()
            for tls in list(self.handshaking):  # not ours yet, but nobody else closes them
                tls.abort()

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
            if len(self.refusing) >= REFUSING_MAX:  # a flood: no courtesy, no lingering socket
                conn.abort()
                return
            self.refusing.add(conn)
            conn.refuse_busy(f"server full: {self.max_clients} clients connected")
            return
        self.clients.add(conn)
        self.log.debug("cliente conectado: %s", conn.peer)
        self._tally(0)

    def connection_lost(self, conn: FrameConnection, error: BaseException | None) -> None:
        if conn not in self.clients:
            self.refusing.discard(conn)
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
