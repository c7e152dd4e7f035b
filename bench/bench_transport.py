"""Part 2: the book over real loopback sockets, codec x chunk size, against a raw socket.

A round is a round trip: the sender encodes and sends, the receiver (another process)
receives, decodes, and answers one byte. ``mb_per_s`` is wire bytes over the best round;
``ratio_to_baseline`` divides it by the best plain-socket round trip of the book in the same
session (``baseline_rate``). The peers a user would pick instead do the same round trip.
"""

from __future__ import annotations

import io

import pytest

from bench import _peers
from bench.conftest import (
    BOOK_ROUNDS,
    BOOK_WARMUP,
    SMALL_ROUNDS,
    SMALL_WARMUP,
    Timed,
    codec_object,
    fresh_copy,
    rounds,
)
from protocol.framing import HEADER_SIZE


def _record(benchmark, timed: Timed, baseline_rate: float, **info) -> None:
    rate = info["wire_bytes"] / timed.best
    benchmark.extra_info.update(
        info,
        mb_per_s=round(rate / 1e6, 2),
        ratio_to_baseline=round(rate / baseline_rate, 4),
        baseline_mb_per_s=round(baseline_rate / 1e6, 2),
    )


def _time_book(benchmark, benchmarking, fn, **pedantic) -> tuple[Timed, object]:
    """Time ``fn`` over the book's rounds; warm-up rounds are left out of the record."""
    timed = Timed(fn)
    result = benchmark.pedantic(
        timed,
        rounds=rounds(benchmarking, BOOK_ROUNDS),
        warmup_rounds=BOOK_WARMUP if benchmarking else 0,
        **pedantic,
    )
    if benchmarking:
        timed.times = timed.times[BOOK_WARMUP:]
    return timed, result


def test_transfer_whole(
    benchmark, benchmarking, server, baseline_rate, codec_name, chunk_size, book_text
):
    """The message sent with ``send`` and received whole with ``recv_message``, decoded."""
    benchmark.group = "transfer-whole"
    conn = _peers.ayudantia_client(server("ayudantia").port, "whole", codec=codec_name)
    try:

        def round_trip(obj):
            sent = conn.send(obj, chunk_size=chunk_size)
            conn.recv_message()
            return sent

        if codec_name == "raw":
            # bytes have no cached form: send the same object, as the baseline does.
            payload = codec_object("raw", book_text)
            setup = lambda: ((payload,), {})  # noqa: E731
        else:
            setup = lambda: ((codec_object(codec_name, fresh_copy(book_text)),), {})  # noqa: E731
        timed, sent = _time_book(benchmark, benchmarking, round_trip, setup=setup)
    finally:
        conn.close()
    _record(
        benchmark,
        timed,
        baseline_rate,
        kind="transfer",
        mode="whole",
        codec=codec_name,
        chunk_size=chunk_size,
        wire_bytes=sent.wire_bytes,
        frames=sent.frames,
    )


def test_transfer_stream(
    benchmark, benchmarking, server, baseline_rate, stream_chunk_size, book_bytes
):
    """The book as a raw stream: ``send_stream`` from a file object, ``recv_stream``."""
    benchmark.group = "transfer-stream"
    conn = _peers.ayudantia_client(server("ayudantia").port, "stream", codec="raw")
    try:

        def round_trip(source):
            sent = conn.send_stream(source, chunk_size=stream_chunk_size)
            conn.recv_message()
            return sent

        timed, sent = _time_book(
            benchmark, benchmarking, round_trip, setup=lambda: ((io.BytesIO(book_bytes),), {})
        )
    finally:
        conn.close()
    _record(
        benchmark,
        timed,
        baseline_rate,
        kind="transfer",
        mode="stream",
        codec="raw",
        chunk_size=stream_chunk_size,
        wire_bytes=sent.wire_bytes,
        frames=sent.frames,
    )


# --- the baseline and the peers a user would pick instead --------------------------------------

PEERS = ["baseline", "mpconn", "zmq"]


def _peer_client(kind: str, port: int, size: int):
    if kind == "baseline":
        return _peers.BaselineClient(port, size)
    if kind == "mpconn":
        return _peers.MpConnClient(port)
    return _peers.ZmqClient(port)


@pytest.mark.parametrize("peer", PEERS)
def test_peer_book(benchmark, benchmarking, server, baseline_rate, peer, book_bytes):
    """The book's bytes, round trip, through a plain socket and the alternatives."""
    if peer == "zmq":
        pytest.importorskip("zmq")
    benchmark.group = "transfer-peers"
    client = _peer_client(peer, server(peer).port, len(book_bytes))
    try:
        timed, _ = _time_book(benchmark, benchmarking, client.round_trip, args=(book_bytes,))
    finally:
        client.close()
    _record(
        benchmark,
        timed,
        baseline_rate,
        kind="peer",
        peer=peer,
        codec=peer,
        chunk_size=0,
        wire_bytes=len(book_bytes),
        frames=1,
    )


# --- a small message: latency, not bandwidth -------------------------------------------------


@pytest.fixture(scope="module")
def small_text() -> str:
    from ayudantia.quijote import NOTEBOOK_MESSAGE

    return NOTEBOOK_MESSAGE["Texto"]


@pytest.mark.parametrize("peer", PEERS)
def test_small_peer(benchmark, benchmarking, server, peer, small_text):
    if peer == "zmq":
        pytest.importorskip("zmq")
    benchmark.group = "small-roundtrip"
    payload = small_text.encode("utf-8")
    client = _peer_client(peer, server(peer).port, len(payload))
    try:
        benchmark.pedantic(
            client.round_trip,
            args=(payload,),
            rounds=rounds(benchmarking, SMALL_ROUNDS),
            warmup_rounds=SMALL_WARMUP if benchmarking else 0,
        )
    finally:
        client.close()
    benchmark.extra_info.update(kind="small", peer=peer, codec=peer, wire_bytes=len(payload))


def test_small_ayudantia(benchmark, benchmarking, server, codec_name, small_text):
    """The notebook's small message (raw: its "Texto" as bytes), whole, round trip."""
    from ayudantia.quijote import NOTEBOOK_MESSAGE

    benchmark.group = "small-roundtrip"
    obj = small_text.encode("utf-8") if codec_name == "raw" else dict(NOTEBOOK_MESSAGE)
    conn = _peers.ayudantia_client(server("ayudantia").port, "whole", codec=codec_name)
    try:

        def round_trip():
            sent = conn.send(obj)
            conn.recv_message()
            return sent

        sent = benchmark.pedantic(
            round_trip,
            rounds=rounds(benchmarking, SMALL_ROUNDS),
            warmup_rounds=SMALL_WARMUP if benchmarking else 0,
        )
    finally:
        conn.close()
    assert sent.wire_bytes > HEADER_SIZE
    benchmark.extra_info.update(
        kind="small", peer="ayudantia", codec=codec_name, wire_bytes=sent.wire_bytes
    )
