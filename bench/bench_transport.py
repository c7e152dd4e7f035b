"""Part 2: the book over real loopback sockets, codec x chunk size, and against the peers.

A round is a round trip: the sender encodes and sends, the receiver (another process)
receives, decodes, and answers one byte. The absolute curves (``transfer-*``, ``peers``,
``small``) report each round's time; bench.report shows their median and interquartile
range. Every ratio (ayudantia against a plain socket or multiprocessing.connection) is a
paired figure (bench._paired): both sides alternate round by round in one test, sessions
of fresh connections, so the ratio does not depend on which spell of noise each side met.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import pytest

from bench import _affinity, _paired, _peers
from bench.conftest import (
    BOOK_ROUNDS,
    BOOK_WARMUP,
    PAIR_BOOK_BLOCK,
    PAIR_BOOK_ROUNDS,
    PAIR_BOOK_WARMUP,
    PAIR_SMALL_BLOCK,
    PAIR_SMALL_ROUNDS,
    PAIR_SMALL_WARMUP,
    SESSIONS,
    SMALL_ROUNDS,
    SMALL_WARMUP,
    MiB,
    chunk_id,
    codec_object,
    fresh_copy,
    pair_rounds,
    rounds,
    timed,
)
from protocol.framing import HEADER_SIZE


def _time_book(benchmark, benchmarking, fn, **pedantic):
    return benchmark.pedantic(
        fn,
        **timed(benchmarking, BOOK_ROUNDS, BOOK_WARMUP),
        **pedantic,
    )


def test_transfer_whole(benchmark, benchmarking, server, codec_name, chunk_size, book_text):
    """The message sent with ``send`` and received whole with ``recv_message``, decoded."""
    benchmark.group = "transfer-whole"
    client = _peers.AyudantiaClient(server("ayudantia").port, codec_name, chunk_size)
    try:
        if codec_name == "raw":
            # bytes have no cached form: send the same object, as the peers do.
            payload = codec_object("raw", book_text)
            setup = lambda: ((payload,), {})  # noqa: E731
        else:
            setup = lambda: ((codec_object(codec_name, fresh_copy(book_text)),), {})  # noqa: E731
        sent = _time_book(benchmark, benchmarking, client.round_trip, setup=setup)
    finally:
        client.close()
    benchmark.extra_info.update(
        kind="transfer",
        mode="whole",
        codec=codec_name,
        chunk_size=chunk_size,
        wire_bytes=sent.wire_bytes,
        frames=sent.frames,
    )


def test_transfer_stream(benchmark, benchmarking, server, stream_chunk_size, book_bytes):
    """The book as a raw stream: ``send_stream`` from a file object, ``recv_stream``."""
    benchmark.group = "transfer-stream"
    conn = _peers.ayudantia_client(server("ayudantia").port, "stream", codec="raw")
    try:

        def round_trip(source):
            sent = conn.send_stream(source, chunk_size=stream_chunk_size)
            conn.recv_message()
            return sent

        sent = _time_book(
            benchmark, benchmarking, round_trip, setup=lambda: ((io.BytesIO(book_bytes),), {})
        )
    finally:
        conn.close()
    benchmark.extra_info.update(
        kind="transfer",
        mode="stream",
        codec="raw",
        chunk_size=stream_chunk_size,
        wire_bytes=sent.wire_bytes,
        frames=sent.frames,
    )


# --- the baseline and the peers a user would pick instead --------------------------------------

PEERS = ["baseline", "mpconn", "zmq"]
PEER_NAMES = {
    "baseline": "plain socket",
    "mpconn": "multiprocessing.connection",
    "zmq": "pyzmq",
}


@pytest.mark.parametrize("peer", PEERS)
def test_peer_book(benchmark, benchmarking, server, peer, book_bytes):
    """The book's bytes, round trip, through a plain socket and the alternatives."""
    if peer == "zmq":
        pytest.importorskip("zmq")
    benchmark.group = "transfer-peers"
    client = _peers.peer_client(peer, server(peer).port)
    try:
        _time_book(benchmark, benchmarking, client.round_trip, args=(book_bytes,))
    finally:
        client.close()
    # The book's bytes, as ayudantia's raw rows count theirs minus a 24-byte header.
    benchmark.extra_info.update(kind="peer", peer=peer, codec=peer, wire_bytes=len(book_bytes))


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
    client = _peers.peer_client(peer, server(peer).port)
    try:
        benchmark.pedantic(
            client.round_trip,
            args=(payload,),
            **timed(benchmarking, SMALL_ROUNDS, SMALL_WARMUP),
        )
    finally:
        client.close()
    benchmark.extra_info.update(kind="small", peer=peer, codec=peer, wire_bytes=len(payload))


def test_small_ayudantia(benchmark, benchmarking, server, codec_name, small_text):
    """The notebook's small message (raw: its "Texto" as bytes), whole, round trip."""
    from ayudantia.quijote import NOTEBOOK_MESSAGE

    benchmark.group = "small-roundtrip"
    obj = small_text.encode("utf-8") if codec_name == "raw" else dict(NOTEBOOK_MESSAGE)
    client = _peers.AyudantiaClient(server("ayudantia").port, codec_name)
    try:
        sent = benchmark.pedantic(
            client.round_trip,
            args=(obj,),
            **timed(benchmarking, SMALL_ROUNDS, SMALL_WARMUP),
        )
    finally:
        client.close()
    assert sent.wire_bytes > HEADER_SIZE
    benchmark.extra_info.update(
        kind="small", peer="ayudantia", codec=codec_name, wire_bytes=sent.wire_bytes
    )


# --- paired figures ------------------------------------------------------------------------------

# figure -> (ayudantia raw chunk size, peer, ratio). Chosen in advance, not the best of many:
# "fraction" is the peer's time over ayudantia's (share of the peer's speed), "times" is
# ayudantia's time over the peer's.
BOOK_PAIRS = {
    "transfer.raw-whole.vs-socket": (0, "baseline", "fraction"),
    "transfer.raw-1MiB.vs-socket": (1 * MiB, "baseline", "fraction"),
    "book.raw-whole.vs-mpconn": (0, "mpconn", "times"),
}


def _pair_session(server, peer, chunk_size, payload, n, warmup, placement="unpinned", block=1):
    """One session: fresh connections to both sides, warmed alike, rounds interleaved.

    Both sides are served by one thread of one peer process (``duo-<peer>``), so that
    whatever core the scheduler wakes it on, both sides of the pair pay the same."""
    duo = server(f"duo-{peer}")
    with _placement(placement, [duo.process.pid]):
        ours = _peers.AyudantiaClient(duo.ports[0], "raw", chunk_size)
        theirs = _peers.peer_client(peer, duo.ports[1])
        try:
            t_ours, t_peer = _paired.interleave(
                _paired.timed(ours.round_trip, lambda: (payload,)),
                _paired.timed(theirs.round_trip, lambda: (payload,)),
                n,
                warmup,
                block,
            )
        finally:
            ours.close()
            theirs.close()
    return t_ours, t_peer


@contextlib.contextmanager
def _placement(placement: str, pids: list[int]) -> Iterator[None]:
    if placement == "pinned":
        with _affinity.pinned(pids):
            yield
    elif placement == "split":
        with _affinity.split(pids):
            yield
    else:
        yield


def book_placement(peer: str) -> str:
    """Where a book pair runs: against multiprocessing, the client on one CPU and the duo on
    another ("split"); against the plain socket, where the scheduler puts them.

    Left to the scheduler, the duo woke on the client's core in some full sessions and on
    the other in others, and book.raw-whole.vs-mpconn read 1.06x in one and 0.60x in the
    next: on one core multiprocessing's receiver pays most (an ``os.read`` of all that
    remains, allocated, for each of many short reads), split the two receivers cost about
    the same (0.72x-1.19x over 52 sessions). Split is two machines' placement, and the
    less kind to ayudantia. The plain socket's pairs read alike unpinned in every full
    session so far; bench/notes.md has what each placement makes of them. With one CPU
    there is only one placement."""
    return "split" if peer == "mpconn" and _affinity.can_split() else "unpinned"


@pytest.mark.parametrize("figure", list(BOOK_PAIRS))
def test_book_pair(benchmark, benchmarking, server, figure, book_bytes):
    """ayudantia's raw book round trip against a plain socket's or multiprocessing's."""
    chunk_size, peer, ratio = BOOK_PAIRS[figure]
    benchmark.group = "pair-book"
    n = pair_rounds(benchmarking, PAIR_BOOK_ROUNDS)
    warmup = PAIR_BOOK_WARMUP if benchmarking else 1
    placement = book_placement(peer)

    def session():
        t_ours, t_peer = _pair_session(
            server, peer, chunk_size, book_bytes, n, warmup, placement, PAIR_BOOK_BLOCK
        )
        if ratio == "fraction":
            return _paired.summarize(t_peer, t_ours)
        return _paired.summarize(t_ours, t_peer)

    names = (PEER_NAMES[peer], f"ayudantia raw {chunk_id(chunk_size)}")
    _paired.record(
        benchmark,
        rounds(benchmarking, SESSIONS),
        session,
        figure=figure,
        numerator=names[0] if ratio == "fraction" else names[1],
        denominator=names[1] if ratio == "fraction" else names[0],
        chunk_size=chunk_size,
        peer=peer,
        placement=placement,
        payload_bytes=len(book_bytes),
    )


@pytest.mark.parametrize("placement", ["pinned", "unpinned"])
def test_small_pair(benchmark, benchmarking, server, placement, small_text):
    """The small message, ayudantia raw against multiprocessing.connection, on one pinned
    core (CPU cost) and unpinned (what the scheduler adds)."""
    if placement == "pinned" and not _affinity.can_pin():
        pytest.skip("this platform cannot pin processes to a CPU")
    benchmark.group = "pair-small"
    payload = small_text.encode("utf-8")
    n = pair_rounds(benchmarking, PAIR_SMALL_ROUNDS)
    warmup = PAIR_SMALL_WARMUP if benchmarking else 1

    def session():
        t_ours, t_peer = _pair_session(
            server, "mpconn", 0, payload, n, warmup, placement, PAIR_SMALL_BLOCK
        )
        return _paired.summarize(t_ours, t_peer)

    _paired.record(
        benchmark,
        rounds(benchmarking, SESSIONS),
        session,
        figure=f"small.raw.vs-mpconn.{placement}",
        numerator="ayudantia raw",
        denominator=PEER_NAMES["mpconn"],
        placement=placement,
        payload_bytes=len(payload),
    )
