"""Pin the benchmark and its peer process to one CPU, and put everything back afterwards.

On 2 cores a small round trip costs 20 or 90 µs depending on whether each wake-up crosses
cores; pinned to one core both processes share a CPU, so the figure measures the CPU work
of a round trip, not the scheduler's placement.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity")


@contextlib.contextmanager
def pinned(peers: list[int]) -> Iterator[int]:
    """Pin the calling thread and every thread of ``peers`` to one CPU (the last usable one);
    yields it. Threads a peer starts meanwhile inherit the pin from the thread that starts
    them; on exit every thread gets its old CPU set back (new ones the peer's original)."""
    mine = os.sched_getaffinity(0)
    cpu = max(mine)
    saved: dict[int, dict[int, set[int]]] = {}
    for pid in peers:
        saved[pid] = {}
        for tid in _threads(pid):
            with contextlib.suppress(OSError):
                saved[pid][tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, {cpu})
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, mine)
        for pid, threads in saved.items():
            default = threads.get(pid, mine)
            for tid in _threads(pid):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(tid, threads.get(tid, default))
