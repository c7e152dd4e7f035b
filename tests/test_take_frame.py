"""The event loop's fast path for one small message in one read keeps every rule of the
general one.

``FrameDecoder.take_frame`` is what ``FrameConnection.data_received`` asks first: a read
that is exactly one whole plain frame between messages becomes its event without being
staged. Anything else must be left untouched for ``receive_data`` and ``next_event``, which
then decide. These tests hold it to the general path's answer for any input, and drive a
real ``ayudantia eco`` with reads the fast path takes and reads it must hand on.
"""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import codecs
from protocol.errors import AyudantiaError, ContentDisallowed
from protocol.framing import HEADER_SIZE, NEED_DATA, FrameDecoder, encode_message
from tests.procs import running

HYPOTHESIS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEADER = struct.Struct(">2sBBBBI")
STREAM_RAW = (lambda cid: cid == 0, True, False)


def _decoder() -> FrameDecoder:
    return FrameDecoder(
        max_message=1000, check_codec=codecs.REGISTRY.accept_checker({"raw", "json", "msgpack"})
    )


def _general(data: bytes, stream) -> tuple[str, object]:
    """What receive_data then next_event make of ``data``: the event, or the error's type."""
    decoder = _decoder()
    try:
        decoder.receive_data(data)
        return "event", _summary(decoder.next_event(stream=stream))
    except AyudantiaError as exc:
        return "error", type(exc)


def _summary(event: object) -> object:
    if event is NEED_DATA:
        return event
    fields = event._asdict()  # type: ignore[attr-defined]
    payload = fields.pop("payload", None)
    data = fields.pop("data", None)
    body = payload if payload is not None else data
    assert isinstance(body, bytearray), type(body)  # the same type either way
    return type(event).__name__, bytes(body), tuple(sorted(fields.items()))


headers = st.builds(
    lambda magic, version, codec, flags, enc, length: HEADER.pack(
        magic, version, codec, flags, enc, length
    ),
    st.sampled_from([b"AY", b"AX", b"\x00\x00"]),
    st.sampled_from([1, 1, 1, 2]),
    st.sampled_from([0, 1, 2, 3, 200]),
    st.sampled_from([0, 0, 0, 1, 2, 4, 8]),
    st.sampled_from([0, 0, 0, 1, 9]),
    st.integers(0, 1200),
)


@HYPOTHESIS
@given(
    header=headers,
    body=st.binary(max_size=1100),
    cut=st.integers(-3, 3),
    stream=st.sampled_from(STREAM_RAW),
)
def test_take_frame_is_the_general_path_or_takes_nothing(header, body, cut, stream) -> None:
    """Any header (bad magic, version, flags, encoding, codec, length), any body, a length
    off by a few bytes either way: the fast path's event is the general path's, an error
    is the same error, and None leaves the decoder as it was, to read ``data`` as usual."""
    (length,) = struct.unpack_from(">I", header, 6)
    data = header + body[: max(0, length + cut)]
    expected = _general(data, stream)
    decoder = _decoder()
    try:
        event = decoder.take_frame(data, stream)
    except AyudantiaError as exc:
        assert expected == ("error", type(exc))
        with pytest.raises(type(exc)):  # it stays failed, as the general path would
            decoder.next_event()
        return
    if event is None:
        decoder.receive_data(data)  # nothing was taken: the general path still gets it all
        try:
            got = ("event", _summary(decoder.next_event(stream=stream)))
        except AyudantiaError as exc:
            got = ("error", type(exc))
        assert got == expected
        return
    assert expected == ("event", _summary(event))
    assert decoder.next_event(stream=stream) is NEED_DATA  # and nothing was left behind


def test_only_a_whole_frame_between_messages_is_taken() -> None:
    frame = encode_message(0, b"hola")
    decoder = _decoder()
    assert decoder.take_frame(frame + frame) is None  # two messages: the general path's
    assert decoder.take_frame(frame[:-1]) is None  # part of one
    decoder.receive_data(frame[:3])  # a header begun: between messages no longer
    assert decoder.take_frame(frame) is None
    chunked = encode_message(0, b"x" * 20, 8)
    fresh = _decoder()
    first = chunked[: HEADER_SIZE + 8]
    assert fresh.take_frame(first) is None  # a frame with MORE is not a message
    event = _decoder().take_frame(frame, STREAM_RAW[0])
    assert type(event).__name__ == "Chunk" and event.last and bytes(event.data) == b"hola"


def test_a_refused_codec_fails_the_decoder_as_the_general_path_does() -> None:
    decoder = _decoder()
    with pytest.raises(ContentDisallowed):
        decoder.take_frame(encode_message(2, b"{}"))  # pickle, outside the accept-list
    with pytest.raises(ContentDisallowed):
        decoder.receive_data(encode_message(0, b"later"))


@pytest.mark.timeout(60)
def test_a_real_eco_answers_reads_taken_whole_and_reads_handed_on() -> None:
    """One message per read (taken), two per read and split reads (handed on), and more
    than a turn's 64 in a row: every answer comes back, in order, byte for byte."""
    with (
        running("eco", "--port", "0", "--log-level", "WARNING") as eco,
        socket.create_connection((eco.host, eco.port), timeout=10) as sock,
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent = []
        for i in range(200):
            frame = encode_message(0, f"pregunta {i}".encode())
            if i % 3 == 0:
                sock.sendall(frame + encode_message(0, f"y {i}".encode()))
                sent += [f"pregunta {i}", f"y {i}"]
            elif i % 3 == 1:
                sock.sendall(frame[:4])
                sock.sendall(frame[4:])
                sent.append(f"pregunta {i}")
            else:
                sock.sendall(frame)
                sent.append(f"pregunta {i}")
            expected = b"".join(encode_message(0, s.encode()) for s in sent)
            got = b""
            while len(got) < len(expected):
                part = sock.recv(65536)
                assert part, "the eco closed the connection"
                got += part
            assert got == expected
            sent = []
