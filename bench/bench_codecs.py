"""Part 1: encode and decode of the notebook's message with the whole book as "Texto".

Every registered codec (plug-ins included). ``raw`` carries bytes only, so its row is the
floor any text codec stands on: the book's str to UTF-8 and back. Each encode round gets a
fresh copy of the book (see :func:`bench.conftest.fresh_copy`).

The ``json-impl`` group times stdlib ``json`` (``ensure_ascii=False``) against orjson on the
same message, whatever the json codec itself uses.

The codec ratios (json against msgpack, msgpack against pickle) are paired figures
(bench._paired): encode+decode of both codecs alternate round by round in one test.
"""

from __future__ import annotations

import json

import pytest

from bench import _paired
from bench.conftest import (
    BOOK_ROUNDS,
    BOOK_WARMUP,
    PAIR_CODEC_ROUNDS,
    PAIR_CODEC_WARMUP,
    SESSIONS,
    codec_object,
    fresh_copy,
    pair_rounds,
    rounds,
    timed,
)
from protocol import codecs


def _check_roundtrip(codec_name: str, decoded: object, text: str) -> None:
    if codec_name == "raw":
        assert decoded == text
    else:
        assert isinstance(decoded, dict)
        assert decoded["Texto"] == text


def test_encode(benchmark, benchmarking, codec_name, book_text, book_bytes):
    codec = codecs.get(codec_name)
    benchmark.group = "encode"
    if codec_name == "raw":

        def target(text: str) -> bytes:
            return codec.encode(text.encode("utf-8"))
    else:

        def target(text: str) -> bytes:
            return codec.encode(codec_object(codec_name, text))

    wire = benchmark.pedantic(
        target,
        setup=lambda: ((fresh_copy(book_text),), {}),
        **timed(benchmarking, BOOK_ROUNDS, BOOK_WARMUP),
    )
    benchmark.extra_info.update(kind="encode", codec=codec_name, **_sizes(wire, book_bytes))


def _sizes(wire: bytes | bytearray, book_bytes: bytes) -> dict[str, float]:
    """What an encode or decode row reports of its payload: its bytes against the text's."""
    return {
        "wire_bytes": len(wire),
        "text_bytes": len(book_bytes),
        "size_vs_text": round(len(wire) / len(book_bytes), 5),
    }


def test_decode(benchmark, benchmarking, codec_name, book_text, book_bytes):
    codec = codecs.get(codec_name)
    benchmark.group = "decode"
    # The receiver's payload is the decoder's bytearray; decode from the same type.
    payload = bytearray(codec.encode(codec_object(codec_name, book_text)))
    if codec_name == "raw":

        def target(data: bytearray) -> object:
            return codec.decode(data).decode("utf-8")
    else:

        def target(data: bytearray) -> object:
            return codec.decode(data)

    decoded = benchmark.pedantic(
        target,
        args=(payload,),
        **timed(benchmarking, BOOK_ROUNDS, BOOK_WARMUP),
    )
    _check_roundtrip(codec_name, decoded, book_text)
    benchmark.extra_info.update(kind="decode", codec=codec_name, **_sizes(payload, book_bytes))


# --- json implementations: stdlib (what the codec uses) vs orjson --------------------------


def _stdlib_dumps(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(
        "utf-8"
    )


def _stdlib_loads(data: bytearray) -> object:
    return json.loads(str(data, "utf-8"))


def _implementations() -> dict[str, tuple]:
    impls = {"stdlib": (_stdlib_dumps, _stdlib_loads)}
    try:
        import orjson
    except ImportError:
        return impls
    impls["orjson"] = (orjson.dumps, orjson.loads)
    return impls


@pytest.mark.parametrize("impl", ["stdlib", "orjson"])
@pytest.mark.parametrize("op", ["encode", "decode"])
def test_json_impl(benchmark, benchmarking, impl, op, book_text, book_bytes):
    impls = _implementations()
    if impl not in impls:
        pytest.skip(f"{impl} is not installed (uv sync --group bench)")
    dumps, loads = impls[impl]
    benchmark.group = f"json-impl-{op}"
    payload = bytearray(_stdlib_dumps(codec_object("json", book_text)))
    if op == "encode":
        wire = benchmark.pedantic(
            lambda text: dumps(codec_object("json", text)),
            setup=lambda: ((fresh_copy(book_text),), {}),
            **timed(benchmarking, BOOK_ROUNDS, BOOK_WARMUP),
        )
        # Same bytes on the wire: orjson writes compact UTF-8, like the codec.
        assert wire == payload
    else:
        decoded = benchmark.pedantic(
            loads,
            args=(payload,),
            **timed(benchmarking, BOOK_ROUNDS, BOOK_WARMUP),
        )
        assert decoded["Texto"] == book_text
    benchmark.extra_info.update(
        kind=f"json-{op}", impl=impl, wire_bytes=len(payload), text_bytes=len(book_bytes)
    )


# --- paired codec ratios ---------------------------------------------------------------------

# figure -> (numerator codec, denominator codec): encode+decode time of one over the other's.
CODEC_PAIRS = {
    "codec.json.vs-msgpack": ("json", "msgpack"),
    "codec.msgpack.vs-pickle": ("msgpack", "pickle"),
}


def _encode_decode(codec_name: str, text: str) -> _paired.Step:
    """One round of a codec: encode the message with a fresh copy of the book, decode it."""
    codec = codecs.get(codec_name)
    _check_roundtrip(
        codec_name, codec.decode(bytearray(codec.encode(codec_object(codec_name, text)))), text
    )

    def both(obj: object) -> object:
        return codec.decode(bytearray(codec.encode(obj)))

    return _paired.timed(both, lambda: (codec_object(codec_name, fresh_copy(text)),))


@pytest.mark.parametrize("figure", list(CODEC_PAIRS))
def test_codec_pair(benchmark, benchmarking, figure, book_text):
    numerator, denominator = CODEC_PAIRS[figure]
    benchmark.group = "pair-codec"
    n = pair_rounds(benchmarking, PAIR_CODEC_ROUNDS)
    warmup = PAIR_CODEC_WARMUP if benchmarking else 0

    def session():
        a, b = _encode_decode(numerator, book_text), _encode_decode(denominator, book_text)
        return _paired.summarize(*_paired.interleave(a, b, n, warmup))

    _paired.record(
        benchmark,
        rounds(benchmarking, SESSIONS),
        session,
        figure=figure,
        numerator=numerator,
        denominator=denominator,
    )
