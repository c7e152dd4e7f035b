"""The Profesor over HTTPS: the same Flask app, served by cheroot with the class's TLS policy.

Why cheroot: waitress (the plain-HTTP server) has no TLS, by design. cheroot is CherryPy's
WSGI server, maintained, pure Python, with a worker thread pool like waitress's, and its
TLS goes through the standard library's ``ssl`` with a context we give it: the very
:meth:`~protocol.tls.TlsSettings.server_context` every framed role uses (TLS >= 1.2, mutual
TLS with ``--tls-ca``). Terminating TLS in front (a proxy to waitress) would add a hop, a
process or a thread per connection to run, and would hide the client's certificate from the
app; one server that speaks TLS itself is less to get wrong.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Any

from protocol.tls import TlsSettings

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("ayudantia.profesor")


def serve_tls(
    app: Flask, host: str, port: int, *, tls: TlsSettings, threads: int = 8, ready: Any = None
) -> int:
    """Serve ``app`` over HTTPS until SIGINT/SIGTERM; ``ready(host, port)`` once it listens."""
    from cheroot import wsgi
    from cheroot.ssl.builtin import BuiltinSSLAdapter

    if tls.cert is None:
        raise ValueError("HTTPS needs --tls-cert and --tls-key")
    adapter = BuiltinSSLAdapter(tls.cert, tls.key)
    adapter.context = tls.server_context  # our policy, not cheroot's default context
    server = wsgi.Server((host, port), app, numthreads=threads, server_name="profesor", timeout=30)
    server.ssl_adapter = adapter
    server.prepare()  # binds: port 0 is a real port from here on
    bound_host, bound_port = server.bind_addr[:2]
    log.info("Profesor escuchando en https://%s:%s", bound_host, bound_port)

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if ready is not None:
            ready(bound_host, bound_port)
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
        libro = app.extensions.get("libro")
        if libro is not None:
            libro.close()
        log.info("Profesor detenido")
    return 0
