"""bench._affinity: where pinned and split put the benchmark and a real peer process, and that
both put every thread back where it was, on every way out."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench import _affinity

pytestmark = pytest.mark.skipif(not _affinity.can_split(), reason="needs two usable CPUs")

# A peer with a second thread, and a third it starts when told (a line on stdin).
PEER = """
import sys, threading, time
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
sys.stdin.readline()
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("started", flush=True)
time.sleep(60)
"""


def _threads(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def _placement(pid: int) -> dict[int, set[int]]:
    return {tid: os.sched_getaffinity(tid) for tid in _threads(pid)}


class Peer:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PEER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "ready\n"
        self.pid = self.proc.pid

    def start_thread(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "started\n"


@pytest.fixture
def peer():
    """A peer confined to the caller's last CPU before any placement, neither the caller's
    set nor where split puts it: restoring it to either instead of its own would show."""
    p = Peer()
    last = {max(os.sched_getaffinity(0))}
    try:
        for tid in _threads(p.pid):
            os.sched_setaffinity(tid, last)
        yield p
    finally:
        p.proc.kill()
        p.proc.wait(10)


def test_split_puts_us_on_the_last_cpu_and_every_peer_thread_on_the_first(peer: Peer) -> None:
    mine = os.sched_getaffinity(0)
    before = _placement(peer.pid)
    assert len(before) == 2
    with _affinity.split([peer.pid]) as (ours, theirs):
        assert (ours, theirs) == (max(mine), min(mine))
        assert os.sched_getaffinity(0) == {ours}
        assert all(cpus == {theirs} for cpus in _placement(peer.pid).values())
    assert os.sched_getaffinity(0) == mine
    assert _placement(peer.pid) == before


def test_pinned_puts_everyone_on_one_cpu_and_back(peer: Peer) -> None:
    mine = os.sched_getaffinity(0)
    before = _placement(peer.pid)
    with _affinity.pinned([peer.pid]) as cpu:
        assert cpu == max(mine)
        assert os.sched_getaffinity(0) == {cpu}
        assert all(cpus == {cpu} for cpus in _placement(peer.pid).values())
    assert os.sched_getaffinity(0) == mine
    assert _placement(peer.pid) == before


def test_a_thread_started_inside_gets_the_peers_own_set_back(peer: Peer) -> None:
    last = {max(os.sched_getaffinity(0))}
    with _affinity.split([peer.pid]) as (_, theirs):
        peer.start_thread()  # inherits {theirs} from the thread that starts it
        assert len(_threads(peer.pid)) == 3
        assert all(cpus == {theirs} for cpus in _placement(peer.pid).values())
    assert all(cpus == last for cpus in _placement(peer.pid).values())


def test_everything_goes_back_when_the_block_raises(peer: Peer) -> None:
    mine = os.sched_getaffinity(0)
    before = _placement(peer.pid)
    with pytest.raises(KeyError), _affinity.split([peer.pid]):
        raise KeyError("inside")
    assert os.sched_getaffinity(0) == mine
    assert _placement(peer.pid) == before


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
