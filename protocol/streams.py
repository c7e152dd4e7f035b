"""Raw byte streams as one chunked message: where the chunks come from and who writes them.

A stream is a message whose length nobody knows up front: a file read a chunk at a time,
an iterable of pieces of any size, or frames written one by one by the caller. All three
end the same way on the wire (every frame but the last carries MORE), and all three keep
memory bounded by the chunk, never by the stream. This module holds that, apart from the
socket that carries it (:mod:`protocol.transport`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import IO, Final

from protocol.header import check_chunk_size
from protocol.messages import Sent

__all__ = [
    "DEFAULT_STREAM_CHUNK",
    "StreamWriter",
    "stream_chunk_size",
    "stream_frames",
    "stream_pieces",
]

# The default chunk of a stream, from the benchmark curve (docs/benchmarks.md, "Default
# chunk size"): the smallest chunk within 10% of the best streamed throughput.
DEFAULT_STREAM_CHUNK: Final = 256 * 1024

Piece = bytes | memoryview
# One frame's buffers for ``data``: (data, more) -> header, data (compressed), tag.
FrameBuffers = Callable[[Piece, bool], list[Piece]]


def stream_chunk_size(chunk_size: int | None, default: int) -> int:
    """The chunk a stream is cut at: the caller's, else the connection's, else the default.

    A message may go unchunked (0), a stream cannot: it has no length to put in one header.
    """
    size = default if chunk_size is None else check_chunk_size(chunk_size)
    return size or DEFAULT_STREAM_CHUNK


def stream_pieces(source: Iterable[bytes] | IO[bytes], size: int) -> Iterator[Piece]:
    """The stream's chunks: a binary file read ``size`` at a time, or each item split at it."""
    if hasattr(source, "read"):
        return _file_chunks(source, size)  # type: ignore[arg-type]
    return _split(source, size)  # type: ignore[arg-type]


def stream_frames(
    pieces: Iterable[Piece], frame: FrameBuffers, count: list[int]
) -> Iterator[Piece]:
    """Every piece as one frame, the last with MORE cleared; ``count[0]`` counts the frames.

    One piece of look-ahead is what tells the last frame apart; an empty stream is one
    empty last frame, so the peer always sees the message end.
    """
    pending: Piece | None = None
    for piece in pieces:
        if pending is not None:
            count[0] += 1
            yield from frame(pending, True)
        pending = piece
    count[0] += 1
    yield from frame(b"" if pending is None else pending, False)


class StreamWriter:
    """Writes one message frame by frame; :meth:`write` with ``last=True`` ends it.

    ``send_frame(data, more)`` writes one frame and says what left; the connection gives
    each call its own ``send_timeout``.
    """

    def __init__(self, send_frame: Callable[[Piece | bytearray, bool], Sent]) -> None:
        self._send_frame = send_frame
        self.done = False
        self.frames = 0
        self.wire_bytes = 0

    def write(self, data: bytes | bytearray | memoryview, *, last: bool = False) -> None:
        if self.done:
            raise RuntimeError("stream already ended")
        sent = self._send_frame(data, not last)
        self.frames += sent.frames
        self.wire_bytes += sent.wire_bytes
        self.done = last

    @property
    def sent(self) -> Sent:
        return Sent(self.frames, self.wire_bytes)


def _split(pieces: Iterable[bytes], size: int) -> Iterator[Piece]:
    for piece in pieces:
        view = memoryview(piece)
        if len(view) <= size:
            if len(view):
                yield view
            continue
        for offset in range(0, len(view), size):
            yield view[offset : offset + size]


def _file_chunks(source: IO[bytes], size: int) -> Iterator[bytes]:
    while True:
        block = source.read(size)
        if not block:
            return
        yield block
