"""Signed frames: an HMAC-SHA256 tag on every frame, checked before any codec sees a byte.

A signed frame sets flag bit 1 (``FLAG_SIGNED``) and its payload is the frame's data
followed by a 32-byte tag::

    tag = HMAC-SHA256(key, header || seq || data)

``header`` is the frame's 10 header bytes exactly as sent (flags with bit 1 set, length
counting the tag), ``seq`` the frame's sequence number as 8 bytes big-endian: frames are
numbered 0, 1, 2... per connection and per direction, across messages. A receiver with a
key verifies with :func:`hmac.compare_digest` before the frame's data joins a message, so
a forged, tampered, replayed, reordered or dropped frame is refused before decoding.
See docs/protocol.md, "Signed frames", for the exact layout.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Final

from protocol.errors import BadSignature

TAG_SIZE: Final = 32
_SEQ: Final = struct.Struct(">Q")


def check_key(key: bytes | str) -> bytes:
    """The key as bytes; an empty key is refused (it would sign with no secret at all)."""
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if not raw:
        raise ValueError("the HMAC key must not be empty")
    return raw


def frame_tag(key: bytes, header: bytes, seq: int, data: bytes | bytearray | memoryview) -> bytes:
    """The 32-byte tag of one frame."""
    mac = hmac.new(key, header, hashlib.sha256)
    mac.update(_SEQ.pack(seq))
    mac.update(data)
    return mac.digest()


def verify_frame(
    key: bytes, header: bytes, seq: int, data: bytes | bytearray | memoryview, tag: bytes
) -> None:
    """Raise :class:`BadSignature` unless ``tag`` is the frame's tag (constant-time compare)."""
    if not hmac.compare_digest(frame_tag(key, header, seq, data), bytes(tag)):
        raise BadSignature(
            f"frame {seq}: HMAC tag does not match (tampered, forged, replayed or wrong key)"
        )


class Signer:
    """Numbers and tags the frames one direction of a connection sends."""

    __slots__ = ("_key", "seq")

    def __init__(self, key: bytes | str) -> None:
        self._key = check_key(key)
        self.seq = 0

    def tag(self, header: bytes, data: bytes | bytearray | memoryview) -> bytes:
        tag = frame_tag(self._key, header, self.seq, data)
        self.seq += 1
        return tag

    def __repr__(self) -> str:  # never show the key
        return f"<Signer seq={self.seq}>"


class Verifier:
    """Checks the frames one direction of a connection receives, in order."""

    __slots__ = ("_key", "seq")

    def __init__(self, key: bytes | str) -> None:
        self._key = check_key(key)
        self.seq = 0

    def verify(self, header: bytes, data: bytes | bytearray | memoryview, tag: bytes) -> None:
        verify_frame(self._key, header, self.seq, data, tag)
        self.seq += 1

    def __repr__(self) -> str:
        return f"<Verifier seq={self.seq}>"
