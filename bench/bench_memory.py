"""Part 3: the receiver's peak memory, whole vs streamed receive, at each chunk size.

Every configuration gets a receiving process of its own, spawned fresh, that does nothing
else; around each receive it resets tracemalloc's peak and the kernel's RSS high-water mark
(``/proc/self/clear_refs``) and sends back the extra bytes each saw. ``peak_bytes`` is
tracemalloc's (Python allocations, exact); ``rss_peak_bytes`` the resident set's.

glibc's malloc raises its mmap threshold the first time a large block is freed, after which
a 2 MB buffer comes from heap pages the process already holds, and the RSS high-water mark
does not move (the 0.00 MiB readings of earlier runs). The receiver therefore runs with a
fixed threshold (``MALLOC_MMAP_THRESHOLD_``, glibc's documented tunable): blocks of 128 KiB
and more are mapped and unmapped each time, so every round sees fresh pages, as the first
receive of a fresh process does. Smaller blocks (a streamed receive's small chunks) still
reuse pages the process holds; such a round's RSS can read 0, which the report explains.
The round time is incidental (tracemalloc slows it).
"""

from __future__ import annotations

from bench import _peers
from bench.conftest import MEMORY_ROUNDS, KiB, rounds

# glibc: a fixed threshold also turns off its dynamic adjustment.
MMAP_THRESHOLD = 128 * KiB
RECEIVER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}


def _measure(benchmark, benchmarking, mode: str, chunk_size: int, book_bytes: bytes):
    results: list[dict] = []
    with _peers.Server("ayudantia", env=RECEIVER_ENV) as receiver:
        conn = _peers.ayudantia_client(receiver.port, f"mem-{mode}", codec="raw")
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
    assert results and all(r["payload_bytes"] == len(book_bytes) for r in results)
    benchmark.extra_info.update(
        kind="memory",
        mode=mode,
        codec="raw",
        chunk_size=chunk_size,
        payload_bytes=len(book_bytes),
        mmap_threshold=MMAP_THRESHOLD,
        peak_bytes=[r["peak_bytes"] for r in results],
        rss_peak_bytes=[r["rss_peak_bytes"] for r in results],
    )


def test_memory_whole(benchmark, benchmarking, chunk_size, book_bytes):
    benchmark.group = "memory-whole"
    _measure(benchmark, benchmarking, "whole", chunk_size, book_bytes)


def test_memory_stream(benchmark, benchmarking, stream_chunk_size, book_bytes):
    benchmark.group = "memory-stream"
    _measure(benchmark, benchmarking, "stream", stream_chunk_size, book_bytes)
