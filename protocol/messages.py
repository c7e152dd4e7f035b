"""What a front-end hands its caller: :class:`Sent` for a send, :class:`Received` for a message.

Both front-ends (the blocking :mod:`protocol.transport` and the event-loop
:mod:`protocol.aio`) return these, so a message reads the same on either.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from protocol.codecs import Codec
from protocol.events import Message
from protocol.header import echo_chunk_size

_new = tuple.__new__  # a named tuple from its fields, without the generated __new__


class Sent(NamedTuple):
    """What one send put on the wire.

    A named tuple, like :class:`Received`: one is built for every message, and a tuple
    costs a fifth of a frozen dataclass (whose ``__init__`` goes through
    ``object.__setattr__`` field by field), which a small round trip felt.
    """

    frames: int
    wire_bytes: int


class Received(NamedTuple):
    """A decoded message and how it travelled (immutable, built once per message)."""

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
        payload = event.payload
        obj = codec.decode(payload, max_message=max_message)
        return _new(
            cls,
            (
                codec,
                obj,
                payload,
                event.frames,
                event.chunk_size,
                event.wire_bytes,
                event.encoding_id,
            ),
        )

    @property
    def echo_chunk_size(self) -> int:
        """The chunk size that sends this payload back in at most as many frames as came."""
        return echo_chunk_size(len(self.payload), self.frames, self.chunk_size)
