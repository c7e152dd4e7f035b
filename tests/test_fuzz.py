"""Fuzzing: arbitrary bytes into the frame decoder and every codec's decode.

Only the project's typed errors may come out (never another exception), and nothing hangs:
each example is small and the decoders are bounded by their input.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import codecs
from protocol.errors import AyudantiaError, CodecError, ProtocolError
from protocol.framing import CLOSED, NEED_DATA, Chunk, FrameDecoder, Message, encode_message
from protocol.signing import Signer

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = b"fuzz key"

# Inputs that start like a frame reach deeper states than uniform noise.
frame_like = st.builds(
    lambda codec, flags, length, body, tail: (
        b"AY\x01" + bytes([codec, flags, 0]) + length.to_bytes(4, "big") + body + tail
    ),
    st.sampled_from([0, 1, 2, 3, 7, 64, 255]),
    st.integers(0, 7),  # MORE, SIGNED and REFUSAL in every combination
    st.one_of(st.integers(0, 64), st.integers(0, 600), st.integers(0, 0xFFFFFFFF)),
    st.binary(max_size=80),
    st.binary(max_size=40),
)
anything = st.one_of(st.binary(max_size=300), frame_like)


def drain(dec: FrameDecoder, stream) -> int:
    for events in range(10_000):  # bounded: each event consumes at least a header
        ev = dec.next_event(stream=stream)
        if ev is NEED_DATA or ev is CLOSED:
            return events
        assert isinstance(ev, Message | Chunk)
    raise AssertionError("decoder produced events without consuming input")


@FUZZ
@given(
    data=anything,
    splits=st.lists(st.integers(1, 50), max_size=20),
    stream=st.booleans(),
    key=st.sampled_from([None, KEY]),
    max_message=st.sampled_from([1, 64, 1024 * 1024]),
)
def test_frame_decoder_only_typed_errors(data, splits, stream, key, max_message):
    checker = codecs.REGISTRY.accept_checker(codecs.DEFAULT_ACCEPT)
    dec = FrameDecoder(max_message=max_message, check_codec=checker, key=key)
    try:
        pos = 0
        for size in [*splits, len(data)]:
            piece = data[pos : pos + size]
            pos += size
            if piece:
                dec.receive_data(piece)
                drain(dec, stream)
        dec.receive_data(b"")
        drain(dec, stream)
    except (ProtocolError, CodecError):
        pass


@FUZZ
@given(payload=st.binary(max_size=200), chunk=st.integers(0, 40), flip=st.integers(0, 10_000))
def test_signed_frames_survive_only_intact(payload, chunk, flip):
    wire = bytearray(encode_message(1, payload, chunk, signer=Signer(KEY)))
    dec = FrameDecoder(key=KEY)
    dec.receive_data(bytes(wire))
    ev = dec.next_event()
    assert isinstance(ev, Message) and bytes(ev.payload) == payload
    wire[flip % len(wire)] ^= 1 << (flip % 8)
    dec = FrameDecoder(key=KEY)
    dec.receive_data(bytes(wire))
    dec.receive_data(b"")
    with pytest.raises(ProtocolError):
        drain(dec, False)


@pytest.mark.parametrize("name", codecs.available())
def test_codec_decode_only_typed_errors(name):
    codec = codecs.get(name)

    @FUZZ
    @given(
        data=st.one_of(
            st.binary(max_size=400),
            st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                lambda inner: st.lists(inner, max_size=4),
                max_leaves=20,
            ).map(lambda obj: codecs.get("json").encode(obj)),
        ),
        max_message=st.sampled_from([1, 100, 64 * 1024 * 1024]),
    )
    def check(data, max_message):
        try:
            codec.decode(data, max_message=max_message)
        except CodecError:
            pass
        except AyudantiaError as exc:  # any other family is a bug in the wrapper
            raise AssertionError(f"{name}: {type(exc).__name__}") from exc

    check()
