"""bench._affinity: where pinned and split put the benchmark and a real peer process, and that
both put everything back."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench import _affinity

pytestmark = pytest.mark.skipif(not _affinity.can_split(), reason="needs two usable CPUs")

# A peer with a second thread, started before the placement, so that every thread is moved.
PEER = (
    "import threading, time; threading.Thread(target=time.sleep, args=(60,)).start(); "
    "print('ready', flush=True); time.sleep(60)"
)


def _threads(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


@pytest.fixture
def peer():
    proc = subprocess.Popen([sys.executable, "-c", PEER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(10)


def test_split_puts_us_on_one_cpu_and_every_peer_thread_on_another(peer: int) -> None:
    mine = os.sched_getaffinity(0)
    theirs = {tid: os.sched_getaffinity(tid) for tid in _threads(peer)}
    assert len(theirs) == 2
    with _affinity.split([peer]) as (ours, other):
        assert ours != other and {ours, other} <= mine
        assert os.sched_getaffinity(0) == {ours}
        assert all(os.sched_getaffinity(tid) == {other} for tid in _threads(peer))
    assert os.sched_getaffinity(0) == mine
    assert {tid: os.sched_getaffinity(tid) for tid in _threads(peer)} == theirs


def test_pinned_puts_everyone_on_one_cpu_and_back(peer: int) -> None:
    mine = os.sched_getaffinity(0)
    with _affinity.pinned([peer]) as cpu:
        assert os.sched_getaffinity(0) == {cpu}
        assert all(os.sched_getaffinity(tid) == {cpu} for tid in _threads(peer))
    assert os.sched_getaffinity(0) == mine
    assert all(os.sched_getaffinity(tid) == mine for tid in _threads(peer))


def test_split_refuses_one_cpu() -> None:
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(mine)})
    try:
        assert not _affinity.can_split()
        with pytest.raises(RuntimeError, match="two usable CPUs"), _affinity.split([]):
            pass
    finally:
        os.sched_setaffinity(0, mine)


def test_only_the_multiprocessing_book_pair_is_split() -> None:
    from bench.bench_transport import BOOK_PAIRS, book_placement

    placements = {figure: book_placement(peer) for figure, (_, peer, _) in BOOK_PAIRS.items()}
    assert placements == {
        "transfer.raw-whole.vs-socket": "unpinned",
        "transfer.raw-1MiB.vs-socket": "unpinned",
        "book.raw-whole.vs-mpconn": "split",
    }
