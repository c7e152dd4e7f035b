"""The offline stand-in for the book (bench.conftest._synthetic_book) must be accepted by
the receivers it is sent to: compressed, no frame of it may pass the inflate limit
(protocol.encodings.inflate_limit). The first stand-in, one line repeated, compressed
5,000x under zstd and every offline ``uv run pytest`` failed its zstd round trip."""

from __future__ import annotations

import pytest

from bench.conftest import MiB, _synthetic_book
from protocol import encodings


@pytest.fixture(scope="module")
def book() -> bytes:
    return _synthetic_book().encode()


def test_the_stand_in_is_the_books_size_and_utf8(book: bytes) -> None:
    assert 2_099_990 <= len(book) <= 2_100_000
    text = book.decode("utf-8")
    assert {"ñ", "¿", "¡", "í"} <= set(text)
    assert text == _synthetic_book()  # the same text every run: figures stay comparable


@pytest.mark.parametrize("name", ["zstd", "lz4"])
@pytest.mark.parametrize("chunk", [64 * 1024, MiB, 0], ids=["64KiB", "1MiB", "whole"])
def test_every_frame_of_it_inflates_within_the_receivers_limit(
    book: bytes, name: str, chunk: int
) -> None:
    encoding = encodings.get(name)
    step = chunk or len(book)
    for start in range(0, len(book), step):
        part = book[start : start + step]
        packed = encoding.compressor(part, None)
        assert len(part) <= encodings.inflate_limit(len(packed)), (name, start, len(packed))
