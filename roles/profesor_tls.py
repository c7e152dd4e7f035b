"""The Profesor over HTTPS: the same Flask app, served by cheroot with the class's TLS policy.

Why cheroot: waitress (the plain-HTTP server) has no TLS, by design. cheroot is CherryPy's
WSGI server, maintained, pure Python, with a worker thread pool like waitress's, and its
TLS goes through the standard library's ``ssl`` with a context we give it: the very
:meth:`~protocol.tls.TlsSettings.server_context` every framed role uses (TLS >= 1.2, mutual
TLS with ``--tls-ca``). Terminating TLS in front (a proxy to waitress) would add a hop, a
process or a thread per connection to run, and would hide the client's certificate from the
app; one server that speaks TLS itself is less to get wrong.

One change to cheroot's adapter: cheroot runs ``wrap`` (the TLS handshake) on its one
accepting thread, so a client that connected and said nothing held every other client off
for the socket timeout, and one that dripped its hello a byte at a time, indefinitely.
:class:`DeferredHandshakeAdapter` leaves the handshake to the worker thread's first read
(:class:`HandshakeFirst` runs it there, under the connection's timeout, and a failed one
is one log line, not a traceback): a silent client ties up at most one worker, as a silent
plain-HTTP client does.

The projector. With ``--tls-ca`` the Profesor used to refuse any client without the class's
certificate in the handshake, so a browser (which has none) could not open ``/panel``. Now
the handshake *asks* for a certificate (``CERT_OPTIONAL``: one that is shown must still be
signed by the class's CA, or the handshake fails), the connection records whether one was
(``SSL_CLIENT_VERIFY`` in the WSGI environment, mod_ssl's name), and
:func:`require_client_certificate` lets only the panel's reads through without one: every
other request, and every write, still needs the certificate (and, with a key, the
signature). ``--private`` keeps the old handshake: no certificate, no connection.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from protocol.tls import HANDSHAKE_TIMEOUT as TLS_HANDSHAKE_TIMEOUT
from protocol.tls import TlsSettings
from protocol.tls_server import REFUSED_DRAIN  # the framed roles drain a refused peer alike
from roles.signals import signals_interrupt

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("ayudantia.profesor")
REQUEST_DEADLINE = 10.0  # seconds a client has for its TLS handshake, then for each request
CLIENT_VERIFY = "SSL_CLIENT_VERIFY"  # WSGI environ: "SUCCESS" when a CA-signed cert was shown
READ_METHODS = frozenset({"GET", "HEAD"})
PANEL_PATHS = ("/panel", "/estado")  # and the panel's own files, /panel/<name>
REFUSED_LINGER = 0.5  # seconds a refused client is drained after its TLS alert


def is_panel_read(method: str, path: str) -> bool:
    """Whether a request only reads the panel (its page, its files, the class's state)."""
    return method in READ_METHODS and (path in PANEL_PATHS or path.startswith("/panel/"))


def require_client_certificate(app: Flask) -> None:
    """Refuse (403) every request made without the class's client certificate except the
    panel's reads. First of the app's checks: a write with no certificate is refused
    before its signature is looked at (so it cannot spend a nonce either)."""
    from flask import jsonify, request

    def check() -> Any:
        if request.environ.get(CLIENT_VERIFY) == "SUCCESS":
            return None
        if is_panel_read(request.method, request.path):
            return None
        response = jsonify(
            {
                "error": "this request needs the class's client certificate (without one "
                "only GET /panel and GET /estado are served)"
            }
        )
        response.status_code = 403
        return response

    app.before_request_funcs.setdefault(None, []).insert(0, check)


def _adapter_class() -> type:
    from cheroot.ssl.builtin import BuiltinSSLAdapter

    class DeferredHandshakeAdapter(BuiltinSSLAdapter):  # type: ignore[misc]
        """cheroot's builtin adapter, with the TLS handshake moved off the accept thread."""

        def wrap(self, sock: Any) -> tuple[Any, dict[str, str]]:
            tls = self.context.wrap_socket(sock, do_handshake_on_connect=False, server_side=True)
            # The handshake has not run yet: no cipher to report; the app needs none.
            return tls, {"wsgi.url_scheme": "https", "HTTPS": "on"}

    return DeferredHandshakeAdapter


class Deadlines:
    """Shuts the socket of a request (its TLS handshake included) not over by its deadline.

    cheroot reads a request on a worker thread, and its timeout restarts with every byte:
    as many clients as workers, each dripping a header line, held the HTTPS Profesor
    (waitress, for plain HTTP, reads on its event loop and has no such problem). One
    thread, one check per ``tick``; a request the Profesor answers takes milliseconds.
    """

    def __init__(self, limit: float = REQUEST_DEADLINE, tick: float = 0.5) -> None:
        self.limit = limit
        self.tick = tick
        self._due: dict[object, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="profesor-deadlines", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def watch(self, sock: Any) -> Iterator[None]:
        token = object()
        with self._lock:
            self._due[token] = (time.monotonic() + self.limit, sock)
        try:
            yield
        finally:
            with self._lock:
                self._due.pop(token, None)

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            now = time.monotonic()
            with self._lock:
                late = [token for token, (due, _) in self._due.items() if due < now]
                socks = [self._due.pop(token)[1] for token in late]
            for sock in socks:
                log.info("cliente sin terminar su pedido en %g s: desconectado", self.limit)
                with contextlib.suppress(OSError):  # the plain socket's: no TLS alert to send
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)


def drain_after_alert(sock: socket.socket) -> None:
    """After a refused handshake: end our half, then read and drop what the client sends.

    OpenSSL has written its fatal alert (RFC 8446 §6.2) to the socket. Under TLS 1.3 the
    client finishes its side of the handshake first and may already be sending a request;
    closing with those bytes unread would answer them with a TCP reset, and the reset
    would destroy the alert before the client reads it. So: FIN, then drain until the
    client closes, for a moment and a few kilobytes at most (this is a worker thread).
    """
    with contextlib.suppress(OSError):  # the plain socket's calls: TLS is over
        socket.socket.shutdown(sock, socket.SHUT_WR)
        deadline = time.monotonic() + REFUSED_LINGER
        drained = 0
        while drained < REFUSED_DRAIN and (left := deadline - time.monotonic()) > 0:
            socket.socket.settimeout(sock, left)
            data = socket.socket.recv(sock, 4096)
            if not data:
                break
            drained += len(data)


def _request_class() -> type:
    from cheroot.server import HeaderReader, HTTPRequest

    class FoldHost(dict):  # type: ignore[type-arg]
        """Headers as cheroot stores them, but a second Host joins the first with a comma."""

        def __setitem__(self, name: bytes, value: bytes) -> None:
            if name == b"Host" and name in self:
                value = self[name] + b", " + value
            super().__setitem__(name, value)

    class OneHostHeaderReader(HeaderReader):  # type: ignore[misc]
        """cheroot keeps the last of two Host headers, so the app's RFC 9112 §3.2 check
        (one Host, else 400: roles/profesor.py) saw one; waitress joins them with a comma,
        which no host contains. Joined here too, so HTTPS answers 400 as HTTP does."""

        def __call__(self, rfile: Any, hdict: dict[bytes, bytes] | None = None) -> Any:
            folded = super().__call__(rfile, FoldHost())
            if hdict is None:
                return dict(folded)
            hdict.update(folded)
            return hdict

    class OneHostRequest(HTTPRequest):  # type: ignore[misc]
        header_reader = OneHostHeaderReader()

    return OneHostRequest


def _connection_class(deadlines: Deadlines) -> type:
    from cheroot.server import HTTPConnection

    class HandshakeFirst(HTTPConnection):  # type: ignore[misc]
        """A connection that completes the deferred TLS handshake before its first request,
        and has each request (the handshake included) over by a deadline."""

        handshaken = False
        RequestHandlerClass = _request_class()

        def communicate(self) -> bool:
            with deadlines.watch(self.socket):
                return self._communicate()

        def _communicate(self) -> bool:
            if not self.handshaken:
                timeout = self.socket.gettimeout()
                try:  # CPython's do_handshake takes the timeout as one deadline for it all
                    self.socket.settimeout(TLS_HANDSHAKE_TIMEOUT)
                    self.socket.do_handshake()
                except (ssl.SSLError, OSError) as exc:  # no certificate, plain HTTP, a drop
                    log.info("TLS con un cliente fallido: %s", exc)
                    if isinstance(exc, ssl.SSLError):
                        drain_after_alert(self.socket)
                    return False
                self.socket.settimeout(timeout)
                self.handshaken = True
                shown = self.socket.getpeercert(binary_form=True) is not None
                verified = "SUCCESS" if shown else "NONE"  # a shown one passed CA checks
                self.ssl_env = {**(self.ssl_env or {}), CLIENT_VERIFY: verified}
            return bool(super().communicate())

    return HandshakeFirst


def serve_tls(
    app: Flask,
    host: str,
    port: int,
    *,
    tls: TlsSettings,
    threads: int = 8,
    ready: Any = None,
    private: bool = False,
) -> int:
    """Serve ``app`` over HTTPS until SIGINT/SIGTERM; ``ready(host, port)`` once it listens.

    With a CA (mutual TLS) and not ``private``, a browser without a client certificate may
    read the panel and nothing else (:func:`require_client_certificate`); ``private``
    refuses it in the handshake, as every framed role does.
    """
    from cheroot import wsgi

    if tls.cert is None:
        raise ValueError("HTTPS needs --tls-cert and --tls-key")
    adapter = _adapter_class()(tls.cert, tls.key)
    context = tls.server_context  # our policy, not cheroot's default context
    if tls.ca is not None and not private:
        context.verify_mode = ssl.CERT_OPTIONAL  # a shown certificate is still verified
        require_client_certificate(app)
    adapter.context = context
    server = wsgi.Server((host, port), app, numthreads=threads, server_name="profesor", timeout=30)
    server.ssl_adapter = adapter
    deadlines = Deadlines()
    server.ConnectionClass = _connection_class(deadlines)
    server.prepare()  # binds: port 0 is a real port from here on
    bound_host, bound_port = server.bind_addr[:2]
    log.info("Profesor escuchando en https://%s:%s", bound_host, bound_port)

    try:
        with signals_interrupt():
            try:
                if ready is not None:
                    ready(bound_host, bound_port)
                server.serve()
            except KeyboardInterrupt:
                pass
    finally:
        server.stop()
        deadlines.close()
        libro = app.extensions.get("libro")
        if libro is not None:
            libro.close()
        log.info("Profesor detenido")
    return 0
