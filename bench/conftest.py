"""Fixtures and the parameter matrix of the Quijote benchmarks.

``uv run pytest --benchmark`` (see the root conftest) runs the full matrix, timed. The
ordinary ``uv run pytest`` runs a reduced matrix once, untimed, so the benchmark code is
exercised on every test run and cannot rot.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bench import _peers
from protocol import codecs

KiB = 1024
MiB = 1024 * KiB
# 0 = unchunked: the whole message in one frame.
CHUNK_SIZES = [1 * KiB, 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB, 0]
QUICK_CHUNK_SIZES = [4 * KiB, 0]

# A round is one ~2 MB transfer; these keep `pytest --benchmark` to a few minutes on 2 cores.
BOOK_ROUNDS = 60
BOOK_WARMUP = 3
SMALL_ROUNDS = 2000
SMALL_WARMUP = 100
# Each memory configuration gets a fresh receiving process and this many receives.
MEMORY_ROUNDS = 3
# Paired figures (bench._paired): sessions of interleaved rounds, fresh connections each.
SESSIONS = 5
PAIR_BOOK_ROUNDS = 400  # a pair of book rounds is about 1 ms: 0.4 s a session
PAIR_BOOK_WARMUP = 5
PAIR_BOOK_BLOCK = 10  # book rounds alternate in blocks of 10 (5-10 ms each)
PAIR_SMALL_ROUNDS = 2000
PAIR_SMALL_WARMUP = 100
PAIR_SMALL_BLOCK = 50  # small rounds alternate in blocks of 50 (a few ms each)
PAIR_CODEC_ROUNDS = 40
PAIR_CODEC_WARMUP = 2


def benchmarking_enabled(config: pytest.Config) -> bool:
    """Whether pytest-benchmark times things in this run (its own rule, plus --benchmark)."""
    if config.getoption("benchmark", default=False):
        return True
    disabled = config.getoption("benchmark_disable", default=False)
    return not disabled or bool(config.getoption("benchmark_enable", default=False))


def chunk_id(size: int) -> str:
    if size == 0:
        return "whole"
    if size % MiB == 0:
        return f"{size // MiB}MiB"
    return f"{size // KiB}KiB"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    full = benchmarking_enabled(metafunc.config)
    sizes = CHUNK_SIZES if full else QUICK_CHUNK_SIZES
    if "codec_name" in metafunc.fixturenames:
        metafunc.parametrize("codec_name", codecs.available())
    if "chunk_size" in metafunc.fixturenames:
        metafunc.parametrize("chunk_size", sizes, ids=chunk_id)
    if "stream_chunk_size" in metafunc.fixturenames:
        # A stream always has frames; send_stream's own default (64 KiB) stands in for 0.
        stream_sizes = [s for s in CHUNK_SIZES if s] if full else [4 * KiB, 1 * MiB]
        metafunc.parametrize("stream_chunk_size", stream_sizes, ids=chunk_id)


@pytest.fixture(scope="session")
def benchmarking(pytestconfig: pytest.Config) -> bool:
    return benchmarking_enabled(pytestconfig)


_FIRST_LINE = (
    "En un lugar de la Mancha, de cuyo nombre no quiero acordarme, no ha mucho tiempo "
    "que vivía un hidalgo de los de lanza en astillero, adarga antigua, rocín flaco y "
    "galgo corredor. ¿Señor? ¡Sancho, año, niño, corazón!"
)


def _synthetic_book(size: int = 2_100_000) -> str:
    """A stand-in of the book's size and alphabet (accents, ñ, ¿¡) that compresses like
    prose, a few times over: the book's first line repeated compressed 5,000x, past the
    256x a receiver accepts (protocol.encodings.MAX_RATIO), so an offline run's zstd
    round trips were refused."""
    words = _FIRST_LINE.split()
    rng = random.Random(2000)  # Project Gutenberg's number for the book: the same text always
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choices(words, k=rng.randint(8, 16))) + "\n"
        lines.append(line)
        total += len(line.encode())
    return "".join(lines).encode()[:size].decode("utf-8", "ignore")


@pytest.fixture(scope="session")
def book_text(benchmarking: bool) -> str:
    """The whole Quijote. Timed runs insist on the real book (downloading it if need be);
    untimed runs use it when it is at hand and a synthetic stand-in of its size otherwise,
    so an offline ``uv run pytest`` never waits on the network."""
    from ayudantia import quijote

    at_hand = os.environ.get(quijote.ENV_VAR) or quijote.cache_path().is_file()
    if benchmarking or at_hand:
        return quijote.load_text()
    return _synthetic_book()


@pytest.fixture(scope="session")
def book_bytes(book_text: str) -> bytes:
    return book_text.encode("utf-8")


def fresh_copy(text: str) -> str:
    """A new str object equal to ``text``, without CPython's cached UTF-8 form.

    Encoding the same str twice times a cache hit (msgpack and pickle read the cached UTF-8
    of a str), so every timed round gets a fresh copy, made outside the timed call.
    """
    return text[:1] + text[1:]


def book_message(text: str) -> dict[str, Any]:
    from ayudantia.quijote import book_message as make

    return make(text)


def codec_object(codec_name: str, text: str) -> Any:
    """What a codec carries in the benchmarks: the notebook's message with the whole book as
    "Texto", or, for ``raw`` (bytes only), the book's UTF-8 bytes."""
    if codec_name == "raw":
        return text.encode("utf-8")
    return book_message(text)


def rounds(benchmarking: bool, n: int) -> int:
    """``n`` in a timed run; once in the ordinary run (it only checks the code runs)."""
    return n if benchmarking else 1


def timed(benchmarking: bool, n: int, warmup: int) -> dict[str, int]:
    """``benchmark.pedantic``'s rounds and warmup: ``n`` after ``warmup`` untimed ones in a
    timed run, one round and no warmup in the ordinary run (one rule for every benchmark)."""
    return {"rounds": rounds(benchmarking, n), "warmup_rounds": warmup if benchmarking else 0}


def pair_rounds(benchmarking: bool, n: int) -> int:
    """Interleaved rounds per session: a handful in the ordinary run, so a ratio exists."""
    return n if benchmarking else 3


# --- servers -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, _peers.Server]]:
    """Peer processes started on first use, all stopped at the end of the session."""
    started: dict[str, _peers.Server] = {}
    try:
        yield started
    finally:
        for server in started.values():
            server.close()


def _server(servers: dict[str, _peers.Server], kind: str) -> _peers.Server:
    if kind not in servers:
        servers[kind] = _peers.Server(kind)
    return servers[kind]


@pytest.fixture
def server(servers: dict[str, _peers.Server]) -> Callable[[str], _peers.Server]:
    return lambda kind: _server(servers, kind)
