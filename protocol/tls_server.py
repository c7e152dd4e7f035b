"""The server's end of TLS on an event loop, done here so that a refusal sends its alert.

asyncio (and uvloop, which copies its ``sslproto``) drops the connection the moment a
server-side handshake fails: the fatal alert OpenSSL has just written (``unknown_ca`` for
a client certificate from another CA, ``certificate_required`` for none at all) sits in
the memory BIO and never reaches the socket, so the client reads a bare EOF where RFC 8446
§6.2 says it SHOULD read the alert, and cannot tell a refusal from a crash.

So the servers listen on plain TCP and :class:`TlsServerProtocol` runs TLS itself, with
the same :class:`ssl.SSLContext` (``SSLContext.wrap_bio``: OpenSSL over two memory BIOs,
as asyncio does): a failed handshake writes out what OpenSSL produced (the alert), ends
our half of the TCP connection and drains the peer for a moment before closing, so that
the close does not reset the alert away before the client reads it. A handshake that
succeeds hands the application protocol a :class:`TlsTransport`: the transport calls an
:class:`asyncio.Protocol` expects (write, pause/resume reading, write-buffer limits and
flow control, close with close_notify, abort, the ``ssl_object``/``peercert`` extras),
with the plaintext in and out. Like asyncio's TLS transport it cannot write EOF, and
closes once the application's ``eof_received`` does not ask to stay open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any, Final, Protocol

log = logging.getLogger("ayudantia.tls")

_READ: Final = 256 * 1024  # plaintext taken from OpenSSL per read call
_WRITE: Final = 256 * 1024  # plaintext given to OpenSSL per write call
_REFUSED_LINGER: Final = 1.0  # seconds a refused peer is drained after its alert
REFUSED_DRAIN: Final = 64 * 1024  # bytes a refused peer may send before a reset (both servers)

_HANDSHAKING, _OPEN, _REFUSED, _CLOSED = "handshaking", "open", "refused", "closed"


class HandshakeGate(Protocol):
    """The server's count of TLS connections that have not reached the application yet.

    A handshake holds a socket before the application has seen the peer (up to the
    handshake timeout, or the refused peer's drain), so a server cap that counts only the
    application's connections lets a flood of silent connects hold a socket each, up to
    the process's descriptor limit. The gate counts them: :meth:`tls_opened` says whether
    one more may start (False: the connection is dropped at once), :meth:`tls_settled`
    that one ended (handed to the application, or closed), exactly once per admitted one.
    Each call names the connection, so the server can also close the ones still
    handshaking when it stops (nobody else holds them: they are not its clients yet).
    """

    def tls_opened(self, conn: TlsServerProtocol) -> bool: ...

    def tls_settled(self, conn: TlsServerProtocol) -> None: ...


class TlsServerProtocol(asyncio.Protocol):
    """One accepted TCP connection: the TLS handshake, then the application over it.

    ``factory`` makes the application protocol once the handshake succeeded (never for a
    refused peer, as with ``create_server(ssl=...)``); ``timeout`` bounds the handshake;
    ``gate`` (a server's :class:`HandshakeGate`) counts the connection until then.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        factory: Callable[[], asyncio.Protocol],
        timeout: float | None = None,
        gate: HandshakeGate | None = None,
    ) -> None:
        self.context = context
        self.factory = factory
        self.timeout = timeout
        self.gate = gate
        self._gated = False  # counted by the gate, not settled yet
        self.state = _HANDSHAKING
        self.tcp: asyncio.Transport | None = None
        self.app: asyncio.Protocol | None = None
        self.app_transport: TlsTransport | None = None
        self.error: ssl.SSLError | None = None  # why the handshake failed, if it did
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._timer: asyncio.TimerHandle | None = None
        self._drained = 0
        self._eof = False  # TCP EOF or close_notify seen; delivered once the plaintext is
        self._reading_paused = False  # by the application
        self._read_scheduled = False

    # -- the TCP side -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tcp = transport  # type: ignore[assignment]  # uvloop's is no subclass
        if self.gate is not None:
            if not self.gate.tls_opened(self):  # the server is full: no handshake, no socket
                self.state = _CLOSED
                transport.abort()  # type: ignore[attr-defined]
                return
            self._gated = True
        if self.timeout is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.timeout, self._handshake_expired)
        self._handshake()

    def data_received(self, data: bytes) -> None:
        if self.state == _REFUSED:
            self._drained += len(data)
            if self._drained > REFUSED_DRAIN and self.tcp is not None:
                self.tcp.abort()
            return
        if self.state == _CLOSED:
            return
        self._incoming.write(data)
        if self.state == _HANDSHAKING:
            self._handshake()
        else:
            self._read()

    def eof_received(self) -> bool:
        if self.state != _OPEN:
            return False  # refused, or gone mid-handshake: close
        self._eof = True
        self._read()
        return True  # our half stays open until the application closes it

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = _CLOSED
        self._cancel_timer()
        self._settle()
        if self.app is not None:
            app, self.app = self.app, None
            app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()

    # -- the handshake ------------------------------------------------------------------

    def _handshake(self) -> None:
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self.flush()
            return
        except ssl.SSLError as exc:
            self._refuse(exc)
            return
        self._cancel_timer()
        self.state = _OPEN
        self._settle()  # from here the application counts it (a client, or a busy refusal)
        self.flush()  # the server's last flight (TLS 1.3's session tickets)
        self.app_transport = TlsTransport(self)
        self.app = self.factory()
        self.app.connection_made(self.app_transport)
        self._read()  # what the client sent right behind its Finished

    def _refuse(self, exc: ssl.SSLError) -> None:
        """Send what OpenSSL wrote (the fatal alert), end our half, drain, then close."""
        self.error = exc
        self.state = _REFUSED
        self._cancel_timer()
        tcp = self.tcp
        assert tcp is not None
        log.debug("TLS handshake refused for %s: %s", tcp.get_extra_info("peername"), exc)
        self.flush()
        if tcp.is_closing():
            return
        if tcp.can_write_eof():
            tcp.write_eof()  # FIN after the alert: the peer reads it, then its EOF
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(_REFUSED_LINGER, tcp.close)

    def _handshake_expired(self) -> None:
        self._timer = None
        if self.state == _HANDSHAKING and self.tcp is not None:
            log.debug("TLS handshake not over within %g s", self.timeout)
            self.state = _CLOSED
            self.tcp.abort()

    def _settle(self) -> None:
        if self._gated:
            self._gated = False
            assert self.gate is not None
            self.gate.tls_settled(self)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- plaintext in and out -----------------------------------------------------------

    def flush(self) -> None:
        """Hand what OpenSSL has written (records, alerts) to the TCP transport."""
        if self._outgoing.pending and self.tcp is not None and not self.tcp.is_closing():
            self.tcp.write(self._outgoing.read())

    def _read(self) -> None:
        """Decrypt what arrived and give it to the application, unless it paused reading."""
        self._read_scheduled = False
        while self.state == _OPEN and not self._reading_paused:
            try:
                data = self.sslobj.read(_READ)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify: the peer's clean end
                self._eof = True
                break
            except ssl.SSLError as exc:  # a corrupt record, or an alert from the peer
                log.debug("TLS error on an open connection: %s", exc)
                self.flush()
                assert self.tcp is not None
                self.tcp.abort()
                return
            if not data:
                self._eof = True
                break
            assert self.app is not None
            self.app.data_received(data)
        self.flush()  # a read may answer (a key update)
        if self._eof and self.state == _OPEN and not self._reading_paused:
            self._eof_to_app()

    def _eof_to_app(self) -> None:
        assert self.app is not None and self.app_transport is not None
        self._eof = False
        keep_open = self.app.eof_received()
        if not keep_open:
            self.app_transport.close()

    def write(self, data: Any) -> None:
        if self.state != _OPEN:
            return
        view = memoryview(data).cast("B")
        try:
            for start in range(0, len(view), _WRITE):
                self.sslobj.write(view[start : start + _WRITE])
        except ssl.SSLError as exc:  # TLS itself failed (the peer's alert came first)
            log.debug("TLS error writing: %s", exc)
            self.abort()
            return
        self.flush()

    def pause_reading(self) -> None:
        self._reading_paused = True
        if self.tcp is not None and not self.tcp.is_closing():
            self.tcp.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading_paused:
            return
        self._reading_paused = False
        if self.tcp is not None and not self.tcp.is_closing():
            self.tcp.resume_reading()
        if not self._read_scheduled:  # plaintext may wait in OpenSSL's buffers already
            self._read_scheduled = True
            asyncio.get_running_loop().call_soon(self._read)

    def close(self) -> None:
        """close_notify, then the TCP close (which flushes what is queued first)."""
        if self.state == _OPEN:
            self.state = _CLOSED
            with contextlib.suppress(ssl.SSLError):  # it then waits for the peer's: not us
                self.sslobj.unwrap()
            if self._outgoing.pending and self.tcp is not None and not self.tcp.is_closing():
                self.tcp.write(self._outgoing.read())
        if self.tcp is not None:
            self.tcp.close()

    def abort(self) -> None:
        self.state = _CLOSED
        if self.tcp is not None:
            self.tcp.abort()


class TlsTransport(asyncio.Transport):
    """What the application protocol holds: a transport whose bytes are TLS's plaintext."""

    def __init__(self, tls: TlsServerProtocol) -> None:
        super().__init__()
        self._tls = tls
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        tls = self._tls
        if name == "sslcontext":
            return tls.context
        if name == "ssl_object":
            return tls.sslobj
        if name == "peercert":
            return tls.sslobj.getpeercert()
        if name == "cipher":
            return tls.sslobj.cipher()
        if name == "compression":
            return tls.sslobj.compression()
        assert tls.tcp is not None
        return tls.tcp.get_extra_info(name, default)

    def is_closing(self) -> bool:
        tcp = self._tls.tcp
        return self._closing or tcp is None or tcp.is_closing()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._tls.close()

    def abort(self) -> None:
        self._closing = True
        self._tls.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._tls.app = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._tls.app  # type: ignore[return-value]

    def is_reading(self) -> bool:
        return not self._tls._reading_paused and not self.is_closing()

    def pause_reading(self) -> None:
        self._tls.pause_reading()

    def resume_reading(self) -> None:
        self._tls.resume_reading()

    def write(self, data: Any) -> None:
        if not self._closing:
            self._tls.write(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return False  # TLS ends with close_notify and a close, as asyncio's transport does

    def write_eof(self) -> None:
        raise NotImplementedError("a TLS transport cannot write EOF; close() it")

    def get_write_buffer_size(self) -> int:
        tcp = self._tls.tcp
        return 0 if tcp is None else tcp.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        tcp = self._tls.tcp
        return (0, 0) if tcp is None else tcp.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        assert self._tls.tcp is not None
        self._tls.tcp.set_write_buffer_limits(high, low)
