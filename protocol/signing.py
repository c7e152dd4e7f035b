"""Signed frames: an HMAC-SHA256 tag on every frame, checked before any codec sees a byte.

A signed frame sets flag bit 1 (``FLAG_SIGNED``) and its payload is the frame's data
followed by a 32-byte tag::

    tag = HMAC-SHA256(key, direction || header || seq || data)

``direction`` is one byte naming the side that sent the frame: ``C`` (0x43) for the side
that connected, ``S`` (0x53) for the side that accepted. Both directions share the key and
both counters start at 0, so without it a man in the middle could bounce a peer's own
frames back to it and they would verify (issue 15, defect 11). ``header`` is the frame's
10 header bytes exactly as sent (flags with bit 1 set, length counting the tag), ``seq``
the frame's sequence number as 8 bytes big-endian: frames are numbered 0, 1, 2... per
connection and per direction, across messages. A receiver with a key verifies with
:func:`hmac.compare_digest` before the frame's data joins a message, so a forged,
tampered, replayed, reordered, reflected or dropped frame is refused before decoding.
See docs/protocol.md, "Signed frames", for the exact layout.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Final, Literal

from protocol.errors import BadSignature, ReflectedFrame

TAG_SIZE: Final = 32
_SEQ: Final = struct.Struct(">Q")

Side = Literal["client", "server"]
"""Which end of a connection: the one that connected (client) or the one that accepted."""
DIRECTION: Final[dict[str, bytes]] = {"client": b"C", "server": b"S"}
_OTHER: Final[dict[str, Side]] = {"client": "server", "server": "client"}


def check_side(side: str) -> Side:
    """``side`` itself, or ValueError: a typo here would make every tag fail to verify."""
    if side not in DIRECTION:
        raise ValueError(f"side must be 'client' or 'server', not {side!r}")
    return side  # type: ignore[return-value]


def signer_for(key: bytes | None, side: Side | None) -> Signer | None:
    """The signer of one end of a connection; None without a key.

    With a key the end must say which it is: the direction is part of every tag, and a
    guess would make one of the two ends refuse every frame.
    """
    if key is None:
        return None
    if side is None:
        raise ValueError(
            "a signed connection needs side='client' (it connected) or side='server' "
            "(it accepted): each frame's tag is bound to its direction"
        )
    return Signer(key, side=side)


def check_key(key: bytes | str) -> bytes:
    """The key as bytes; an empty key is refused (it would sign with no secret at all)."""
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if not raw:
        raise ValueError("the HMAC key must not be empty")
    return raw


def frame_tag(
    key: bytes, sender: Side, header: bytes, seq: int, data: bytes | bytearray | memoryview
) -> bytes:
    """The 32-byte tag of one frame sent by ``sender``."""
    mac = hmac.new(key, DIRECTION[sender], hashlib.sha256)
    mac.update(header)
    mac.update(_SEQ.pack(seq))
    mac.update(data)
    return mac.digest()


class Signer:
    """Numbers and tags the frames one side of a connection sends (``side``: who we are)."""

    __slots__ = ("_key", "seq", "side")

    def __init__(self, key: bytes | str, *, side: Side = "client") -> None:
        self._key = check_key(key)
        self.side = check_side(side)
        self.seq = 0

    def tag(self, header: bytes, data: bytes | bytearray | memoryview) -> bytes:
        tag = frame_tag(self._key, self.side, header, self.seq, data)
        self.seq += 1
        return tag

    def __repr__(self) -> str:  # never show the key
        return f"<Signer {self.side} seq={self.seq}>"


class Verifier:
    """Checks, in order, the frames one side receives (``side``: who we are, not the sender).

    The defaults pair up: what a default :class:`Signer` (a client) tags, a default
    Verifier (a server) accepts.
    """

    __slots__ = ("_key", "seq", "side")

    def __init__(self, key: bytes | str, *, side: Side = "server") -> None:
        self._key = check_key(key)
        self.side = check_side(side)
        self.seq = 0

    def verify(self, header: bytes, data: bytes | bytearray | memoryview, tag: bytes) -> None:
        """Raise :class:`BadSignature` unless ``tag`` is the peer's tag (constant-time compare)."""
        peer = _OTHER[self.side]
        if not hmac.compare_digest(frame_tag(self._key, peer, header, self.seq, data), tag):
            own = frame_tag(self._key, self.side, header, self.seq, data)
            if hmac.compare_digest(own, tag):
                raise ReflectedFrame(
                    f"frame {self.seq} was signed by a {self.side}, as this side is: it was "
                    f"reflected back to us, or both ends are configured as side={self.side!r}"
                )
            raise BadSignature(
                f"frame {self.seq}: HMAC tag does not match "
                "(tampered, forged, replayed or wrong key)"
            )
        self.seq += 1

    def __repr__(self) -> str:
        return f"<Verifier {self.side} seq={self.seq}>"
