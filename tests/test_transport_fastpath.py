"""The blocking Connection's fast path for small messages keeps every rule of the slow one.

A small plain message is sent with one ``sendmsg`` resolved without ``plan_message``, and
received by one read straight into the decoder's staging area and one step of the decoder.
These tests feed it what the fast path must hand back to the general one (frames split
anywhere, several messages in one read, a staging area grown by a large message) and the
checks it must still make (accept-list, limits, chunking, counters), over real sockets.
"""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator

import pytest

from protocol import codecs
from protocol.decoder import _STAGE_SIZE
from protocol.errors import ContentDisallowed, MessageTooLarge
from protocol.framing import HEADER_SIZE, NEED_DATA, FrameDecoder, encode_message
from protocol.transport import Connection


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, Connection]]:
    """A bare socket to write arbitrary bytes with, and the Connection that reads them."""
    left, right = socket.socketpair()
    conn = Connection(right, codec="raw")
    try:
        yield left, conn
    finally:
        conn.close()
        left.close()


def _writer(sock: socket.socket, pieces: list[bytes]) -> threading.Thread:
    def run() -> None:
        for piece in pieces:
            sock.sendall(piece)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("seed", range(8))
def test_messages_split_anywhere_or_batched_arrive_whole(
    pair: tuple[socket.socket, Connection], seed: int
) -> None:
    """Frames cut at random points and several messages per write: the same messages."""
    left, conn = pair
    rng = random.Random(seed)
    raw = codecs.get("raw").id
    payloads = [bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 9, 60, 700])))]
    payloads += [rng.randbytes(rng.choice([0, 1, 10, 61, 3000])) for _ in range(30)]
    wire = b"".join(
        encode_message(raw, p, rng.choice([0, 0, 7, 64])) for p in payloads
    )  # some chunked: the general path takes those
    cuts = sorted(rng.sample(range(1, len(wire)), 20))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    thread = _writer(left, pieces)
    got = [bytes(conn.recv_message().payload) for _ in payloads]
    thread.join(10)
    assert got == payloads
    assert conn.bytes_received == len(wire)
    assert conn.messages_received == len(payloads)


def test_a_codec_outside_the_accept_list_is_refused_before_decoding(
    pair: tuple[socket.socket, Connection],
) -> None:
    left, conn = pair
    left.sendall(encode_message(codecs.get("pickle").id, b"\x80\x04N."))
    with pytest.raises(ContentDisallowed):
        conn.recv_message()
    with pytest.raises(ContentDisallowed):  # sticky: the stream cannot be resynchronized
        conn.recv_message()


def test_max_message_still_bounds_a_whole_small_frame() -> None:
    left, right = socket.socketpair()
    conn = Connection(right, codec="raw", max_message=16)
    try:
        left.sendall(encode_message(0, b"x" * 17))
        with pytest.raises(MessageTooLarge):
            conn.recv_message()
    finally:
        conn.close()
        left.close()


@pytest.mark.parametrize("payload", [b"", b"k", bytearray(b"sixty" * 12)])
def test_the_fast_send_counts_what_it_sends(payload: bytes | bytearray) -> None:
    left, right = socket.socketpair()
    a, b = Connection(left, codec="raw"), Connection(right, codec="raw")
    try:
        sent = a.send(payload)
        got = b.recv_message()
        assert (sent.frames, sent.wire_bytes) == (1, HEADER_SIZE + len(payload))
        assert bytes(got.payload) == payload and got.wire_bytes == sent.wire_bytes
        assert a.bytes_sent == b.bytes_received == sent.wire_bytes
        assert a.frames_sent == 1
    finally:
        a.close()
        b.close()


def test_a_payload_over_the_chunk_size_is_still_chunked() -> None:
    left, right = socket.socketpair()
    a, b = Connection(left, codec="raw", chunk_size=4), Connection(right, codec="raw")
    try:
        assert a.send(b"0123456789").frames == 3
        assert a.send(b"0123456789", chunk_size=0).frames == 1
        with pytest.raises(ValueError):
            a.send(b"0123456789", chunk_size=-1)
        first, second = b.recv_message(), b.recv_message()
        assert (first.frames, bytes(first.payload)) == (3, b"0123456789")
        assert (second.frames, bytes(second.payload)) == (1, b"0123456789")
    finally:
        a.close()
        b.close()


def test_read_from_hands_the_staging_area_itself_between_frames() -> None:
    """One read, straight into the staging area's start; the message in one step."""
    decoder = FrameDecoder()
    frame = encode_message(0, b"hello")
    seen: list[int] = []

    def recv_into(buffer: bytearray | memoryview) -> int:
        seen.append(len(buffer))
        buffer[: len(frame)] = frame
        return len(frame)

    assert decoder.next_event() is NEED_DATA
    assert decoder.read_from(recv_into) == len(frame)
    event = decoder.next_event()
    assert bytes(event.payload) == b"hello"  # type: ignore[union-attr]
    assert seen == [_STAGE_SIZE]


def test_read_from_gives_back_a_staging_area_a_large_feed_grew() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_message(0, b"x" * (5 * _STAGE_SIZE)))
    assert bytes(decoder.next_event().payload) == b"x" * (5 * _STAGE_SIZE)  # type: ignore[union-attr]
    frame = encode_message(0, b"small")

    def recv_into(buffer: bytearray | memoryview) -> int:
        buffer[: len(frame)] = frame
        return len(frame)

    decoder.read_from(recv_into)
    assert bytes(decoder.next_event().payload) == b"small"  # type: ignore[union-attr]
    assert decoder.allocated <= _STAGE_SIZE


@pytest.mark.parametrize("bad", [-1, _STAGE_SIZE + 1])
def test_read_from_checks_what_recv_into_claims(bad: int) -> None:
    decoder = FrameDecoder()
    with pytest.raises(ValueError):
        decoder.read_from(lambda buffer: bad)
