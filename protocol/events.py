"""What the decoder hands out: whole messages, streamed chunks, and two sentinels."""

from __future__ import annotations

from typing import Final, NamedTuple


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA: Final = _Sentinel("NEED_DATA")
"""No complete event yet: give the decoder more bytes."""

CLOSED: Final = _Sentinel("CLOSED")
"""The peer closed cleanly between messages. Not an error."""


class Message(NamedTuple):
    """A whole message: its frames' payloads concatenated, not yet decoded.

    ``chunk_size`` is the first frame's data size when the message came in several frames,
    else 0: a description of how it travelled, not a promise about the other frames (the
    sender may cut them at any size). To send a payload back without more frames than
    came in, use :func:`echo_chunk_size`.

    Events are named tuples: one is built per message (per frame when streamed), and a
    tuple made with ``tuple.__new__`` costs a fraction of a class with a Python-level
    ``__init__``, which a small round trip felt.
    """

    codec_id: int
    payload: bytearray
    frames: int
    chunk_size: int  # payload size of the first frame when chunked, else 0
    wire_bytes: int
    encoding_id: int = 0  # the content encoding it travelled in (payload is inflated)


class Chunk(NamedTuple):
    """One frame of a streamed message (see ``stream=`` in :meth:`FrameDecoder.next_event`)."""

    codec_id: int
    data: bytearray
    index: int
    last: bool
    encoding_id: int = 0  # the encoding this frame travelled in (data is inflated)


Event = Message | Chunk | _Sentinel
