"""The machinery every role shares, so each role file holds only what that role decides.

The notebook asks for it ("se puede reducir considerablemente el código utilizando de forma
correcta la herencia"): its three socket classes repeat bind/listen/accept/thread code and
each gets a different part wrong. Here a :class:`Server` owns the listening socket, an
accept loop that sleeps in ``select`` (never spins), one thread per client up to a cap,
and a stop that closes every socket and joins every thread; subclasses write ``handle``.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType

from protocol.codecs import DEFAULT_ACCEPT, accept_for
from protocol.errors import AyudantiaError, CodecError, ConnectionClosed, ProtocolError, Timeout
from protocol.framing import DEFAULT_MAX_MESSAGE
from protocol.transport import Connection


@dataclass(frozen=True)
class WireSettings:
    """How a role speaks: what it sends, what it accepts, how long it waits."""

    codec: str = "json"
    chunk_size: int = 0
    max_message: int = DEFAULT_MAX_MESSAGE
    accept: frozenset[str] = field(default_factory=lambda: DEFAULT_ACCEPT)
    idle_timeout: float | None = 300.0  # between messages
    read_timeout: float | None = 10.0  # within a message: drops half-sent headers

    @classmethod
    def for_codec(cls, codec: str = "json", **kwargs: object) -> WireSettings:
        """Settings whose accept-list follows ``codec`` (choosing pickle opts in, loudly)."""
        return cls(codec=codec, accept=accept_for(codec), **kwargs)  # type: ignore[arg-type]

    def wrap(self, sock: socket.socket) -> Connection:
        return Connection(
            sock,
            codec=self.codec,
            chunk_size=self.chunk_size,
            max_message=self.max_message,
            accept=self.accept,
            idle_timeout=self.idle_timeout,
            read_timeout=self.read_timeout,
        )

    def connect(self, host: str, port: int, *, connect_timeout: float = 5.0) -> Connection:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
        sock.settimeout(None)
        return self.wrap(sock)


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


@contextlib.contextmanager
def handle_signals() -> Iterator[threading.Event]:
    """SIGINT and SIGTERM set an event instead of raising in whatever code was running."""
    requested = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        requested.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
