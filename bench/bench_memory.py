"""Part 3: the receiver's peak memory, whole vs streamed receive, at each chunk size.

The receiver is a process of its own that does nothing else; around one receive it resets
tracemalloc's peak and the kernel's RSS high-water mark (``/proc/self/clear_refs``) and
sends back the extra bytes each saw. ``peak_bytes`` is tracemalloc's (Python allocations,
exact); ``rss_peak_bytes`` the resident set's (includes the allocator's slack, and pages the
process already had count as free). The round time is incidental (tracemalloc slows it).
"""

from __future__ import annotations

import pytest

from bench import _peers
from bench.conftest import MEMORY_ROUNDS, rounds


@pytest.fixture(scope="module")
def memory_server():
    # Its own process: no other connection may allocate while a receive is measured.
    with _peers.Server("ayudantia") as srv:
        yield srv


def _measure(benchmark, benchmarking, port: int, mode: str, chunk_size: int, book_bytes: bytes):
    conn = _peers.ayudantia_client(port, f"mem-{mode}", codec="raw")
    results: list[dict] = []
    try:

        def round_trip():
            if mode == "stream":
                conn.send_stream([book_bytes], chunk_size=chunk_size)
            else:
                conn.send(book_bytes, chunk_size=chunk_size)
            results.append(_peers.mem_result(conn))

        benchmark.pedantic(round_trip, rounds=rounds(benchmarking, MEMORY_ROUNDS))
    finally:
        conn.close()
    assert all(r["payload_bytes"] == len(book_bytes) for r in results)
    rss = [r["rss_peak_bytes"] for r in results if r["rss_peak_bytes"] is not None]
    benchmark.extra_info.update(
        kind="memory",
        mode=mode,
        codec="raw",
        chunk_size=chunk_size,
        payload_bytes=len(book_bytes),
        peak_bytes=max(r["peak_bytes"] for r in results),
        rss_peak_bytes=max(rss) if rss else None,
    )


def test_memory_whole(benchmark, benchmarking, memory_server, chunk_size, book_bytes):
    benchmark.group = "memory-whole"
    _measure(benchmark, benchmarking, memory_server.port, "whole", chunk_size, book_bytes)


def test_memory_stream(benchmark, benchmarking, memory_server, stream_chunk_size, book_bytes):
    benchmark.group = "memory-stream"
    _measure(benchmark, benchmarking, memory_server.port, "stream", stream_chunk_size, book_bytes)
