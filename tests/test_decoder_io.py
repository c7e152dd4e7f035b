"""The decoder's memory and its two input paths (issue 15, defect 7; asyncio's BufferedProtocol).

Memory: whatever headers claim, ``FrameDecoder.allocated`` stays within
``ALLOCATION_FACTOR * received + ALLOCATION_SLACK``. Input: bytes copied in with
``receive_data`` and bytes written straight into ``get_buffer`` views give the same events.
"""

from __future__ import annotations

import itertools
import random
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import ProtocolError, Refused
from protocol.framing import (
    ALLOCATION_FACTOR,
    ALLOCATION_SLACK,
    CLOSED,
    DEFAULT_MAX_MESSAGE,
    NEED_DATA,
    Chunk,
    FrameDecoder,
    Message,
    encode_message,
    encode_refusal,
)

HYPOTHESIS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def header(codec_id: int, length: int, flags: int = 0) -> bytes:
    return struct.pack(">2sBBBBI", b"AY", 1, codec_id, flags, 0, length)


def bound(received: int) -> int:
    return ALLOCATION_FACTOR * received + ALLOCATION_SLACK


# A frame-like stream: headers declaring up to the whole 64 MiB, followed by some payload
# bytes (never all of a large one: the lying peer), any codec the decoder accepts.
frames = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 3]),
        st.integers(0, DEFAULT_MAX_MESSAGE),
        st.booleans(),
        st.integers(0, 300_000),
    ),
    min_size=1,
    max_size=6,
)


def lying_stream(spec: list[tuple[int, int, bool, int]]) -> bytes:
    out = bytearray()
    for codec_id, declared, more, sent in spec:
        out += header(codec_id, declared, 1 if more else 0) + b"\x00" * min(sent, declared)
    return bytes(out)


@pytest.mark.timeout(120)
@HYPOTHESIS
@given(
    spec=frames,
    cuts=st.lists(st.integers(1, 70_000), min_size=1, max_size=12),
    via=st.sampled_from(["copy", "view"]),
)
def test_defect_7_allocation_follows_received_bytes(
    spec: list[tuple[int, int, bool, int]], cuts: list[int], via: str
) -> None:
    """Defect 7: in any split, either input path, the decoder holds <= 5x received + 128 KiB."""

    def within_bound(decoder: FrameDecoder, received: int) -> None:
        assert decoder.allocated <= bound(received), (decoder.allocated, received)

    for stream in (False, True):
        run(lying_stream(spec), cuts, stream, via, within_bound)


def test_defect_7_ten_bytes_cost_kilobytes_not_megabytes() -> None:
    """Defect 7: the issue's case, a header declaring 60 MiB and nothing else."""
    decoder = FrameDecoder()
    decoder.receive_data(header(0, 60 << 20))
    assert decoder.next_event() is NEED_DATA
    decoder.get_buffer()  # where the next bytes would go: the payload buffer, started small
    assert decoder.allocated <= 2 * 64 * 1024
    assert FrameDecoder().allocated == 0  # an idle connection costs nothing


def test_defect_7_big_message_still_arrives_whole_in_few_reallocations() -> None:
    payload = random.Random(1).randbytes(2_200_000)  # about the book
    wire = encode_message(0, payload)
    decoder = FrameDecoder()
    pos = 0
    sizes_seen = set()
    while (event := decoder.next_event()) is NEED_DATA:
        view = decoder.get_buffer()
        n = min(len(view), len(wire) - pos)
        view[:n] = wire[pos : pos + n]
        decoder.buffer_updated(n)
        pos += n
        sizes_seen.add(decoder.allocated)
    assert isinstance(event, Message)
    assert bytes(event.payload) == payload
    assert len(sizes_seen) <= 12  # geometric growth: a handful of sizes, not one per read


# --- get_buffer / buffer_updated against receive_data ------------------------------------


def summary(event: Any) -> Any:
    if isinstance(event, Message):
        return ("m", event.codec_id, bytes(event.payload), event.frames, event.chunk_size)
    if isinstance(event, Chunk):
        return ("c", event.codec_id, bytes(event.data), event.index, event.last)
    return event


def put(decoder: FrameDecoder, data: bytes, pos: int, n: int, via: str) -> int:
    """Give the decoder up to ``n`` bytes from ``pos``: copied in, or into get_buffer's view."""
    if via == "copy":
        piece = data[pos : pos + n]
        decoder.receive_data(piece)
        return len(piece)
    view = decoder.get_buffer(-1)
    n = min(len(view), n, len(data) - pos)
    view[:n] = data[pos : pos + n]
    decoder.buffer_updated(n)
    return n


def run(
    data: bytes,
    cuts: list[int],
    stream: bool,
    via: str,
    watch: Callable[[FrameDecoder, int], None] | None = None,
) -> list[Any]:
    """Every event (summarised) and the error that ended it, feeding ``data`` in ``cuts``."""
    decoder = FrameDecoder()
    out: list[Any] = []
    pos = 0
    try:
        for i in itertools.count():
            if watch is not None:
                watch(decoder, pos)
            event = decoder.next_event(stream=stream)
            if event is CLOSED:
                out.append(event)
                break
            if event is not NEED_DATA:
                out.append(summary(event))
            elif pos == len(data):
                decoder.eof_received()
            else:
                pos += put(decoder, data, pos, cuts[i % len(cuts)], via)
    except ProtocolError as exc:
        out.append(type(exc).__name__)
    return out


messages = st.lists(
    st.tuples(st.sampled_from([0, 1, 3]), st.binary(max_size=3000), st.integers(0, 700)),
    max_size=6,
)


@HYPOTHESIS
@given(
    batch=messages,
    cuts=st.lists(st.integers(1, 5000), min_size=1, max_size=10),
    stream=st.booleans(),
    tail=st.sampled_from([b"", b"AY", encode_refusal(2, "too big"), b"XX\x01\x00\x00\x00"]),
)
def test_get_buffer_and_receive_data_give_the_same_events(
    batch: list[tuple[int, bytes, int]], cuts: list[int], stream: bool, tail: bytes
) -> None:
    data = b"".join(encode_message(c, p, k) for c, p, k in batch) + tail
    by_copy = run(data, cuts, stream, "copy")
    assert run(data, cuts, stream, "view") == by_copy
    assert len([e for e in by_copy if isinstance(e, tuple) and (e[0] == "m" or e[-1])]) == len(
        batch
    )


def test_buffer_updated_checks_its_argument() -> None:
    decoder = FrameDecoder()
    with pytest.raises(RuntimeError):
        decoder.buffer_updated(1)  # no buffer was handed out
    view = decoder.get_buffer()
    with pytest.raises(ValueError):
        decoder.buffer_updated(0)  # EOF is eof_received(), not zero bytes
    view = decoder.get_buffer()
    with pytest.raises(ValueError):
        decoder.buffer_updated(len(view) + 1)
    view = decoder.get_buffer()
    view[:12] = encode_message(1, b"{}")
    decoder.buffer_updated(12)
    with pytest.raises(ValueError):
        view[0]  # the lent view is released: the decoder may resize its buffers again
    assert bytes(decoder.next_event().payload) == b"{}"
    decoder.eof_received()
    assert decoder.next_event() is CLOSED


# --- refusal frames in the decoder ----------------------------------------------------------


@pytest.mark.parametrize("split", [1, 3, 11, 1000])
def test_refusal_frame_raises_refused_sticky(split: int) -> None:
    wire = encode_message(1, b"{}") + encode_refusal(1, "this server accepts json; not pickle")
    decoder = FrameDecoder()
    events: list[Any] = []
    with pytest.raises(Refused) as info:
        for pos in range(0, len(wire), split):
            decoder.receive_data(wire[pos : pos + split])
            while (event := decoder.next_event()) is not NEED_DATA:
                events.append(event)
    assert [bytes(e.payload) for e in events] == [b"{}"]
    assert (info.value.code, info.value.reason, info.value.permanent) == (1, "codec", True)
    assert info.value.text == "this server accepts json; not pickle"
    with pytest.raises(Refused) as again:
        decoder.next_event()
    assert again.value is info.value


def test_refusal_text_from_a_peer_is_sanitised() -> None:
    hostile = b"\x06" + b"ocupado\x1b[2J\x07\nfin" + b"\xff\xfe"
    wire = header(0, len(hostile), 0x04) + hostile
    decoder = FrameDecoder()
    decoder.receive_data(wire)
    with pytest.raises(Refused) as info:
        decoder.next_event()
    assert info.value.reason == "busy" and not info.value.permanent
    assert info.value.text == "ocupado[2Jfin\ufffd\ufffd"
    assert all(ch.isprintable() for ch in info.value.text)


def test_refusal_mid_message_is_malformed() -> None:
    from protocol.errors import BadFlags

    decoder = FrameDecoder()
    decoder.receive_data(encode_message(0, b"abcd", 2)[:12] + encode_refusal(5, "x"))
    with pytest.raises(BadFlags):
        while decoder.next_event() is not NEED_DATA:
            pass


def test_refusal_truncated_by_eof() -> None:
    from protocol.errors import Truncated

    decoder = FrameDecoder()
    decoder.receive_data(encode_refusal(3, "this frame is signed and this server has no key")[:20])
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(b"")
    with pytest.raises(Truncated):
        decoder.next_event()
