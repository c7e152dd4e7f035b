"""Compression on the wire (header byte 5): registry, framing, signing, accept-lists, bombs."""

from __future__ import annotations

import os
import socket

import lz4.frame
import pytest
import zstandard

from protocol.encodings import (
    DEFAULT_ACCEPT,
    RATIO_FLOOR,
    REGISTRY,
    Compression,
    Registry,
    compression_by_id,
    compression_for,
)
from protocol.errors import (
    BadSignature,
    EncodingDisallowed,
    EncodingError,
    MessageTooLarge,
    RatioTooHigh,
    SizeMismatch,
    UndeclaredSize,
    UnknownEncoding,
)
from protocol.framing import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    NEED_DATA,
    VERSION,
    FrameDecoder,
    encode_message,
    refusal_for,
)
from protocol.signing import Signer
from protocol.transport import Connection

BOOKISH = ("En un lugar de la Mancha, de cuyo nombre no quiero acordarme. " * 400).encode()
ALL = [None, compression_for("zstd"), compression_for("zstd", 1), compression_for("lz4")]


def frame(payload: bytes, encoding: int, codec: int = 0, flags: int = 0) -> bytes:
    return HEADER.pack(MAGIC, VERSION, codec, flags, encoding, len(payload)) + payload


def decode_all(wire: bytes, step: int = 0, **kw) -> list:
    decoder = FrameDecoder(**kw)
    events = []
    for pos in range(0, len(wire), step or len(wire)):
        decoder.receive_data(wire[pos : pos + (step or len(wire))])
        while (event := decoder.next_event()) is not NEED_DATA:
            events.append(event)
    return events


def test_registry_names_ids_and_cli_choices() -> None:
    assert REGISTRY.available()[:3] == ["identity", "zstd", "lz4"]
    assert REGISTRY.choices()[:3] == ["none", "zstd", "lz4"]
    assert [REGISTRY.get(n).id for n in ("none", "identity", "zstd", "lz4")] == [0, 0, 1, 2]
    assert compression_for("none") is None and compression_by_id(0) is None
    assert compression_by_id(2) == Compression(REGISTRY.get("lz4"))
    with pytest.raises(UnknownEncoding, match="available: identity, zstd, lz4"):
        REGISTRY.get("brotli")
    with pytest.raises(ValueError, match="64-255"):
        Registry(load_plugins=False).register(REGISTRY.get("zstd"))


@pytest.mark.parametrize("compression", ALL, ids=lambda c: "none" if c is None else repr(c))
@pytest.mark.parametrize("chunk", [0, 1000, 7919])
def test_round_trip_any_split(compression: Compression | None, chunk: int) -> None:
    wire = encode_message(0, BOOKISH, chunk, compression=compression)
    if compression is not None:
        assert len(wire) < len(BOOKISH) / 3
    for step in (0, 1009):
        (message,) = decode_all(wire, step)
        assert bytes(message.payload) == BOOKISH
        assert message.encoding_id == (compression.id if compression else 0)
        assert message.chunk_size == (chunk if chunk else 0)  # data size, not wire size
        assert message.wire_bytes == len(wire)


def test_streamed_frames_inflate_one_by_one() -> None:
    wire = encode_message(0, BOOKISH, 4096, compression=compression_for("lz4"))
    decoder = FrameDecoder()
    decoder.receive_data(wire)
    chunks = []
    while (event := decoder.next_event(stream=True)) is not NEED_DATA:
        chunks.append(event)
    assert all(len(c.data) <= 4096 and c.encoding_id == 2 for c in chunks)
    assert b"".join(bytes(c.data) for c in chunks) == BOOKISH


def test_signed_tag_covers_the_compressed_bytes() -> None:
    key = b"clave"
    wire = bytearray(
        encode_message(
            1,
            b'"' + BOOKISH + b'"',
            0,
            signer=Signer(key, side="client"),
            compression=compression_for("zstd"),
        )
    )
    (message,) = decode_all(bytes(wire), key=key, side="server")
    assert bytes(message.payload) == b'"' + BOOKISH + b'"' and message.encoding_id == 1
    wire[HEADER_SIZE + 20] ^= 1  # one compressed bit: the tag refuses it before zstd sees it
    with pytest.raises(BadSignature):
        decode_all(bytes(wire), key=key, side="server")


def test_unknown_or_refused_encoding_is_refused_at_the_header() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(HEADER.pack(MAGIC, VERSION, 0, 0, 9, 1_000_000))  # no payload yet
    with pytest.raises(UnknownEncoding) as info:
        decoder.next_event()
    code, text = refusal_for(info.value)
    assert code == 1 and "no content encoding 9" in text
    strict = FrameDecoder(check_encoding=REGISTRY.accept_checker({"identity"}))
    strict.receive_data(HEADER.pack(MAGIC, VERSION, 0, 0, 1, 1_000_000))
    with pytest.raises(EncodingDisallowed, match="accepted: identity"):
        strict.next_event()
    assert {"identity", "zstd", "lz4"} == DEFAULT_ACCEPT


def zstd_gib_of_zeros() -> bytes:
    """A real zstd frame of 1 GiB of zeros, built in 1 MiB steps (it is ~32 KiB)."""
    cobj = zstandard.ZstdCompressor(level=1).compressobj(size=1 << 30)
    zeros = bytes(1 << 20)
    out = [cobj.compress(zeros) for _ in range(1024)]
    out.append(cobj.flush())
    return b"".join(out)


def lying_zstd() -> bytes:
    """200 bytes compressed, declared as 100 (a single-segment frame's 1-byte size field)."""
    data = bytearray(zstandard.ZstdCompressor(level=3).compress(os.urandom(200)))
    assert data[4] & 0xE0 == 0x20 and data[5] == 200  # single segment, 1-byte content size
    data[5] = 100
    return bytes(data)


def lying_lz4() -> bytes:
    """A frame header declaring 100 bytes (its checksum valid) on the blocks of 5000."""
    declared = lz4.frame.compress(b"a" * 100, store_size=True)
    actual = lz4.frame.compress(BOOKISH[:5000], store_size=True)
    descriptor = 4 + 1 + 1 + 8 + 1  # magic, FLG, BD, content size, header checksum
    return declared[:descriptor] + actual[descriptor:]


SKIPPABLE = (0x184D2A50).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"abcd"


def zstd_with_dictionary() -> bytes:
    """A frame that needs a dictionary the receiver does not have."""
    samples = [os.urandom(8) + b"hola mundo %d" % i for i in range(2000)]
    zdict = zstandard.train_dictionary(1024, samples)
    return zstandard.ZstdCompressor(dict_data=zdict).compress(BOOKISH[:500])


def lz4_bad_block_checksum() -> bytes:
    data = bytearray(lz4.frame.compress(BOOKISH[:500], store_size=True, block_checksum=True))
    data[-6] ^= 1  # the last block's checksum (the end mark follows)
    return bytes(data)


BOMBS = {
    "zstd-1GiB-zeros": (lambda: frame(zstd_gib_of_zeros(), 1), MessageTooLarge),
    "zstd-no-size": (
        lambda: frame(zstandard.ZstdCompressor(write_content_size=False).compress(BOOKISH), 1),
        UndeclaredSize,
    ),
    "zstd-lying": (lambda: frame(lying_zstd(), 1), SizeMismatch),
    "zstd-trailing": (
        lambda: frame(zstandard.ZstdCompressor().compress(b"x") * 2, 1),
        SizeMismatch,
    ),
    "lz4-no-size": (
        lambda: frame(lz4.frame.compress(BOOKISH, store_size=False), 2),
        UndeclaredSize,
    ),
    "lz4-lying": (lambda: frame(lying_lz4(), 2), SizeMismatch),
    "garbage": (lambda: frame(b"not zstd at all", 1), EncodingError),
    # a skippable frame declares its own length as a content size: before, after or alone
    "zstd-skippable-first": (lambda: frame(SKIPPABLE + zstandard.compress(b"x"), 1), SizeMismatch),
    "zstd-skippable-after": (lambda: frame(zstandard.compress(b"x") + SKIPPABLE, 1), SizeMismatch),
    "zstd-skippable-alone": (lambda: frame(SKIPPABLE, 1), SizeMismatch),
    "zstd-dictionary": (lambda: frame(zstd_with_dictionary(), 1), SizeMismatch),
    "lz4-two-frames": (
        lambda: frame(lz4.frame.compress(b"x", store_size=True) * 2, 2),
        SizeMismatch,
    ),
    "lz4-bad-block-checksum": (lambda: frame(lz4_bad_block_checksum(), 2), SizeMismatch),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", BOMBS)
def test_bombs_refused_with_a_typed_error_before_allocating(name: str) -> None:
    make, error = BOMBS[name]
    wire = make()
    decoder = FrameDecoder(max_message=1024 * 1024)
    decoder.receive_data(wire)
    with pytest.raises(error):
        decoder.next_event()
    assert decoder.allocated < 4 * len(wire) + 256 * 1024  # never the declared gigabyte


@pytest.mark.parametrize("compression", ALL[1:], ids=["zstd", "zstd-1", "lz4"])
def test_an_empty_message_round_trips_compressed(compression: Compression) -> None:
    # liblz4 cannot declare a content size of 0: the empty frame declares none
    (message,) = decode_all(encode_message(0, b"", compression=compression))
    assert bytes(message.payload) == b"" and message.encoding_id == compression.id
    empty = lz4.frame.compress(b"", content_checksum=True)
    assert bytes(decode_all(frame(empty, 2))[0].payload) == b""
    with pytest.raises(UndeclaredSize):  # a block after all: no size, refused as before
        decode_all(frame(empty[:7] + b"\x01\x00\x00\x80x" + empty[7:], 2))


def zstd_64mib_of_zeros() -> bytes:
    """2 KB of zstd that declares 64 MiB of zeros: exactly what max_message allows."""
    cobj = zstandard.ZstdCompressor(level=3).compressobj(size=64 << 20)
    zeros = bytes(1 << 20)
    return b"".join([*(cobj.compress(zeros) for _ in range(64)), cobj.flush()])


@pytest.mark.timeout(60)
def test_a_frame_inflating_past_the_ratio_is_refused_before_allocating() -> None:
    bomb = zstd_64mib_of_zeros()
    assert len(bomb) < 4096  # the whole attack is a couple of kilobytes
    decoder = FrameDecoder()  # max_message 64 MiB: the size alone would let it through
    decoder.receive_data(frame(bomb, 1))
    with pytest.raises(RatioTooHigh) as info:
        decoder.next_event()
    assert isinstance(info.value, MessageTooLarge) and info.value.declared == 64 << 20
    assert decoder.allocated < 256 * 1024
    code, text = refusal_for(info.value)
    assert code == 2 and f"of {len(bomb)} bytes" in text and str(64 << 20) in text
    # very repetitive data still passes in frames of the floor; in one frame it is refused
    zeros, zstd = bytes(4 << 20), compression_for("zstd")
    (message,) = decode_all(encode_message(0, zeros, chunk_size=RATIO_FLOOR, compression=zstd))
    assert bytes(message.payload) == zeros
    with pytest.raises(RatioTooHigh):
        decode_all(encode_message(0, zeros, compression=zstd))


def test_frames_small_each_summing_beyond_max_message_are_refused() -> None:
    one = frame(zstandard.ZstdCompressor().compress(bytes(256 * 1024)), 1, flags=1)  # MORE
    decoder = FrameDecoder(max_message=1024 * 1024)
    decoder.receive_data(one * 5)  # 5 x 256 KiB declared, each fine, 1.25 MiB together
    with pytest.raises(MessageTooLarge):
        decoder.next_event()
    assert decoder.allocated < 2 * 1024 * 1024


def test_connection_compresses_and_counts_wire_bytes() -> None:
    a, b = socket.socketpair()
    obj = {"texto": BOOKISH.decode(), "n": 1605}
    with (
        Connection(a, codec="msgpack", compression=compression_for("zstd", 1)) as left,
        Connection(b, codec="msgpack") as right,
    ):
        sent = left.send(obj, chunk_size=8192)
        got = right.recv_message()
        assert got.obj == obj and got.encoding_id == 1 and got.frames == sent.frames > 1
        assert got.chunk_size == 8192 and sent.wire_bytes == got.wire_bytes < len(BOOKISH) / 5
        assert right.send_payload(0, b"plain", compression=None).wire_bytes == HEADER_SIZE + 5
        assert bytes(left.recv_message().payload) == b"plain"
