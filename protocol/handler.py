"""What a connection's owner decides: the callbacks an event-loop connection calls.

Servers subclass :class:`Handler`; :class:`Inbox` is the handler behind the coroutine API
(``await conn.recv()``), for scripts and tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from protocol.aio import FrameConnection
    from protocol.errors import DecodeError
    from protocol.events import Chunk
    from protocol.messages import Received


class Handler:
    """What a connection's owner decides. Every callback runs on the loop's thread.

    Raising from a callback drops that peer (logged), never the server.
    """

    def connection_made(self, conn: FrameConnection) -> None:
        """A peer connected."""

    def message_received(self, conn: FrameConnection, received: Received) -> None:
        """A whole message arrived and decoded."""

    def chunk_received(self, conn: FrameConnection, chunk: Chunk) -> None:
        """One frame of a streamed message (see :meth:`stream`)."""

    def stream(self, codec_id: int) -> bool:
        """Whether a message in ``codec_id`` comes frame by frame (chunk_received)."""
        return False

    def decode_failed(self, conn: FrameConnection, error: DecodeError) -> None:
        """A message arrived whole but its payload is malformed; the stream is still in step."""
        raise error

    def connection_lost(self, conn: FrameConnection, error: BaseException | None) -> None:
        """The connection is gone; ``error`` says why (None: a clean close)."""


class Inbox(Handler):
    """The handler behind the coroutine API: messages wait in the connection for recv()."""

    def message_received(self, conn: FrameConnection, received: Received) -> None:
        conn._deliver_to_inbox(received)

    def decode_failed(self, conn: FrameConnection, error: DecodeError) -> None:
        conn._deliver_to_inbox(error)
