"""The blocking TCP client every client role builds on: connect with retries and backoff.

Servers live on the event loop (:mod:`roles.base`); clients and scripts (the Estudiante,
``quijote``, tests, the docs' examples) stay blocking, over the same sans-IO core.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator

from protocol.errors import MessageTooLarge, Refused, TransportError
from protocol.transport import Connection
from roles.wire import WireSettings


class Unreachable(TransportError):
    """A client gave up: every attempt within its retry window failed, or the server kept
    closing the connection before it answered anything (it refuses our settings)."""


class Client:
    """A TCP client that connects with retries and exponential backoff.

    :meth:`connect` tries until ``retry_for`` seconds have passed (``math.inf``: until
    :meth:`close`), sleeping ``backoff``, then twice that, up to ``max_backoff``, between
    attempts, each sleep shortened by a random jitter so many clients do not retry in step;
    :meth:`reconnect` drops the current connection and does the same, which is what a
    client does after its server restarts.

    A connection that ends before the server answered anything is a failure too: a server
    that refuses our codec, size or key accepts the TCP connection and closes it at the
    first header. :meth:`session_ended` counts those, backs off before the next attempt,
    and gives up after ``max_failures`` in a row, so a refused client never storms its
    server. A refusal frame that says retrying cannot help (:class:`Refused`, permanent)
    stops it at once.
    """

    role = "client"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        wire: WireSettings | None = None,
        connect_timeout: float = 2.0,
        retry_for: float = 10.0,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        max_failures: int = 5,
        logger: logging.Logger | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.wire = wire or WireSettings()
        self.connect_timeout = connect_timeout
        self.retry_for = retry_for
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_failures = max_failures
        self.failures = 0  # sessions in a row that ended before any reply
        self.log = logger or logging.getLogger(f"ayudantia.{self.role}")
        self.conn: Connection | None = None
        self.connections = 0  # successful connects, so a reconnect is visible
        self._closing = threading.Event()

    def connect(self, retry_for: float | None = None) -> Connection:
        """A new connection to the server, retrying with backoff; :class:`Unreachable` if not."""
        window = self.retry_for if retry_for is None else retry_for
        deadline = time.monotonic() + window
        delay = self.backoff
        attempts = 0
        while True:
            if self._closing.is_set():
                raise Unreachable(f"{self.role}: closed while connecting to {self.where}")
            attempts += 1
            try:
                conn = self.wire.connect(self.host, self.port, connect_timeout=self.connect_timeout)
            except OSError as exc:
                if time.monotonic() + delay > deadline:
                    raise Unreachable(
                        f"cannot connect to {self.where} after {attempts} attempts: {exc}"
                    ) from exc
                if attempts == 1 or attempts % 10 == 0:
                    self.log.info("%s no disponible (%s); reintentando", self.where, exc)
                self._closing.wait(jittered(delay))
                delay = min(delay * 2, self.max_backoff)
                continue
            self.conn = conn
            self.connections += 1
            if self.connections > 1 or attempts > 1:
                self.log.info("conectado a %s (intento %d)", self.where, attempts)
            return conn

    def session_ended(self, conn: Connection, exc: BaseException) -> None:
        """After a connection ended with ``exc``: raise if retrying cannot help, else wait.

        Raises ``exc`` itself for a permanent :class:`Refused`, and :class:`Unreachable`
        after ``max_failures`` sessions in a row that ended with no reply. Otherwise sleeps
        a backoff that grows with those failures (at least ``backoff``, jittered).
        """
        if isinstance(exc, Refused) and exc.permanent:
            raise exc
        if isinstance(exc, MessageTooLarge):  # our own limit: the next answer is as large
            raise Unreachable(
                f"an answer from {self.where} is larger than this side accepts ({exc}); "
                "raise --max-message"
            ) from exc
        self.failures = 0 if conn.messages_received else self.failures + 1
        if self.failures >= self.max_failures:
            if isinstance(exc, Refused):  # a transient refusal (busy) that never passed
                raise Unreachable(
                    f"{self.where} refused us {self.failures} times in a row ({exc}); "
                    "try again later"
                )
            raise Unreachable(
                f"{self.where} closed the connection {self.failures} times in a row before "
                f"answering ({exc}); it probably refuses these settings (codec "
                f"{self.wire.codec}, max message {self.wire.max_message} B, "
                f"{'a' if self.wire.key else 'no'} key, "
                f"{'TLS' if self.wire.tls_on else 'no TLS: a TLS server needs --tls-ca'}): "
                "see its log"
            )
        self._closing.wait(jittered(min(self.backoff * 2**self.failures, self.max_backoff)))

    def reconnect(self, retry_for: float | None = None) -> Connection:
        if self.conn is not None:
            self.conn.close()
        return self.connect(retry_for)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def close(self) -> None:
        self._closing.set()
        if self.conn is not None:
            self.conn.close()


def jittered(delay: float) -> float:
    """``delay`` shortened by up to half, at random: clients that failed together spread out."""
    return delay * random.uniform(0.5, 1.0)


def backoff_delays(first: float, cap: float) -> Iterator[float]:
    """Exponential backoff for a loop that sleeps itself: ``first`` doubling up to ``cap``,
    each delay :func:`jittered`."""
    delay = first
    while True:
        yield jittered(delay)
        delay = min(delay * 2, cap)
