"""How a role speaks: codec, chunking, limits, key and timeouts, shared by servers and clients."""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protocol.aio import Limits, Speech
from protocol.codecs import DEFAULT_ACCEPT, accept_for
from protocol.encodings import Compression, compression_for
from protocol.errors import Timeout, TlsFailed
from protocol.framing import DEFAULT_MAX_MESSAGE
from protocol.signing import Side
from protocol.tls import HANDSHAKE_TIMEOUT as TLS_HANDSHAKE_TIMEOUT
from protocol.tls import TlsSettings, wrap_client
from protocol.tls_server import HandshakeGate, TlsServerProtocol
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
    key: bytes | None = field(default=None, repr=False)  # HMAC key: sign and require signed
    message_timeout: float | None = 120.0  # a whole message from its first byte (drip feeds)
    send_timeout: float | None = 10.0  # a peer that reads nothing for this long is dropped
    compress: str = "none"  # content encoding of frames sent (--compress)
    compress_level: int | None = None  # None: the encoding's default level

    @property
    def compression(self) -> Compression | None:
        """What frames sent are compressed with (None: identity)."""
        return compression_for(self.compress, self.compress_level)

    tls: TlsSettings | None = None  # --tls-cert/--tls-key/--tls-ca (protocol/tls.py)

    @classmethod
    def for_codec(cls, codec: str = "json", **kwargs: object) -> WireSettings:
        """Settings whose accept-list follows ``codec`` (choosing pickle opts in, loudly)."""
        return cls(codec=codec, accept=accept_for(codec), **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> WireSettings:
        """Settings from the resolved ``wire_options()`` of a command (missing keys: defaults;
        a timeout resolved to None means no limit)."""
        kwargs: dict[str, Any] = {}
        for name in (
            "chunk_size",
            "max_message",
            "idle_timeout",
            "read_timeout",
            "message_timeout",
            "send_timeout",
            "compress",
            "compress_level",
        ):
            if name in settings and (
                settings[name] is not None or name.endswith("_timeout") or name == "compress_level"
            ):
                kwargs[name] = settings[name]
        if settings.get("key"):
            kwargs["key"] = str(settings["key"]).encode("utf-8")
        kwargs["tls"] = tls_settings(settings)
        return cls.for_codec(settings.get("codec", "json"), **kwargs)

    def wrap(self, sock: socket.socket, side: Side = "client") -> Connection:
        """A blocking connection on ``sock`` (``side``: who connected, for signed frames)."""
        return Connection(
            sock,
            codec=self.codec,
            chunk_size=self.chunk_size,
            max_message=self.max_message,
            accept=self.accept,
            idle_timeout=self.idle_timeout,
            read_timeout=self.read_timeout,
            key=self.key,
            message_timeout=self.message_timeout,
            send_timeout=self.send_timeout,
            side=side,
            compression=self.compression,
        )

    def speech(self) -> Speech:
        """What the event-loop front-end needs to speak like this."""
        return Speech(
            codec=self.codec,
            chunk_size=self.chunk_size,
            accept=self.accept,
            key=self.key,
            compression=self.compression,
        )

    def limits(self, **overrides: Any) -> Limits:
        """The event-loop front-end's limits and deadlines for these settings."""
        values: dict[str, Any] = {
            "max_message": self.max_message,
            "idle_timeout": self.idle_timeout,
            "read_timeout": self.read_timeout,
            "message_timeout": self.message_timeout,
            "send_timeout": self.send_timeout,
        }
        values.update(overrides)
        return Limits(**values)

    def server_ssl(self) -> ssl.SSLContext | None:
        """The context a server listens with: TLS when it has a certificate.

        A listener given TLS files but no certificate (``--tls-ca`` alone) is refused: it
        would serve plain TCP while its operator believes the class is closed.
        """
        if self.tls is None:
            return None
        if not self.tls.serves:
            raise TlsFailed(
                "this role listens: --tls-ca alone would serve plain TCP; give it its "
                "certificate too (--tls-cert and --tls-key)"
            )
        return self.tls.server_context

    @property
    def tls_on(self) -> bool:
        """Whether this side connects with TLS (for messages that say which settings failed)."""
        return self.tls is not None and self.tls.connects

    def client_ssl(self) -> ssl.SSLContext | None:
        """The context a client connects with: TLS when it has a CA or a certificate."""
        return self.tls.client_context if self.tls is not None and self.tls.connects else None

    def connect(self, host: str, port: int, *, connect_timeout: float = 5.0) -> Connection:
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except TimeoutError as exc:
            raise Timeout(f"connecting to {host}:{port} timed out") from exc
        ctx = self.client_ssl()
        if ctx is not None:
            return self.wrap(wrap_client(sock, ctx, host, connect_timeout))  # type: ignore[arg-type]
        sock.settimeout(None)
        return self.wrap(sock)


def server_protocol_factory(
    wire: WireSettings,
    factory: Callable[[], asyncio.Protocol],
    gate: HandshakeGate | None = None,
) -> Callable[[], asyncio.Protocol]:
    """What ``create_server`` gets: ``factory`` itself on plain TCP; with a certificate,
    TLS run by :class:`~protocol.tls_server.TlsServerProtocol` in front of it, not by
    asyncio's ``ssl=``, which drops a refused client without its TLS alert. ``gate``
    counts the handshakes in progress against the server's cap."""
    ctx = wire.server_ssl()
    if ctx is None:
        return factory
    return functools.partial(TlsServerProtocol, ctx, factory, TLS_HANDSHAKE_TIMEOUT, gate)


def tls_client_kwargs(wire: WireSettings, host: str) -> dict[str, Any]:
    """asyncio ``create_connection`` arguments for TLS: the context and the name to verify."""
    ctx = wire.client_ssl()
    if ctx is None:
        return {}
    return {"ssl": ctx, "server_hostname": host, "ssl_handshake_timeout": TLS_HANDSHAKE_TIMEOUT}


def tls_settings(settings: dict[str, Any]) -> TlsSettings | None:
    """The ``--tls-*`` settings of a command, or None when it has none."""
    tls = TlsSettings(settings.get("tls_cert"), settings.get("tls_key"), settings.get("tls_ca"))
    if tls.key and not tls.cert:  # else it was silently ignored: no TLS at all
        raise TlsFailed("--tls-key needs --tls-cert, the certificate it is the key of")
    return tls if tls.cert or tls.ca else None
