"""Pin the benchmark and its peer processes to one CPU (or to two, one each), and put
everything back afterwards.

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


def can_split() -> bool:
    """Whether the caller may use two CPUs, one for itself and one for its peers."""
    return can_pin() and len(os.sched_getaffinity(0)) >= 2


@contextlib.contextmanager
def pinned(peers: list[int]) -> Iterator[int]:
    """Pin the calling thread and every thread of ``peers`` to one CPU (the last usable one);
    yields it. Threads a peer starts meanwhile inherit the pin from the thread that starts
    them; on exit every thread gets its old CPU set back (new ones the peer's original)."""
    cpu = max(os.sched_getaffinity(0))
    with _placed(peers, cpu, cpu):
        yield cpu


@contextlib.contextmanager
def split(peers: list[int]) -> Iterator[tuple[int, int]]:
    """Pin the calling thread to one CPU (the last usable one) and every thread of ``peers``
    to another (the first usable one); yields (ours, theirs). For a transfer, whose two ends
    run at once: left to the scheduler, a session put them on one core or on two, and a
    ratio read from one placement or the other (see bench/notes.md)."""
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2:
        raise RuntimeError("split placement needs two usable CPUs")
    with _placed(peers, mine[-1], mine[0]):
        yield mine[-1], mine[0]


@contextlib.contextmanager
def _placed(peers: list[int], own_cpu: int, peer_cpu: int) -> Iterator[None]:
    """Every thread of ``peers`` on ``peer_cpu`` and the calling thread on ``own_cpu``; on
    exit, however it came (a failed move included), each back where it was."""
    mine = os.sched_getaffinity(0)
    saved: dict[int, dict[int, set[int]]] = {}
    try:
        for pid in peers:
            saved[pid] = {}
            for tid in _threads(pid):
                with contextlib.suppress(OSError):  # a thread that ended meanwhile
                    saved[pid][tid] = os.sched_getaffinity(tid)
                    os.sched_setaffinity(tid, {peer_cpu})
        os.sched_setaffinity(0, {own_cpu})
        yield
    finally:
        os.sched_setaffinity(0, mine)
        for pid, threads in saved.items():
            default = threads.get(pid, mine)
            for tid in _threads(pid):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(tid, threads.get(tid, default))
