"""The frame header: ten bytes that say what follows, and the arithmetic of chunking.

The layout is drawn in :mod:`protocol.framing`. Everything here is a constant or a pure
function, so both directions and both front-ends agree on it by construction.
"""

from __future__ import annotations

import struct
from typing import Final

from protocol.errors import (
    MessageTooLarge,
)

MAGIC: Final = b"AY"
VERSION: Final = 1
HEADER: Final = struct.Struct(">2sBBBBI")
HEADER_SIZE: Final = HEADER.size  # 10
FLAG_MORE: Final = 0x01
FLAG_SIGNED: Final = 0x02  # signed frame; refused (SignatureUnexpected) by a decoder without a key
FLAG_REFUSAL: Final = 0x04  # a refusal frame: the peer says why it is closing (never signed)
KNOWN_FLAGS: Final = FLAG_MORE | FLAG_SIGNED | FLAG_REFUSAL
MAX_FRAME_PAYLOAD: Final = 0xFFFFFFFF
MAX_REFUSAL_PAYLOAD: Final = 512  # reason byte + UTF-8 text
DEFAULT_MAX_MESSAGE: Final = 64 * 1024 * 1024


def pack_header(
    codec_id: int, length: int, *, more: bool = False, signed: bool = False, encoding: int = 0
) -> bytes:
    """The 10 header bytes of one frame (``length`` counts a signed frame's tag)."""
    if not 0 <= length <= MAX_FRAME_PAYLOAD:
        raise MessageTooLarge(length, MAX_FRAME_PAYLOAD)
    flags = (FLAG_MORE if more else 0) | (FLAG_SIGNED if signed else 0)
    return HEADER.pack(MAGIC, VERSION, codec_id, flags, encoding, length)


def check_chunk_size(chunk_size: int) -> int:
    """``chunk_size`` itself, or ValueError when negative (0 means unchunked).

    A negative size once slipped through to ``range(0, n, -1)`` and sent an empty frame
    instead of the data (issue 15, defect 6); every sending entry point checks it now.
    """
    if chunk_size < 0:
        raise ValueError(f"chunk_size must be >= 0 (0 = unchunked), not {chunk_size}")
    return chunk_size


def frame_count(length: int, chunk_size: int) -> int:
    """How many frames a payload of ``length`` bytes takes at ``chunk_size`` (0 = unchunked)."""
    if check_chunk_size(chunk_size) == 0 or length <= chunk_size:
        return 1
    return -(-length // chunk_size)


def echo_chunk_size(length: int, frames: int, first: int) -> int:
    """A chunk size that sends ``length`` bytes again in at most ``frames`` frames.

    What a relay (the eco) needs to answer "in the same chunking" without amplifying:
    re-chunking at the first frame's size alone turned a 1-byte first frame and a 4 MiB
    second one into four million frames (issue 15, defect 8). ``first`` is the received
    message's ``chunk_size``; 0 (or one frame) means unchunked.
    """
    if frames <= 1 or length == 0:
        return 0
    return max(first, -(-length // frames))
