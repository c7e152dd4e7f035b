"""TLS for every hop, with the standard library's ``ssl``: contexts, and a blocking socket.

Policy, the same everywhere: TLS 1.2 at least (1.3 is what two current ends agree on),
clients verify the server's certificate and its name (``check_hostname``; an IP address is
checked against the certificate's IP SANs), and a server given a CA (``--tls-ca``) asks for
a client certificate and refuses a peer without one signed by it (mutual TLS).

The event-loop front-end takes an :class:`ssl.SSLContext` as asyncio does
(``create_server(ssl=...)``, ``create_connection(ssl=..., server_hostname=...)``). The
blocking :class:`~protocol.transport.Connection` is written against a socket's
non-blocking calls (``sendmsg`` and ``recv_into`` with ``MSG_DONTWAIT``, ``poll``);
:class:`TlsSocket` gives it exactly those over an :class:`ssl.SSLSocket`.
"""

from __future__ import annotations

import contextlib
import functools
import select
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Final

from protocol.errors import TlsFailed

_RECORD: Final = 16 * 1024  # one TLS record's worth of plaintext per SSL_write
_DONTWAIT: Final = socket.MSG_DONTWAIT
HANDSHAKE_TIMEOUT: Final = 10.0


@dataclass(frozen=True)
class TlsSettings:
    """``--tls-cert``, ``--tls-key``, ``--tls-ca``: file paths (PEM), each optional.

    A server speaks TLS when it has a certificate (and asks clients for theirs when it has
    a CA); a client speaks TLS when it has a CA to trust or a certificate to show.
    """

    cert: str | None = None
    key: str | None = None
    ca: str | None = None

    @property
    def serves(self) -> bool:
        return self.cert is not None

    @property
    def connects(self) -> bool:
        return self.ca is not None or self.cert is not None

    @functools.cached_property
    def server_context(self) -> ssl.SSLContext:
        if self.cert is None:
            raise ValueError("a TLS server needs a certificate (--tls-cert) and its key")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        with self._loading():
            ctx.load_cert_chain(self.cert, self.key)
            if self.ca is not None:
                ctx.load_verify_locations(cafile=self.ca)
                ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS
        return ctx

    @functools.cached_property
    def client_context(self) -> ssl.SSLContext:
        with self._loading():
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.cert is not None:
                ctx.load_cert_chain(self.cert, self.key)
        return ctx

    @contextlib.contextmanager
    def _loading(self) -> Any:
        """A certificate, key or CA file that does not load: one typed line, not ssl's."""
        try:
            yield
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or exc
            raise TlsFailed(
                f"cannot load the TLS files (--tls-cert {self.cert}, --tls-key {self.key}, "
                f"--tls-ca {self.ca}): {reason}"
            ) from None

    @property
    def requests_verify(self) -> str | bool:
        """What ``requests`` verifies an HTTPS server against: our CA, or the system's."""
        return self.ca if self.ca is not None else True

    @property
    def requests_cert(self) -> tuple[str, str] | str | None:
        """The client certificate ``requests`` shows (mutual TLS), if any."""
        if self.cert is None:
            return None
        return (self.cert, self.key) if self.key else self.cert


def failure(exc: BaseException, where: str) -> TlsFailed:
    """One line for a TLS error: what failed with whom, in the library's words."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TlsFailed(
            f"TLS with {where} failed: certificate verify failed: {exc.verify_message}"
        )
    reason = getattr(exc, "reason", None) or exc
    hint = _ALERT_HINTS.get(str(reason), "")
    return TlsFailed(f"TLS with {where} failed: {reason}{hint}")


# The fatal alerts a server of ours sends when it refuses a client (protocol/tls_server.py):
# what each most likely means for the one who reads the error.
_ALERT_HINTS: Final = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": (
        " (the server requires a client certificate: --tls-cert/--tls-key, signed by its CA)"
    ),
    "TLSV1_ALERT_UNKNOWN_CA": (
        " (the server does not trust the CA that signed our client certificate: "
        "--tls-cert from another class?)"
    ),
}


def wrap_client(
    sock: socket.socket, ctx: ssl.SSLContext, host: str, timeout: float | None = HANDSHAKE_TIMEOUT
) -> TlsSocket:
    """TLS over a connected socket, handshake done and the server's name verified."""
    sock.settimeout(timeout)
    try:
        tls = ctx.wrap_socket(sock, server_hostname=host)
        where = "{}:{}".format(*tls.getpeername()[:2])
    except ssl.SSLError as exc:
        sock.close()
        raise failure(exc, host) from None
    except TimeoutError:
        sock.close()
        raise TlsFailed(f"TLS with {host} failed: no handshake within {timeout:g} s") from None
    tls.setblocking(False)
    return TlsSocket(tls, where)


class TlsSocket:
    """The non-blocking socket calls :class:`~protocol.transport.Connection` makes, over TLS.

    ``MSG_DONTWAIT`` keeps its meaning (``BlockingIOError`` when TLS must wait); without it
    a call waits, as a blocking socket's would. Writes go one TLS record at a time, so a
    write that must wait is retried with the same bytes, as OpenSSL requires: the caller
    resends from the first byte not reported as sent. ``pending`` tells the reader that
    decrypted bytes wait in TLS's buffer while the socket itself polls empty.
    """

    def __init__(self, tls: ssl.SSLSocket, where: str = "the peer") -> None:
        self.tls = tls
        self.where = where
        self.family = tls.family
        self.received = 0
        self._peeked = bytearray()  # read by a MSG_PEEK, not yet by recv_into

    def fileno(self) -> int:
        return self.tls.fileno()

    def pending(self) -> int:
        return self.tls.pending() + len(self._peeked)

    def settimeout(self, timeout: float | None) -> None:
        """Ignored: the TLS socket stays non-blocking; the Connection keeps its deadlines."""

    def setsockopt(self, *args: Any) -> None:
        self.tls.setsockopt(*args)

    def getpeername(self) -> Any:
        return self.tls.getpeername()

    def version(self) -> str | None:
        return self.tls.version()

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None) -> int:
        data = memoryview(b"".join(bytes(b) if not isinstance(b, bytes) else b for b in buffers))
        sent = 0
        while sent < len(data):
            piece = data[sent : sent + _RECORD]
            try:
                sent += self.tls.send(piece)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError) as want:
                if flags & _DONTWAIT:
                    if sent:
                        return sent
                    raise BlockingIOError("TLS must wait to write") from None
                self._wait(want)
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
                raise BrokenPipeError(f"the peer closed the TLS connection: {exc}") from None
            except ssl.SSLError as exc:
                raise failure(exc, self.where) from None
        return sent

    def sendall(self, data: bytes) -> None:
        self.sendmsg([data])

    def recv_into(self, view: Any, nbytes: int = 0, flags: int = 0) -> int:
        if self._peeked:
            k = min(nbytes or len(view), len(self._peeked))
            view[:k] = self._peeked[:k]
            del self._peeked[:k]
            self.received += k
            return k
        while True:
            try:
                n = self.tls.recv_into(view, nbytes)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as want:
                if flags & _DONTWAIT:
                    raise BlockingIOError("TLS must wait to read") from None
                self._wait(want)
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                n = 0  # the peer closed (with or without close_notify): a close
            except ssl.SSLError as exc:
                raise failure(exc, self.where) from None
            if n == 0 and not self.received:
                # A server that refuses our certificate (or its absence) after TLS 1.3's
                # handshake without an alert (ours send one) just closes: say what that
                # most likely means.
                raise TlsFailed(
                    f"TLS with {self.where} failed: the server closed the connection "
                    "before sending a byte (does it require a client certificate, "
                    "--tls-cert/--tls-key, signed by its CA?)"
                )
            self.received += n
            return n

    def recv(self, n: int, flags: int = 0) -> bytes:
        if flags & socket.MSG_PEEK:  # what has arrived, kept for the next recv_into
            # Every record that has arrived, up to n: one SSL read returns one record at
            # most, and a refusal behind unread answers is in a later record than they.
            with contextlib.suppress(ssl.SSLError):  # no more to read now (or the end)
                while len(self._peeked) < n:
                    more = self.tls.recv(n - len(self._peeked))
                    if not more:
                        break
                    self._peeked += more
            return bytes(self._peeked[:n])
        buf = bytearray(n)
        got = self.recv_into(memoryview(buf), n, flags)
        return bytes(buf[:got])

    def _wait(self, want: BaseException) -> None:
        event = select.POLLOUT if isinstance(want, ssl.SSLWantWriteError) else select.POLLIN
        poller = select.poll()
        poller.register(self.tls, event)
        poller.poll()

    def shutdown(self, how: int) -> None:
        # The plain socket's: SSLSocket.shutdown would drop TLS and read ciphertext after.
        socket.socket.shutdown(self.tls, how)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.tls.close()
