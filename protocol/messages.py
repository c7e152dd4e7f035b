"""What a front-end hands its caller: :class:`Sent` for a send, :class:`Received` for a message.

Both front-ends (the blocking :mod:`protocol.transport` and the event-loop
:mod:`protocol.aio`) return these, so a message reads the same on either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.codecs import Codec
from protocol.events import Message
from protocol.header import echo_chunk_size


@dataclass(frozen=True, slots=True)
class Sent:
    """What one send put on the wire."""

    frames: int
    wire_bytes: int


@dataclass(frozen=True, slots=True)
class Received:
    """A decoded message and how it travelled."""

    codec: Codec
    obj: Any
    payload: bytearray
    frames: int
    chunk_size: int  # the first frame's data size when chunked, else 0 (see Message)
    wire_bytes: int
    encoding_id: int = 0  # the content encoding it travelled in (0: identity)

    @classmethod
    def decoded(cls, codec: Codec, event: Message, max_message: int) -> Received:
        """``event`` decoded by ``codec`` (allocations bounded by ``max_message``).

        Both front-ends receive through this, so a message reads the same on either.
        """
        obj = codec.decode(event.payload, max_message=max_message)
        return cls(
            codec,
            obj,
            event.payload,
            event.frames,
            event.chunk_size,
            event.wire_bytes,
            event.encoding_id,
        )

    @property
    def echo_chunk_size(self) -> int:
        """The chunk size that sends this payload back in at most as many frames as came."""
        return echo_chunk_size(len(self.payload), self.frames, self.chunk_size)
