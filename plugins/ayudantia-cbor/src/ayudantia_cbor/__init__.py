"""CBOR for ayudantia: the codec plug-in the registry finds through its entry point.

The registry calls :func:`codec` once, at its first lookup, and adds what it returns
under id 64 (ids 64-255 are for plug-ins). Nothing in ayudantia names this module: the
``[project.entry-points."ayudantia.codecs"]`` table of this distribution's pyproject is
the whole registration, which is what the plug-in exists to prove.

Decoding is hostile input, as for every codec: a peer can declare a container of four
billion items in five bytes, so :func:`decode` first walks the item heads and refuses any
count the payload cannot hold (one byte per item at least), before cbor2 allocates. Tags
are kept as plain data: the semantic tags cbor2 would turn into objects (regular
expressions, decimals with huge exponents, sets) are refused, so decoding a peer's CBOR
never does more than build dicts, lists, strings, bytes and numbers.

Encoding is RFC 8949 §4.2's preferred serialization for numbers: a float is written in the
shortest of half, single and double precision that gives back the same value (1.5 is
``f93e00``, NaN ``f97e00``, infinity ``f97c00``), and an integer must fit CBOR's major types
0 and 1 (-2**64 .. 2**64-1). cbor2 would write a larger one as a bignum (tags 2 and 3),
which :func:`decode` refuses like every tag: the encoder refuses it first, with an
:class:`EncodeError`, so that what this codec writes its own decoder always reads.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import cbor2

from protocol.codecs import Codec
from protocol.errors import DecodeError, EncodeError

CODEC_ID = 64
# CBOR's major types (the top 3 bits of an item's first byte) that the head walk handles.
_MAJOR_BYTES, _MAJOR_TEXT, _MAJOR_ARRAY, _MAJOR_MAP, _MAJOR_TAG, _MAJOR_SIMPLE = 2, 3, 4, 5, 6, 7
_PLAIN_SIMPLE = (20, 21, 22)  # false, true, null
MAX_DEPTH = 400  # cbor2's own limit on nested containers
# The head walk is Python: about a microsecond an item, on the server's event loop. Without
# a cap, 64 MiB of one-byte items held the loop for a minute and a half; a million items
# cost about a second, as much as msgpack's C decoder spends on its own worst case.
MAX_ITEMS = 1_000_000
# The integers CBOR's major types 0 and 1 hold without a tag.
MIN_INT, MAX_INT = -(2**64), 2**64 - 1
_HALF, _SINGLE, _DOUBLE = 0xF9, 0xFA, 0xFB  # major type 7 heads of the three float widths
_NAN = bytes((_HALF, 0x7E, 0x00))  # the canonical quiet NaN, in half precision


def _encode_float(encoder: cbor2.CBOREncoder, value: float) -> None:
    """The shortest of half, single and double precision that round-trips ``value`` exactly."""
    if math.isnan(value):
        encoder.write(_NAN)
        return
    for head, fmt in ((_HALF, ">e"), (_SINGLE, ">f")):
        try:
            packed = struct.pack(fmt, value)
        except OverflowError:  # too large for this width (finite, beyond its maximum)
            continue
        if struct.unpack(fmt, packed)[0] == value:
            encoder.write(bytes((head,)) + packed)
            return
    encoder.write(bytes((_DOUBLE,)) + struct.pack(">d", value))


def _encode_int(encoder: cbor2.CBOREncoder, value: int) -> None:
    """An integer in major type 0 or 1, or :class:`EncodeError` (never a bignum tag)."""
    if not MIN_INT <= value <= MAX_INT:
        raise EncodeError(
            "cbor", f"an integer of {value.bit_length()} bits is outside -2**64 .. 2**64-1"
        )
    encoder.encode_int(value)


_ENCODERS = {float: _encode_float, int: _encode_int}


def encode(obj: Any) -> bytes:
    """CBOR with definite lengths and preferred numbers; maps keep their order.

    Maps are not sorted (that would be §4.2.1's deterministic encoding, which this codec
    does not promise): they keep their order, as json and msgpack do here.
    """
    return cbor2.dumps(obj, encoders=_ENCODERS)


def decode(data: bytes | bytearray | memoryview, max_message: int) -> Any:
    """Plain data from a peer's CBOR, or :class:`DecodeError` (raised before allocating)."""
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    _check_heads(view, min(len(view), max_message))
    return cbor2.loads(bytes(view))


def _check_heads(view: memoryview, limit: int) -> None:
    """Walk every item head: no count beyond ``limit``, no tags, no indefinite lengths.

    Also plain data only among the simple values (false, true, null and floats: no
    ``undefined``, no unassigned simple values, which cbor2 turns into its own objects),
    map keys that are scalars (a container key comes back as a tuple or a frozendict),
    and no nesting deeper than cbor2 itself would take, checked here so that the walk's
    own stack stays small; and at most :data:`MAX_ITEMS` items, so that the walk's own
    time stays bounded.
    """
    pos, end = 0, len(view)
    open_: list[list[int]] = [[1, 0]]  # per open container: [items left, 1 for a map]
    budget = MAX_ITEMS  # items inside containers (the top-level one is not counted)
    while open_:
        top = open_[-1]
        if not top[0]:
            open_.pop()
            continue
        top[0] -= 1
        is_key = top[1] and top[0] % 2  # a map's 2n items alternate key, value
        if pos >= end:
            raise DecodeError("cbor", "truncated item")
        major, info = view[pos] >> 5, view[pos] & 0x1F
        pos += 1
        if info < 24:
            value = info
        elif info <= 27:
            size = 1 << (info - 24)
            if pos + size > end:
                raise DecodeError("cbor", "truncated item head")
            value = int.from_bytes(view[pos : pos + size], "big")
            pos += size
        elif info == 31:
            what = "stray break" if major == 7 else "indefinite lengths are not accepted"
            raise DecodeError("cbor", what)
        else:
            raise DecodeError("cbor", f"reserved additional information {info}")
        if major == _MAJOR_TAG:
            raise DecodeError("cbor", f"tag {value} is not accepted (plain data only)")
        if major == _MAJOR_SIMPLE and info < 25 and value not in _PLAIN_SIMPLE:
            raise DecodeError("cbor", f"simple value {value} is not accepted (plain data only)")
        if major in (_MAJOR_BYTES, _MAJOR_TEXT):
            if value > end - pos:
                raise DecodeError("cbor", f"a string of {value} bytes in {end - pos} left")
            pos += value
        elif major in (_MAJOR_ARRAY, _MAJOR_MAP):
            if is_key:
                raise DecodeError("cbor", "a map key must be a number or a string")
            items = value * (2 if major == _MAJOR_MAP else 1)
            if items > limit or items > end - pos:
                raise DecodeError("cbor", f"a container of {value} items in {end - pos} bytes")
            budget -= items
            if budget < 0:
                raise DecodeError("cbor", f"more than {MAX_ITEMS:,} items in one message")
            if len(open_) > MAX_DEPTH:
                raise DecodeError("cbor", f"nested deeper than {MAX_DEPTH}")
            open_.append([items, int(major == _MAJOR_MAP)])
    if pos != end:
        raise DecodeError("cbor", f"{end - pos} bytes after the item")


def codec() -> Codec:
    """What the ``ayudantia.codecs`` entry point gives the registry."""
    return Codec(
        "cbor",
        CODEC_ID,
        "application/cbor",
        True,
        encode,
        decode,
        "CBOR (RFC 8949), a plug-in: compact binary, readable by any language",
    )
