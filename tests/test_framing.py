"""The sans-IO frame decoder: no sockets, every split of the input, every broken header."""

from __future__ import annotations

import itertools
import struct
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import codecs
from protocol.codecs import DEFAULT_ACCEPT, REGISTRY
from protocol.errors import (
    BadCompressedFrame,
    BadFlags,
    BadMagic,
    CodecChanged,
    ContentDisallowed,
    EncodingChanged,
    MessageTooLarge,
    ProtocolError,
    SignatureUnexpected,
    Truncated,
    UnknownCodec,
    UnknownEncoding,
    UnsupportedVersion,
)
from protocol.framing import (
    CLOSED,
    DEFAULT_MAX_MESSAGE,
    HEADER_SIZE,
    NEED_DATA,
    Chunk,
    FrameDecoder,
    Message,
    echo_chunk_size,
    encode_message,
    frame_count,
    pack_header,
)

HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def header(
    codec_id: int = 1,
    length: int = 0,
    *,
    flags: int = 0,
    magic: bytes = b"AY",
    version: int = 1,
    reserved: int = 0,
) -> bytes:
    return struct.pack(">2sBBBBI", magic, version, codec_id, flags, reserved, length)


@dataclass(frozen=True)
class Sent:
    codec_id: int
    payload: bytes
    chunk_size: int


def summary(event: Any) -> Any:
    """A comparable form of an event."""
    if isinstance(event, Message):
        return (
            "message",
            event.codec_id,
            bytes(event.payload),
            event.frames,
            event.chunk_size,
            event.wire_bytes,
        )
    if isinstance(event, Chunk):
        return ("chunk", event.codec_id, bytes(event.data), event.index, event.last)
    return event


def drain(decoder: FrameDecoder, stream: Any = False, out: list[Any] | None = None) -> list[Any]:
    """Pull events until NEED_DATA or CLOSED, appending them to ``out`` as they come."""
    out = [] if out is None else out
    while True:
        event = decoder.next_event(stream=stream)
        if event is NEED_DATA:
            return out
        out.append(event)
        if event is CLOSED:
            return out


def feed(pieces: Sequence[bytes], stream: Any = False, **kwargs: Any) -> list[Any]:
    """receive_data each piece, then EOF; every event in order (ending with CLOSED)."""
    decoder = FrameDecoder(**kwargs)
    events: list[Any] = []
    for piece in pieces:
        if piece:  # b"" would mean EOF
            decoder.receive_data(piece)
            events += drain(decoder, stream)
    decoder.receive_data(b"")
    events += drain(decoder, stream)
    return events


def byte_source(data: bytes, sizes: Sequence[int]) -> Callable[[memoryview], int]:
    """A recv_into that hands out ``data`` in pieces of the given sizes (cycled), then EOF."""
    pos = 0
    cycle = itertools.cycle(sizes)

    def recv_into(view: memoryview) -> int:
        nonlocal pos
        assert len(view) > 0, "read_from offered an empty buffer"
        n = min(len(view), next(cycle), len(data) - pos)
        view[:n] = data[pos : pos + n]
        pos += n
        return n

    return recv_into


def read_all(data: bytes, sizes: Sequence[int], stream: Any = False, **kwargs: Any) -> list[Any]:
    decoder = FrameDecoder(**kwargs)
    events: list[Any] = []
    recv_into = byte_source(data, sizes)
    for _ in range(10 * len(data) + 10):
        event = decoder.next_event(stream=stream)
        if event is NEED_DATA:
            decoder.read_from(recv_into)
            continue
        events.append(event)
        if event is CLOSED:
            return events
    raise AssertionError("decoder made no progress")


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def expected_messages(sent: Sequence[Sent]) -> list[Any]:
    out = []
    for m in sent:
        frames = frame_count(len(m.payload), m.chunk_size)
        out.append(
            (
                "message",
                m.codec_id,
                m.payload,
                frames,
                m.chunk_size if frames > 1 else 0,
                frames * HEADER_SIZE + len(m.payload),
            )
        )
    return [*out, CLOSED]


def expected_chunks(sent: Sequence[Sent]) -> list[Any]:
    out: list[Any] = []
    for m in sent:
        frames = frame_count(len(m.payload), m.chunk_size)
        size = m.chunk_size if frames > 1 else max(len(m.payload), 1)
        for i in range(frames):
            out.append(
                ("chunk", m.codec_id, m.payload[i * size : (i + 1) * size], i, i == frames - 1)
            )
    return [*out, CLOSED]


# --- strategies ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=12,
)
chunk_sizes = st.sampled_from([0, 1, 2, 3, 7, 10, 4096, 65536, 1 << 20]) | st.integers(1, 64)


@st.composite
def messages(draw: st.DrawFn) -> tuple[Sent, Any]:
    name = draw(st.sampled_from(["raw", "json", "msgpack"]))
    codec = codecs.get(name)
    obj = draw(st.binary(max_size=300)) if name == "raw" else draw(json_values)
    return Sent(codec.id, codec.encode(obj), draw(chunk_sizes)), obj


def wire_of(sent: Sequence[Sent]) -> bytes:
    return b"".join(encode_message(m.codec_id, m.payload, m.chunk_size) for m in sent)


# --- property tests ------------------------------------------------------------------------


@HYPOTHESIS
@given(
    batch=st.lists(messages(), max_size=6),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=40),
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=8),
)
def test_any_split_gives_the_same_messages(
    batch: list[tuple[Sent, Any]], cuts: list[int], sizes: list[int]
) -> None:
    sent = [m for m, _ in batch]
    wire = wire_of(sent)
    expected = expected_messages(sent)

    events = feed(split(wire, cuts))
    assert [summary(e) for e in events] == expected
    for event, (m, obj) in zip(events, batch, strict=False):
        assert codecs.get(m.codec_id).decode(event.payload) == obj
    assert [summary(e) for e in read_all(wire, sizes)] == expected


@HYPOTHESIS
@given(batch=st.lists(messages(), max_size=4))
def test_one_byte_at_a_time(batch: list[tuple[Sent, Any]]) -> None:
    sent = [m for m, _ in batch]
    wire = wire_of(sent)
    expected = expected_messages(sent)
    one_by_one = [wire[i : i + 1] for i in range(len(wire))]
    assert [summary(e) for e in feed(one_by_one)] == expected
    assert [summary(e) for e in read_all(wire, [1])] == expected


@HYPOTHESIS
@given(
    batch=st.lists(messages(), max_size=5),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=40),
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=8),
)
def test_stream_mode_yields_the_frames(
    batch: list[tuple[Sent, Any]], cuts: list[int], sizes: list[int]
) -> None:
    sent = [m for m, _ in batch]
    wire = wire_of(sent)
    expected = expected_chunks(sent)
    events = feed(split(wire, cuts), stream=True)
    assert [summary(e) for e in events] == expected
    assert [summary(e) for e in read_all(wire, sizes, stream=True)] == expected

    # the chunks of each message concatenate to its payload
    joined: list[bytes] = []
    current = b""
    for e in events[:-1]:
        current += bytes(e.data)
        if e.last:
            joined.append(current)
            current = b""
    assert joined == [m.payload for m in sent]


@HYPOTHESIS
@given(batch=st.lists(messages(), max_size=6), cuts=st.lists(st.integers(0, 1 << 16), max_size=20))
def test_stream_predicate_per_codec(batch: list[tuple[Sent, Any]], cuts: list[int]) -> None:
    sent = [m for m, _ in batch]
    expected: list[Any] = []
    for m in sent:
        if m.codec_id == 0:
            expected += expected_chunks([m])[:-1]
        else:
            expected += expected_messages([m])[:-1]
    events = feed(split(wire_of(sent), cuts), stream=lambda cid: cid == 0)
    assert [summary(e) for e in events] == [*expected, CLOSED]


# --- chunk sizes ---------------------------------------------------------------------------

BIG = bytes(range(256)) * 400  # 102 400 bytes


@pytest.mark.parametrize("chunk", [0, 1, 7, 4096, 65536, len(BIG), len(BIG) + 1, 1 << 24])
def test_chunk_sizes(chunk: int) -> None:
    wire = encode_message(0, BIG, chunk)
    frames = frame_count(len(BIG), chunk)
    assert frames == (1 if chunk in (0, len(BIG), len(BIG) + 1, 1 << 24) else -(-len(BIG) // chunk))
    assert len(wire) == frames * HEADER_SIZE + len(BIG)
    pieces = [wire[i : i + 3000] for i in range(0, len(wire), 3000)]
    (message, closed) = feed(pieces)
    assert closed is CLOSED
    assert bytes(message.payload) == BIG
    assert message.frames == frames
    assert message.chunk_size == (chunk if frames > 1 else 0)
    assert message.wire_bytes == len(wire)
    chunks = feed([wire], stream=True)[:-1]
    assert len(chunks) == frames
    assert all(len(c.data) <= (chunk or len(BIG)) for c in chunks)
    assert b"".join(c.data for c in chunks) == BIG
    assert [c.last for c in chunks] == [False] * (frames - 1) + [True]


def test_empty_message_is_one_empty_frame() -> None:
    wire = encode_message(1, b"", 5)
    assert wire == header(1, 0)
    (message, closed) = feed([wire])
    assert bytes(message.payload) == b""
    assert message.frames == 1
    assert closed is CLOSED


def test_zero_length_frames_inside_a_message() -> None:
    wire = header(0, 0, flags=1) + header(0, 3, flags=1) + b"abc" + header(0, 0, flags=1)
    wire += header(0, 2) + b"de"
    (message, closed) = feed([wire])
    assert bytes(message.payload) == b"abcde"
    assert message.frames == 4
    assert closed is CLOSED


# --- limits --------------------------------------------------------------------------------


def test_huge_header_refused_after_ten_bytes_without_allocating() -> None:
    lying = header(1, 0xFFFFFFFF)
    tracemalloc.start()
    try:
        decoder = FrameDecoder()
        decoder.receive_data(lying[:9])
        assert decoder.next_event() is NEED_DATA
        decoder.receive_data(lying[9:])
        with pytest.raises(MessageTooLarge) as info:
            decoder.next_event()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.size == 0xFFFFFFFF
    assert info.value.limit == DEFAULT_MAX_MESSAGE
    assert peak < 1 << 20, peak


def test_allocation_follows_arrival_not_the_claim() -> None:
    """A header announcing the whole 64 MiB, then a trickle, then EOF."""
    tracemalloc.start()
    try:
        decoder = FrameDecoder()
        decoder.receive_data(header(0, DEFAULT_MAX_MESSAGE) + b"x" * 100)
        assert decoder.next_event() is NEED_DATA
        decoder.receive_data(b"")
        with pytest.raises(Truncated):
            decoder.next_event()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak


def test_exactly_max_message_passes() -> None:
    wire = encode_message(0, b"x" * 100, 40)
    (message, _) = feed([wire], max_message=100)
    assert bytes(message.payload) == b"x" * 100


def test_single_frame_over_limit() -> None:
    decoder = FrameDecoder(max_message=100)
    decoder.receive_data(header(0, 101))
    with pytest.raises(MessageTooLarge) as info:
        decoder.next_event()
    assert (info.value.size, info.value.limit) == (101, 100)


def test_running_total_over_limit() -> None:
    decoder = FrameDecoder(max_message=100)
    decoder.receive_data(header(0, 40, flags=1) + b"a" * 40 + header(0, 40, flags=1) + b"b" * 40)
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(header(0, 40))  # 120 > 100, refused before its payload arrives
    with pytest.raises(MessageTooLarge) as info:
        decoder.next_event()
    assert (info.value.size, info.value.limit) == (120, 100)


def test_running_total_restarts_per_message() -> None:
    one = encode_message(0, b"x" * 80, 30)
    events = feed([one * 3], max_message=100)
    assert len(events) == 4
    assert all(bytes(e.payload) == b"x" * 80 for e in events[:3])


def test_stream_mode_limit_is_per_frame() -> None:
    wire = encode_message(0, b"x" * 300, 100)
    chunks = feed([wire], stream=True, max_message=100)[:-1]
    assert b"".join(c.data for c in chunks) == b"x" * 300
    decoder = FrameDecoder(max_message=100)
    decoder.receive_data(header(0, 101, flags=1))
    with pytest.raises(MessageTooLarge):
        decoder.next_event(stream=True)


def test_max_message_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_message=0)


def test_pack_header_refuses_lengths_that_do_not_fit() -> None:
    assert pack_header(3, 0xFFFFFFFF) == header(3, 0xFFFFFFFF)
    assert pack_header(3, 5, more=True) == header(3, 5, flags=1)
    with pytest.raises(MessageTooLarge):
        pack_header(1, 1 << 32)
    with pytest.raises(MessageTooLarge):
        pack_header(1, -1)


# --- bad headers ---------------------------------------------------------------------------

GOOD = encode_message(1, b"{}")


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (header(1, 2, magic=b"AZ") + b"{}", BadMagic),
        (b"GET / HTTP/1.1\r\n\r\n", BadMagic),
        (header(1, 2, version=0) + b"{}", UnsupportedVersion),
        (header(1, 2, version=2) + b"{}", UnsupportedVersion),
        (header(1, 2, version=255) + b"{}", UnsupportedVersion),
        (header(1, 2, flags=0x02) + b"{}", SignatureUnexpected),  # signed, and no key here
        (header(1, 2, flags=0x03) + b"{}", SignatureUnexpected),
        (header(1, 2, flags=0x04) + b"{}", BadFlags),  # a refusal must use codec 0
        (header(0, 2, flags=0x05) + b"\x01x", BadFlags),  # a refusal has no other flag
        (header(0, 0, flags=0x04), BadFlags),  # a refusal has a reason byte
        (header(0, 513, flags=0x04) + b"\x01" * 513, BadFlags),  # and at most 512 bytes
        (header(1, 2, flags=0x08) + b"{}", BadFlags),
        (header(1, 2, flags=0x80) + b"{}", BadFlags),
        (header(1, 2, flags=0xFF) + b"{}", BadFlags),
        (header(1, 2, reserved=1) + b"{}", BadCompressedFrame),  # byte 5 = 1: zstd, and not
        (header(1, 2, reserved=3) + b"{}", UnknownEncoding),  # 3-63: reserved encodings
        (header(1, 2, reserved=0x80) + b"{}", UnknownEncoding),
        (header(0, 2, flags=0x04, reserved=1) + b"\x01x", BadFlags),  # a refusal: identity
        (header(1, 1, flags=1) + b"{" + header(1, 1, reserved=2) + b"}", EncodingChanged),
        (header(1, 1, flags=1) + b"{" + header(0, 1) + b"}", CodecChanged),
        (header(1, 1, flags=1) + b"{" + header(3, 1) + b"}", CodecChanged),
    ],
)
def test_bad_headers(bad: bytes, error: type[ProtocolError]) -> None:
    for pieces in ([GOOD + bad], [GOOD, *[bytes([b]) for b in bad]]):
        decoder = FrameDecoder()
        events: list[Any] = []
        with pytest.raises(error) as info:
            for piece in pieces:
                decoder.receive_data(piece)
                drain(decoder, out=events)
        assert type(info.value) is error
        assert isinstance(info.value, ProtocolError)
        # the good message before the bad frame still came out
        assert [summary(e) for e in events] == expected_messages([Sent(1, b"{}", 0)])[:-1]
        # sticky: the same error again, from next_event and from receive_data
        with pytest.raises(error) as again:
            decoder.next_event()
        assert again.value is info.value
        with pytest.raises(error) as fed:
            decoder.receive_data(GOOD)
        assert fed.value is info.value
        with pytest.raises(error):
            decoder.read_from(byte_source(GOOD, [4]))


def test_bad_header_is_refused_before_its_payload() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(header(1, 1000, version=9))
    with pytest.raises(UnsupportedVersion):
        decoder.next_event()


# --- truncation and close ------------------------------------------------------------------

CHUNKED = encode_message(0, b"En un lugar de la Mancha", 10)


@pytest.mark.parametrize(
    "data",
    [
        GOOD[:1],  # mid-header
        GOOD[:9],
        GOOD[:-1],  # mid-payload
        GOOD + GOOD[:5],  # a whole message, then half a header
        CHUNKED[:20],  # after the first frame of a chunked message: between frames
        CHUNKED[:40],  # between the second and last frames
        CHUNKED[:25],  # inside a middle frame's payload
        header(0, 0, flags=1),  # an empty frame announcing more
    ],
)
def test_truncation(data: bytes) -> None:
    for pieces in ([data], [data[i : i + 1] for i in range(len(data))]):
        decoder = FrameDecoder()
        for piece in pieces:
            decoder.receive_data(piece)
            drain(decoder)
        decoder.receive_data(b"")
        with pytest.raises(Truncated) as info:
            drain(decoder)
        with pytest.raises(Truncated) as again:
            decoder.next_event()
        assert again.value is info.value
        with pytest.raises(Truncated):
            read_all(data, [3])


@pytest.mark.parametrize(
    ("data", "count"), [(b"", 0), (GOOD, 1), (GOOD + CHUNKED, 2), (CHUNKED * 3, 3)]
)
def test_eof_between_messages_is_closed(data: bytes, count: int) -> None:
    events = feed([data])
    assert events[-1] is CLOSED
    assert len(events) == count + 1
    assert all(isinstance(e, Message) for e in events[:-1])
    decoder = FrameDecoder()
    if data:
        decoder.receive_data(data)
    assert len(drain(decoder)) == count
    assert not decoder.in_message
    decoder.receive_data(b"")
    assert decoder.eof
    assert drain(decoder) == [CLOSED]
    assert decoder.next_event() is CLOSED  # and stays closed


def test_in_message_tracks_partial_input() -> None:
    decoder = FrameDecoder()
    assert not decoder.in_message
    decoder.receive_data(CHUNKED[:3])
    assert decoder.next_event() is NEED_DATA
    assert decoder.in_message
    decoder.receive_data(CHUNKED[3:20])
    assert decoder.next_event() is NEED_DATA
    assert decoder.in_message  # between frames of one message
    decoder.receive_data(CHUNKED[20:])
    assert isinstance(decoder.next_event(), Message)
    assert not decoder.in_message


# --- the accept-list hook ------------------------------------------------------------------


@pytest.mark.parametrize(("codec_id", "error"), [(2, ContentDisallowed), (99, UnknownCodec)])
def test_check_codec_refuses_before_payload(codec_id: int, error: type[Exception]) -> None:
    decoder = FrameDecoder(check_codec=REGISTRY.accept_checker(DEFAULT_ACCEPT))
    decoder.receive_data(header(codec_id, 1_000_000))  # the header alone, no payload yet
    with pytest.raises(error) as info:
        decoder.next_event()
    with pytest.raises(error) as again:
        decoder.next_event()
    assert again.value is info.value


def test_check_codec_comes_before_the_length_check() -> None:
    decoder = FrameDecoder(check_codec=REGISTRY.accept_checker(DEFAULT_ACCEPT))
    decoder.receive_data(header(2, 0xFFFFFFFF))
    with pytest.raises(ContentDisallowed):
        decoder.next_event()


def test_check_codec_called_once_per_message() -> None:
    seen: list[int] = []
    decoder = FrameDecoder(check_codec=seen.append)
    decoder.receive_data(CHUNKED + GOOD + CHUNKED)
    decoder.receive_data(b"")
    events = drain(decoder)
    assert len(events) == 4
    assert seen == [0, 1, 0]


def test_check_codec_accepts_pickle_when_configured() -> None:
    check = REGISTRY.accept_checker(DEFAULT_ACCEPT | {"pickle"})
    payload = codecs.get("pickle").encode({"a": 1})
    (message, _) = feed([encode_message(2, payload)], check_codec=check)
    assert codecs.get("pickle").decode(message.payload) == {"a": 1}


# --- issue 15, defect 8 (protocol part): an echo never sends more frames than came --------


@HYPOTHESIS
@given(
    sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=40),
)
def test_defect_8_echo_chunk_size_never_amplifies(sizes: list[int]) -> None:
    """Defect 8: a message of frames of any sizes echoes in at most as many frames."""
    payload = b"".join(bytes([i % 251]) * n for i, n in enumerate(sizes))
    wire = b"".join(
        pack_header(0, n, more=i < len(sizes) - 1) + bytes([i % 251]) * n
        for i, n in enumerate(sizes)
    )
    (message, _) = feed([wire])
    assert bytes(message.payload) == payload and message.frames == len(sizes)
    chunk = echo_chunk_size(len(message.payload), message.frames, message.chunk_size)
    echoed = feed([encode_message(0, message.payload, chunk)])[0]
    assert echoed.frames <= message.frames
    assert bytes(echoed.payload) == payload


def test_defect_8_the_issue_case() -> None:
    """Defect 8: a 1-byte first frame then 4 MiB comes back in two frames, not four million."""
    four_mib = 4 * 1024 * 1024
    chunk = echo_chunk_size(1 + four_mib, 2, 1)
    assert frame_count(1 + four_mib, chunk) <= 2
    assert echo_chunk_size(100, 1, 0) == 0
    assert echo_chunk_size(100, 10, 10) == 10  # a regular chunking is kept as it was


def test_a_whole_staged_single_frame_streams_as_its_one_last_chunk() -> None:
    """The one-step path serves streaming callers too: one frame, one last Chunk, same as the
    general path gives when the frame arrives in pieces."""
    wire = encode_message(0, b"hola")
    whole = FrameDecoder()
    whole.receive_data(wire)
    first = whole.next_event(stream=lambda codec_id: codec_id == 0)
    pieces = FrameDecoder()
    for i in range(len(wire)):
        pieces.receive_data(wire[i : i + 1])
    event = NEED_DATA
    while event is NEED_DATA:
        event = pieces.next_event(stream=True)
    for chunk in (first, event):
        assert isinstance(chunk, Chunk)
        assert (bytes(chunk.data), chunk.index, chunk.last) == (b"hola", 0, True)
    assert whole.next_event(stream=True) is NEED_DATA
