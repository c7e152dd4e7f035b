"""The blocking Connection's fast path for small messages keeps every rule of the slow one.

A small plain message is sent with one ``sendmsg`` resolved without ``plan_message``, and
received by one read straight into the decoder's staging area and one step of the decoder.
These tests feed it what the fast path must hand back to the general one (frames split
anywhere, several messages in one read, a staging area grown by a large message) and the
checks it must still make (accept-list, limits, chunking, counters), over real sockets.
"""

from __future__ import annotations

import itertools
import random
import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codecs
from protocol.decoder import _STAGE_SIZE
from protocol.encodings import compression_for
from protocol.errors import BadMagic, ContentDisallowed, EncodeError, MessageTooLarge, Timeout
from protocol.framing import CLOSED, HEADER_SIZE, NEED_DATA, FrameDecoder, encode_message
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


# --- FrameDecoder.read_message: the fast step and its hand-over to the general path ----------


class Pieces:
    """A recv_into that hands out predetermined pieces, then EOF (as a socket would)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)
        self.calls = 0

    def __call__(self, buffer: bytearray | memoryview) -> int:
        self.calls += 1
        if not self.pieces:
            return 0
        piece = self.pieces.pop(0)
        k = min(len(piece), len(buffer))
        buffer[:k] = piece[:k]
        if k < len(piece):
            self.pieces.insert(0, piece[k:])
        return k


def _drain(decoder: FrameDecoder, recv: Pieces) -> list[tuple[int, bytes, int, int]]:
    """Messages as the blocking Connection reads them: read_message first, then the loop."""
    out = []
    while True:
        _n, codec_id, payload = decoder.read_message(recv)
        if payload is not None:
            out.append((codec_id, bytes(payload), 1, HEADER_SIZE + len(payload)))
            continue
        event = decoder.next_event()
        while event is NEED_DATA:
            decoder.read_from(recv)
            event = decoder.next_event()
        if event is CLOSED:
            return out
        out.append((event.codec_id, bytes(event.payload), event.frames, event.wire_bytes))


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=8),
    chunk=st.sampled_from([0, 0, 5, 64]),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
)
def test_read_message_gives_what_receive_data_gives_for_any_split(
    payloads: list[bytes], chunk: int, cuts: list[int]
) -> None:
    wire = b"".join(encode_message(0, p, chunk) for p in payloads)
    points = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    pieces = [wire[a:b] for a, b in itertools.pairwise(points)]
    reference = FrameDecoder()
    reference.receive_data(wire)
    reference.eof_received()
    expected = []
    while (event := reference.next_event()) is not CLOSED:
        expected.append((event.codec_id, bytes(event.payload), event.frames, event.wire_bytes))
    assert _drain(FrameDecoder(), Pieces(pieces)) == expected


def test_read_message_returns_a_whole_frame_and_leaves_the_next_staged() -> None:
    decoder = FrameDecoder()
    first, second = encode_message(0, b"one"), encode_message(0, b"two")
    recv = Pieces([first + second])
    decoder.read_from(Pieces([first[:3]]))  # the first read allocates the staging area
    assert decoder.next_event() is NEED_DATA
    assert decoder.read_message(recv) == (0, 0, None)  # something staged: nothing read
    assert recv.calls == 0
    decoder.read_from(Pieces([first[3:]]))
    assert bytes(decoder.next_event().payload) == b"one"  # type: ignore[union-attr]
    recv = Pieces([first + second])
    assert decoder.read_message(recv) == (len(first + second), 0, bytearray(b"one"))
    checked = FrameDecoder(check_codec=codecs.REGISTRY.accept_checker(frozenset({"raw"})))
    checked.read_from(Pieces([first]))
    checked.next_event()
    assert checked.read_message(Pieces([second]))[1] is codecs.get("raw")  # the check's answer
    assert decoder.read_message(Pieces([])) == (0, 0, None)  # the second is staged: not read
    assert bytes(decoder.next_event().payload) == b"two"  # type: ignore[union-attr]


def test_read_message_refuses_a_codec_outside_the_accept_list_for_good() -> None:
    check = codecs.REGISTRY.accept_checker(frozenset({"raw"}))
    decoder = FrameDecoder(check_codec=check)
    decoder.read_from(Pieces([encode_message(0, b"ok")]))
    assert bytes(decoder.next_event().payload) == b"ok"  # type: ignore[union-attr]
    with pytest.raises(ContentDisallowed):
        decoder.read_message(Pieces([encode_message(codecs.get("json").id, b"{}")]))
    with pytest.raises(ContentDisallowed):
        decoder.next_event()


def test_read_message_leaves_frames_it_does_not_take_to_next_event() -> None:
    """A chunked message, a too-large one and a bad magic: read, not judged, then judged."""
    decoder = FrameDecoder(max_message=8)
    decoder.read_from(Pieces([encode_message(0, b"ok")]))
    decoder.next_event()
    wire = encode_message(0, b"abcdef", 2)
    assert decoder.read_message(Pieces([wire])) == (len(wire), 0, None)
    assert bytes(decoder.next_event().payload) == b"abcdef"  # type: ignore[union-attr]
    assert decoder.read_message(Pieces([encode_message(0, b"x" * 9)]))[2] is None
    with pytest.raises(MessageTooLarge):
        decoder.next_event()
    other = FrameDecoder()
    other.read_from(Pieces([encode_message(0, b"ok")]))
    other.next_event()
    assert other.read_message(Pieces([b"XY" + encode_message(0, b"ok")[2:]]))[2] is None
    with pytest.raises(BadMagic):
        other.next_event()


def test_read_message_records_eof_between_messages() -> None:
    decoder = FrameDecoder()
    decoder.read_from(Pieces([encode_message(0, b"ok")]))
    decoder.next_event()
    assert decoder.read_message(Pieces([])) == (0, 0, None)
    assert decoder.next_event() is CLOSED


def test_read_message_steps_aside_for_a_signing_decoder() -> None:
    decoder = FrameDecoder(key=b"k" * 32)
    recv = Pieces([encode_message(0, b"ok")])
    assert decoder.read_message(recv) == (0, 0, None)
    assert recv.calls == 0


# --- settings assigned after construction still shape every message ---------------------------


def test_an_idle_timeout_assigned_later_bounds_the_next_receive() -> None:
    left, right = socket.socketpair()
    conn = Connection(right, codec="raw")
    try:
        left.sendall(encode_message(0, b"before"))
        assert bytes(conn.recv_message().payload) == b"before"  # the short way
        conn.idle_timeout = 0.05
        with pytest.raises(Timeout):
            conn.recv_message()
        conn.idle_timeout = None
        left.sendall(encode_message(0, b"after"))
        assert bytes(conn.recv_message().payload) == b"after"
    finally:
        conn.close()
        left.close()


def test_a_compression_assigned_later_compresses_the_next_send() -> None:
    left, right = socket.socketpair()
    a, b = Connection(left, codec="raw"), Connection(right, codec="raw")
    try:
        payload = b"la mancha " * 100
        assert a.send(payload).wire_bytes == HEADER_SIZE + len(payload)
        a.compression = compression_for("zstd")
        assert a.send(payload).wire_bytes < len(payload)
        a.compression = None
        assert a.send(payload).wire_bytes == HEADER_SIZE + len(payload)
        got = [b.recv_message() for _ in range(3)]
        assert [bytes(r.payload) for r in got] == [payload] * 3
        assert [r.encoding_id for r in got] == [0, compression_for("zstd").id, 0]
    finally:
        a.close()
        b.close()


def test_a_send_timeout_assigned_later_bounds_a_send_to_a_peer_that_never_reads() -> None:
    left, right = socket.socketpair()
    a = Connection(left, codec="raw")
    try:
        a.send_timeout = 0.2
        with pytest.raises(Timeout):
            for _ in range(100_000):  # fills both socket buffers, then waits and gives up
                a.send(b"x" * 4096)
        assert a.failed is not None  # a send that timed out mid-message fails the link
    finally:
        a.close()
        right.close()


def test_only_raw_skips_the_decode_and_only_bytes_skip_the_encode() -> None:
    """A raw payload is its own object, so the fast paths skip raw's decode and, for
    ``bytes``, its encode; every other codec and type still goes through the codec."""
    left, right = socket.socketpair()
    a = Connection(left, codec="raw")
    b = Connection(right, codec="raw", accept={"raw", "json"})
    try:
        a.send(b"bytes")
        got = b.recv_message()
        assert got.obj is got.payload and got.obj == b"bytes"
        a.send(bytearray(b"copied"))  # raw's encode makes bytes of it, as before
        assert b.recv_message().obj == b"copied"
        a.send({"k": [1]}, codec="json")
        assert b.recv_message().obj == {"k": [1]}  # decoded, not handed over as bytes
        with pytest.raises(EncodeError):
            a.send("not bytes")  # raw carries bytes only
        with pytest.raises(EncodeError):
            a.send(5)
        a.send(b"still usable")  # a refused encode sent nothing
        assert b.recv_message().obj == b"still usable"
    finally:
        a.close()
        b.close()
