"""protocol/streams.py on its own: chunk resolution, the pieces of a source, the last frame."""

from __future__ import annotations

import io

import pytest

from protocol.messages import Sent
from protocol.streams import (
    DEFAULT_STREAM_CHUNK,
    StreamWriter,
    stream_chunk_size,
    stream_frames,
    stream_pieces,
)


def test_a_stream_is_never_unchunked():
    assert stream_chunk_size(None, 0) == DEFAULT_STREAM_CHUNK
    assert stream_chunk_size(0, 4096) == DEFAULT_STREAM_CHUNK
    assert stream_chunk_size(None, 4096) == 4096
    assert stream_chunk_size(10, 4096) == 10
    with pytest.raises(ValueError):
        stream_chunk_size(-1, 4096)


def test_pieces_of_a_file_and_of_an_iterable_are_cut_at_the_chunk():
    data = bytes(range(256)) * 3
    from_file = [bytes(p) for p in stream_pieces(io.BytesIO(data), 100)]
    from_items = [bytes(p) for p in stream_pieces([data[:150], b"", data[150:]], 100)]
    for pieces in (from_file, from_items):
        assert b"".join(pieces) == data
        assert all(0 < len(p) <= 100 for p in pieces)


@pytest.mark.parametrize("count", [0, 1, 3])
def test_only_the_last_frame_clears_more(count):
    seen: list[tuple[bytes, bool]] = []

    def frame(data, more):
        seen.append((bytes(data), more))
        return [bytes(data)]

    frames = [0]
    pieces = [bytes([i]) * 4 for i in range(count)]
    out = list(stream_frames(pieces, frame, frames))
    assert frames[0] == max(1, count) == len(seen)
    assert [more for _, more in seen] == [True] * (len(seen) - 1) + [False]
    assert b"".join(out) == b"".join(pieces)


def test_a_writer_counts_what_left_and_refuses_after_the_end():
    calls: list[tuple[bytes, bool]] = []

    def send_frame(data, more):
        calls.append((bytes(data), more))
        return Sent(1, len(data) + 8)

    writer = StreamWriter(send_frame)
    writer.write(b"abc")
    writer.write(b"de", last=True)
    assert calls == [(b"abc", True), (b"de", False)]
    assert writer.sent == Sent(2, 21)
    with pytest.raises(RuntimeError):
        writer.write(b"x")
