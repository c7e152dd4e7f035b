"""Every error the protocol layer raises, in one place.

Callers catch families, not library exceptions: ``ProtocolError`` means the byte stream
broke the wire format and the connection is dead; ``CodecError`` means a payload (or a
codec name) is unusable; ``TransportError`` means the socket itself gave up. Nothing from
json, msgpack or pickle ever escapes these wrappers, so a server can tell a hostile peer
from a bug in its own code.
"""

from __future__ import annotations


class AyudantiaError(Exception):
    """Base of every error this project raises on purpose."""


# --- codecs ---------------------------------------------------------------------------


class CodecError(AyudantiaError):
    """A payload or a codec choice is unusable."""


class _NotRegistered(LookupError):
    """A key (name or wire id) a registry does not have, and what it has instead.

    Shared by codecs and content encodings, so both say it the same way and keep the key and
    the known names for a refusal line (protocol.refusals) to quote.
    """

    what_kind = "key"

    def __init__(self, key: str | int, known: list[str]) -> None:
        self.key = key
        self.known = known
        what = f"id {key}" if isinstance(key, int) else repr(key)
        super().__init__(f"unknown {self.what_kind} {what}; available: {', '.join(known)}")


class UnknownCodec(CodecError, _NotRegistered):
    """No codec is registered under that name or wire id."""

    what_kind = "codec"


class CodecClash(CodecError, ValueError):
    """Registering a codec whose name or id is taken, or outside the allowed id range."""


class EncodeError(CodecError, ValueError):
    """The object cannot be represented in the chosen codec."""

    def __init__(self, codec: str, reason: str) -> None:
        self.codec = codec
        super().__init__(f"{codec}: cannot encode: {reason}")


class DecodeError(CodecError, ValueError):
    """A payload is malformed for its codec (the peer sent garbage or lied)."""

    def __init__(self, codec: str, reason: str) -> None:
        self.codec = codec
        super().__init__(f"{codec}: malformed payload: {reason}")


class ContentDisallowed(CodecError):
    """A frame arrived in a codec this receiver does not accept; its payload was not decoded."""

    def __init__(self, codec: str, accepted: frozenset[str] | set[str]) -> None:
        self.codec = codec
        self.accepted = frozenset(accepted)
        super().__init__(
            f"refusing {codec!r} content (accepted: {', '.join(sorted(accepted))}); "
            + (
                "decoding pickle from a peer lets it run code on this machine"
                if codec == "pickle"
                else ""
            )
        )


# --- framing --------------------------------------------------------------------------


class ProtocolError(AyudantiaError):
    """The byte stream violates the wire format. Sticky: the connection is dead after one."""


class BadHeader(ProtocolError):
    """A frame header field holds a value the format forbids."""


class BadMagic(BadHeader):
    """The first two bytes of a frame are not ``b"AY"``: not our protocol, or out of sync."""


class UnsupportedVersion(BadHeader):
    """The frame declares a protocol version this code does not speak."""


class BadFlags(BadHeader):
    """A reserved flag bit or the reserved byte is set."""


class MessageTooLarge(ProtocolError):
    """A frame, or the running total of a chunked message, exceeds ``max_message``."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"message of {size} bytes exceeds max_message={limit}")


FrameTooLarge = MessageTooLarge


class CodecChanged(ProtocolError):
    """A continuation frame names a different codec than the message's first frame."""


class EncodingError(ProtocolError):
    """A frame's content encoding (header byte 5) is unusable here, or its data is."""


class UnknownEncoding(EncodingError, BadHeader, _NotRegistered):
    """No content encoding is registered under that id or name (refused at the header)."""

    what_kind = "content encoding"


class EncodingDisallowed(EncodingError, BadHeader):
    """A frame arrived in an encoding outside this receiver's accept-list."""

    def __init__(self, encoding: str, accepted: frozenset[str] | set[str]) -> None:
        self.encoding = encoding
        self.accepted = frozenset(accepted)
        super().__init__(f"refusing {encoding!r} frames (accepted: {', '.join(sorted(accepted))})")


class EncodingChanged(EncodingError, CodecChanged):
    """A continuation frame names a different encoding than the message's first frame."""


class BadCompressedFrame(EncodingError):
    """A compressed frame's data is not a valid frame of its encoding."""

    def __init__(self, encoding: str, reason: str) -> None:
        self.encoding = encoding
        super().__init__(f"{encoding}: bad compressed frame: {reason}")


class UndeclaredSize(BadCompressedFrame):
    """A compressed frame does not declare its decompressed size: it is not inflated."""

    def __init__(self, encoding: str) -> None:
        super().__init__(encoding, "no declared content size (required, to refuse bombs)")


class SizeMismatch(BadCompressedFrame):
    """A compressed frame inflates to another size than it declared (or fails to inflate)."""

    def __init__(self, encoding: str, declared: int, reason: str) -> None:
        self.declared = declared
        super().__init__(encoding, f"declared {declared} bytes; {reason}")


class RatioTooHigh(MessageTooLarge, EncodingError):
    """A compressed frame declares more than ``ratio`` times its own size (a likely bomb).

    A ``MessageTooLarge`` too: to the sender it is the same fix (smaller frames, or none
    compressed), and it is refused on the wire as ``too_large``.
    """

    def __init__(self, encoding: str, compressed: int, declared: int, allowed: int) -> None:
        self.encoding = encoding
        self.compressed = compressed
        self.declared = declared
        self.allowed = allowed
        self.size = declared
        self.limit = allowed
        ProtocolError.__init__(
            self,
            f"{encoding}: a frame of {compressed} compressed bytes declares {declared}; "
            f"this receiver inflates it to {allowed} bytes at most",
        )


class Truncated(ProtocolError):
    """The stream ended inside a frame or between the frames of one message."""


class BadSignature(ProtocolError):
    """A signed frame's HMAC tag does not verify (tampered, forged, replayed or wrong key)."""


class SignatureMissing(BadSignature):
    """This receiver has a key, and a frame arrived without flag bit 1 (unsigned)."""


class SignatureUnexpected(BadSignature, BadFlags):
    """A signed frame (flag bit 1) arrived at a receiver that has no key.

    Also a :class:`BadFlags`, which is what it was called before it had a name of its own.
    """


class ReflectedFrame(BadSignature):
    """A frame carries this side's own direction: reflected back to us, or both ends
    were configured as the same side."""


# --- transport ------------------------------------------------------------------------


class TransportError(AyudantiaError):
    """The socket under a connection failed."""


class ConnectionClosed(TransportError, ConnectionError):
    """The peer closed the connection cleanly between messages (or we closed it)."""


class ConnectionFailed(ConnectionClosed):
    """This side failed the connection on purpose and it is unusable from then on.

    Raised by every later send and receive after a message could not be completed: a
    stream whose source raised, a stream the receiver abandoned, a send that timed out.
    Failing is what keeps a half-sent message from splicing into the next one.
    """


class Timeout(TransportError, TimeoutError):
    """A socket operation did not complete within the configured timeout."""


# --- refusals -------------------------------------------------------------------------
#
# A server that refuses a peer at a header first sends one refusal frame (flag bit 2, see
# docs/protocol.md, "Refusal frames"), then closes. Its payload is one reason byte and a short
# UTF-8 line. The codes are part of the wire format: never renumber them.

REFUSAL_CODES: dict[int, str] = {
    1: "codec",  # the codec is unknown or not accepted here
    2: "too_large",  # the message exceeds the receiver's max_message
    3: "signature",  # a key mismatch: unsigned to a keyed peer, signed to a keyless one, bad tag
    4: "version",  # a protocol version this receiver does not speak
    5: "malformed",  # the bytes are not a valid frame (bad magic, flags, reserved byte)
    6: "busy",  # the server is full (max clients); retrying later may work
}
# Refusals that retrying with the same settings can never cure: a client stops and says why.
PERMANENT_REFUSALS: frozenset[str] = frozenset(
    {"codec", "too_large", "signature", "version", "malformed"}
)


class Refused(ProtocolError):
    """The peer refused us and said why, in a refusal frame, before it closed.

    ``reason`` is one of :data:`REFUSAL_CODES`' names (``"unknown"`` for a code this side
    does not know); ``text`` is the peer's human line, already sanitised (printable, capped).
    ``permanent`` tells a client whether reconnecting with the same settings can help.
    """

    def __init__(self, code: int, text: str) -> None:
        self.code = code
        self.reason = REFUSAL_CODES.get(code, "unknown")
        self.text = text
        self.permanent = self.reason in PERMANENT_REFUSALS
        super().__init__(f"refused by peer ({self.reason}): {text}")


# --- keyed handshake and TLS --------------------------------------------------------------


class HandshakeError(ProtocolError):
    """The keyed handshake (protocol/handshake.py) failed: no frame was decoded."""


class HandshakeMissing(HandshakeError, SignatureMissing):
    """A keyed peer expected the handshake and got something else (a peer with no key)."""


class HandshakeMalformed(HandshakeError, BadFlags):
    """A handshake record that breaks its fixed layout."""


class HandshakeFailed(HandshakeError, BadSignature):
    """The peer's proof does not verify: the ends do not share the key, or it is a replay."""


class HandshakeReflected(HandshakeFailed, ReflectedFrame):
    """Our own hello came back: the peer is a mirror, not a holder of the key."""


class TlsFailed(TransportError):
    """TLS could not be set up: unknown CA, name mismatch, missing client certificate...

    Not an OSError on purpose: retrying with the same certificates never helps, so a
    client that retries on socket errors stops at once and says why.
    """


# --- discovery (DNS-SD over mDNS, ayudantia/discovery.py) ----------------------------------


class DiscoveryError(AyudantiaError):
    """Finding a server on the LAN did not give one server this client can talk to."""


class BadAnnouncement(DiscoveryError, ValueError):
    """A ``_ayudantia._tcp`` announcement whose TXT record lacks a key or has a bad value."""


class NoServerFound(DiscoveryError):
    """Nothing that matches answered within the timeout."""


class AmbiguousServers(DiscoveryError):
    """More than one server matches: the client lists them instead of guessing.

    ``found`` holds the matching announcements, for the table the command prints.
    """

    def __init__(self, message: str, found: tuple[object, ...]) -> None:
        self.found = found
        super().__init__(message)


class ServerMismatch(DiscoveryError):
    """The server found speaks differently (codec, encoding, TLS, key) from this client."""
