"""The wire format, sans-IO: bytes in, messages and chunks out. No socket in here.

Every frame is a 10-byte header and a payload::

    offset size field
    0      2    magic b"AY"
    2      1    version = 1
    3      1    codec id (0 raw, 1 json, 2 pickle, 3 msgpack, 64-255 plug-ins)
    4      1    flags: bit 0 MORE (another frame of this message follows); bit 1 SIGNED
                (the payload ends with a 32-byte HMAC-SHA256 tag, see protocol/signing.py;
                accepted only by a decoder that has a key); bit 2 REFUSAL (a refusal frame:
                codec 0, no other flag, 1-512 bytes of reason code and text); other bits 0
    5      1    content encoding (0 identity, 1 zstd, 2 lz4 frame, 64-255 plug-ins; see
                protocol/encodings.py): every frame of a message carries the same one, and
                each frame's data is compressed on its own
    6      4    payload length, unsigned big-endian
    10     n    payload

A message is one frame, or several frames of one codec where all but the last set MORE.
With an encoding, a frame's payload is its data compressed (and then, when signed, the tag
over those compressed bytes as sent); the decoder verifies, then inflates, frame by frame.

:class:`FrameDecoder` is a state machine in the style of h11: feed it bytes with
:meth:`~FrameDecoder.receive_data`, or let the caller write into its buffers with
:meth:`~FrameDecoder.get_buffer` / :meth:`~FrameDecoder.buffer_updated` (asyncio's
``BufferedProtocol``) or :meth:`~FrameDecoder.read_from` (any ``recv_into``-like
callable, on top of those two), and pull events with :meth:`~FrameDecoder.next_event`.
Because it never sees a socket, any split of the input, down to one byte at a time, can
be tested, and it gives the same events.

Why ``get_buffer`` exists: copying every received byte through ``bytes +=`` or an
intermediate buffer caps Python near 200 MB/s. Once a header has declared a payload, the
decoder hands the caller a view into the message's own buffer, so the kernel copies the
payload straight to where it will be decoded.

The format lives in five modules, one idea each, in the shape of h11's ``_readers``,
``_writers`` and ``_events``; this module is their public face (import from here):

* :mod:`protocol.header`: the header's layout, flags, limits and chunk arithmetic;
* :mod:`protocol.encoder`: messages to frame buffers (plain, compressed, signed);
* :mod:`protocol.refusals`: the refusal frame and which errors map to one;
* :mod:`protocol.events`: what the decoder hands out (:class:`Message`, :class:`Chunk`);
* :mod:`protocol.decoder`: :class:`FrameDecoder`, the state machine.
"""

from __future__ import annotations

from protocol.decoder import ALLOCATION_FACTOR, ALLOCATION_SLACK, FrameDecoder
from protocol.encoder import encode_message, frame_buffers, iter_frame_buffers, signed_frame_buffers
from protocol.events import CLOSED, NEED_DATA, Chunk, Event, Message
from protocol.header import (
    DEFAULT_MAX_MESSAGE,
    FLAG_MORE,
    FLAG_REFUSAL,
    FLAG_SIGNED,
    HEADER,
    HEADER_SIZE,
    KNOWN_FLAGS,
    MAGIC,
    MAX_FRAME_PAYLOAD,
    MAX_REFUSAL_PAYLOAD,
    VERSION,
    check_chunk_size,
    echo_chunk_size,
    frame_count,
    pack_header,
)
from protocol.refusals import clean_text, encode_refusal, refusal_for, refusal_frame

__all__ = [
    "ALLOCATION_FACTOR",
    "ALLOCATION_SLACK",
    "CLOSED",
    "DEFAULT_MAX_MESSAGE",
    "FLAG_MORE",
    "FLAG_REFUSAL",
    "FLAG_SIGNED",
    "HEADER",
    "HEADER_SIZE",
    "KNOWN_FLAGS",
    "MAGIC",
    "MAX_FRAME_PAYLOAD",
    "MAX_REFUSAL_PAYLOAD",
    "NEED_DATA",
    "VERSION",
    "Chunk",
    "Event",
    "FrameDecoder",
    "Message",
    "check_chunk_size",
    "clean_text",
    "echo_chunk_size",
    "encode_message",
    "encode_refusal",
    "frame_buffers",
    "frame_count",
    "iter_frame_buffers",
    "pack_header",
    "refusal_for",
    "refusal_frame",
    "signed_frame_buffers",
]
