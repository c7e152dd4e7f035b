"""The machinery every role shares, so each role file holds only what that role decides.

The notebook asks for it ("se puede reducir considerablemente el código utilizando de forma
correcta la herencia"): its three socket classes repeat bind/listen/accept/thread code and
each gets a different part wrong. Here a :class:`Server` owns the listening socket, an
accept loop that sleeps in ``select`` (never spins), one thread per client up to a cap,
and a stop that closes every socket and joins every thread; subclasses write ``handle``.

A :class:`Client` connects with retries and exponential backoff and reconnects when its
server comes back. A :class:`Link` is a client that carries many requests at once over one
connection and routes each reply to its caller by id, with a deadline per request, so
nothing ever waits forever and no reply reaches the wrong caller. A :class:`Peer` is a
server that is also a client: it owns a :class:`Link` upstream.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol.errors import (
    AyudantiaError,
    CodecError,
    ConnectionClosed,
    DecodeError,
    ProtocolError,
    Timeout,
    TransportError,
)
from protocol.transport import Connection
from roles.client import Client, Unreachable
from roles.signals import handle_signals
from roles.wire import WireSettings


class Server:
    """A thread-per-client TCP server. Subclasses implement :meth:`handle`.

    Binds to loopback unless told otherwise, sets SO_REUSEADDR so a restart can take the
    port at once, refuses clients past ``max_clients`` (accept and close: a clear answer
    rather than a silent queue), and treats every peer error as that peer's problem:
    a broken or hostile client is logged and dropped, the server keeps serving.
    """

    role = "server"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        wire: WireSettings | None = None,
        max_clients: int = 128,
        logger: logging.Logger | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.wire = wire or WireSettings()
        self.max_clients = max_clients
        self.log = logger or logging.getLogger(f"ayudantia.{self.role}")
        self._listener: socket.socket | None = None
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._lock = threading.Lock()
        self._clients: dict[Connection, threading.Thread] = {}
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self.served = 0
        self.dropped = 0

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        """Bind, listen and start accepting in a background thread; returns (host, port)."""
        listener = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        listener.setblocking(False)
        self._listener = listener
        self.host, self.port = listener.getsockname()[:2]
        self._selector.register(listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"{self.role}-accept", daemon=True
        )
        self._accept_thread.start()
        self.log.info(
            "%s escuchando en %s:%s (codec %s)", self.role, self.host, self.port, self.wire.codec
        )
        return self.host, self.port

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every client socket, join every thread. Idempotent."""
        if self._stopping.is_set():
            self._stopped.wait(timeout)
            return
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        with self._lock:
            clients = list(self._clients.items())
        for conn, _ in clients:
            conn.shutdown()  # wakes the handler blocked in recv; it then closes the socket
        for _, thread in clients:
            thread.join(timeout)
        self.on_stop()
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._selector.close()
        self._stopped.set()
        self.log.info("%s detenido", self.role)

    def on_stop(self) -> None:
        """Hook for subclasses that own more than client sockets (upstream links, pools)."""

    def serve_until_signal(self) -> int:
        """Run in the foreground until SIGINT or SIGTERM, then stop cleanly; returns 0."""
        if self._listener is None:
            self.start()
        with handle_signals() as stop_requested:
            stop_requested.wait()
        self.stop()
        return 0

    def __enter__(self) -> Server:
        if self._listener is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    # -- accept loop ------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            for key, _ in self._selector.select():
                if key.data == "wake":
                    return
                self._accept_ready()

    def _accept_ready(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: log, do not spin on it
                self.log.error("accept failed: %s", exc)
                self._stopping.wait(0.1)
                return
            sock.setblocking(True)
            with self._lock:
                full = len(self._clients) >= self.max_clients
            if full:
                self.log.warning(
                    "rechazando %s:%s: %d clientes ya conectados", *peer[:2], self.max_clients
                )
                self.dropped += 1
                sock.close()
                continue
            conn = self.wire.wrap(sock)
            thread = threading.Thread(
                target=self._serve_client,
                args=(conn, peer),
                name=f"{self.role}-{peer[1]}",
                daemon=True,
            )
            with self._lock:
                self._clients[conn] = thread
            thread.start()

    def _serve_client(self, conn: Connection, peer: tuple[str, int]) -> None:
        where = f"{peer[0]}:{peer[1]}"
        self.log.debug("cliente conectado: %s", where)
        try:
            self.handle(conn)
        except ConnectionClosed:
            pass
        except Timeout as exc:
            self.log.info("cliente %s sin actividad, desconectado: %s", where, exc)
        except (ProtocolError, CodecError) as exc:
            self.dropped += 1
            self.log.warning("cliente %s enviando datos inválidos, desconectado: %s", where, exc)
        except AyudantiaError as exc:
            self.log.warning("cliente %s: %s", where, exc)
        except Exception:
            self.log.exception("error atendiendo a %s", where)
        finally:
            conn.close()
            with self._lock:
                self._clients.pop(conn, None)
            self.served += 1
            self.log.debug("cliente desconectado: %s", where)

    def handle(self, conn: Connection) -> None:
        """Serve one client until it leaves. Raise freely: errors drop only this client."""
        raise NotImplementedError


Reply = Callable[[dict[str, Any]], None]


@dataclass
class _Pending:
    reply: Reply
    original_id: Any
    deadline: float


class Link(Client):
    """Many requests in flight over one persistent connection; replies routed by id.

    :meth:`request` rewrites the request's ``id`` to one unique on this link (so two
    callers' ids can never collide), remembers who asked, and sends. A reader thread takes
    each reply, restores the caller's id and hands it to that caller's ``reply`` callback,
    whatever the order replies come back in. Every request ends in exactly one call to its
    callback: the reply, or an error map ``{"id": ..., "error": ...}`` when the link is
    down, the reply is late (``timeout``), or the connection drops while it waits. A
    supervisor thread keeps the link up, reconnecting with backoff after the server goes.
    """

    role = "link"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 10.0,
        max_pending: int = 10_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(host, port, retry_for=math.inf, **kwargs)
        self.timeout = timeout
        self.max_pending = max_pending
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._pending_lock = threading.Lock()
        self._has_pending = threading.Event()
        self._up = threading.Event()
        self._threads: list[threading.Thread] = []
        self._bytes = [0, 0]  # sent, received over the connections this link has closed
        self.late = 0  # replies that came after their deadline (dropped)

    # -- lifecycle --------------------------------------------------------------------

    def start(self, wait: float = 0.0) -> bool:
        """Start the supervisor and deadline threads; wait up to ``wait`` s for the link."""
        for target, name in ((self._supervise, "supervisor"), (self._sweep, "deadlines")):
            thread = threading.Thread(target=target, name=f"{self.role}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self._up.wait(wait) if wait else self._up.is_set()

    @property
    def up(self) -> bool:
        return self._up.is_set()

    def wait_up(self, timeout: float) -> bool:
        return self._up.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        super().close()
        self._has_pending.set()  # wake the sweeper so it sees the close
        for thread in self._threads:
            thread.join(timeout)
        self._fail_all("el enlace se está cerrando")

    # -- requests ---------------------------------------------------------------------

    def request(self, message: dict[str, Any], reply: Reply) -> None:
        """Send ``message``; ``reply`` is called exactly once, with the answer or an error."""
        original = message.get("id")
        conn = self.conn
        if not self._up.is_set() or conn is None:
            self._call(reply, {"id": original, "error": f"{self.where} no disponible"})
            return
        wire_id = str(next(self._ids))
        entry = _Pending(reply, original, time.monotonic() + self.timeout)
        with self._pending_lock:
            if len(self._pending) >= self.max_pending:
                full = True
            else:
                full = False
                self._pending[wire_id] = entry
                self._has_pending.set()
        if full:
            self._call(reply, {"id": original, "error": f"{self.where} saturado, intenta luego"})
            return
        try:
            conn.send({**message, "id": wire_id})
        except AyudantiaError as exc:
            # The reader sees the same broken socket and fails the rest of the pending map.
            self._resolve(wire_id, {"error": f"{self.where} no disponible: {exc}"})
            conn.shutdown()

    @property
    def bytes_sent(self) -> int:
        """Bytes this link put on the wire, over every connection it has had."""
        conn = self.conn
        live = conn.bytes_sent if conn is not None and not conn.closed else 0
        return self._bytes[0] + live

    @property
    def bytes_received(self) -> int:
        conn = self.conn
        live = conn.bytes_received if conn is not None and not conn.closed else 0
        return self._bytes[1] + live

    @property
    def pending(self) -> int:
        with self._pending_lock:
            return len(self._pending)

    def _resolve(self, wire_id: Any, answer: dict[str, Any]) -> bool:
        with self._pending_lock:
            entry = self._pending.pop(wire_id, None) if isinstance(wire_id, str) else None
            if not self._pending:
                self._has_pending.clear()
        if entry is None:
            return False
        self._call(entry.reply, {**answer, "id": entry.original_id})
        return True

    def _fail_all(self, reason: str) -> None:
        with self._pending_lock:
            entries = list(self._pending.values())
            self._pending.clear()
            self._has_pending.clear()
        for entry in entries:
            self._call(entry.reply, {"id": entry.original_id, "error": reason})

    def _call(self, reply: Reply, answer: dict[str, Any]) -> None:
        try:
            reply(answer)
        except Exception:  # a caller's bug must not kill the link's threads
            self.log.exception("error entregando respuesta %r", answer.get("id"))

    # -- threads ----------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._closing.is_set():
            try:
                conn = self.connect()
            except Unreachable:
                return  # only when closing: the retry window is infinite
            self._up.set()
            reason = "conexión perdida"
            try:
                self._read(conn)
            except (ConnectionClosed, Timeout, ProtocolError, CodecError, TransportError) as exc:
                reason = f"conexión con {self.where} perdida: {exc}"
            finally:
                self._up.clear()
                self._bytes[0] += conn.bytes_sent
                self._bytes[1] += conn.bytes_received
                conn.close()
            if not self._closing.is_set():
                self.log.warning("%s; reconectando", reason)
            self._fail_all(reason)

    def _read(self, conn: Connection) -> None:
        while True:
            try:
                answer = conn.recv()
            except DecodeError as exc:  # one bad reply: the stream itself is still in step
                self.log.warning("respuesta ilegible de %s: %s", self.where, exc)
                continue
            if not isinstance(answer, dict):
                self.log.warning("respuesta que no es un mapa de %s: %r", self.where, answer)
                continue
            if not self._resolve(answer.get("id"), answer):
                self.late += 1
                self.log.debug("respuesta tardía o desconocida: %r", answer.get("id"))

    def _sweep(self) -> None:
        while not self._closing.is_set():
            self._has_pending.wait()
            if self._closing.is_set():
                return
            now = time.monotonic()
            with self._pending_lock:
                expired = [k for k, e in self._pending.items() if e.deadline <= now]
            for wire_id in expired:
                self._resolve(
                    wire_id, {"error": f"{self.where} no respondió en {self.timeout:g} s"}
                )
            self._closing.wait(min(0.05, self.timeout / 4))


class Peer(Server):
    """A server that is also a client: it serves its own clients and owns a :class:`Link`.

    The link starts with the server and closes after the server's clients are gone.
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
        # A quiet upstream is fine: the deadlines live per request, in the Link.
        wire = upstream_wire or dataclasses.replace(self.wire, idle_timeout=None)
        self.upstream = Link(
            upstream[0],
            upstream[1],
            wire=wire,
            timeout=upstream_timeout,
            logger=logging.getLogger(f"ayudantia.{self.role}.upstream"),
        )

    def start(self) -> tuple[str, int]:
        self.upstream.start()
        return super().start()

    def on_stop(self) -> None:
        self.upstream.close()
