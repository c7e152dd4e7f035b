"""The refusal budget is per peer address: one noisy peer cannot spend everyone's refusals."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from protocol.budget import PerPeer, TokenBucket
from tests.procs import running

BAD = b"NOPE" + bytes(12)  # not the magic: a `malformed` refusal when the budget allows


def test_per_peer_buckets_spend_their_own_tokens_first() -> None:
    budget = PerPeer(TokenBucket(rate=0, burst=5), rate=0, burst=2, peers=2)
    assert [budget.take("a") for _ in range(3)] == [True, True, False]
    assert budget.take("b") and budget.take("b") and not budget.take("b")
    assert budget.take("c") and not budget.take("c")  # shared: 5 spent; "a" forgotten
    assert len(budget._by_peer) == 2


def _refused(host: str, port: int, source: str) -> bytes:
    with socket.create_connection((host, port), timeout=5, source_address=(source, 0)) as sock:
        sock.sendall(BAD)
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(4096):
                data += chunk
        return data


@pytest.mark.timeout(60)
def test_a_noisy_peer_does_not_silence_the_refusals_of_another() -> None:
    with running("eco", "--port", "0", "--log-level", "ERROR") as eco:
        stop = threading.Event()
        sent = [0]

        def flood() -> None:
            deadline = time.monotonic() + 10
            while not stop.is_set() and time.monotonic() < deadline and sent[0] < 5000:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(
                        (eco.host, eco.port), timeout=2, source_address=("127.0.0.2", 0)
                    ) as sock,
                ):
                    sock.sendall(BAD)
                sent[0] += 1

        noisy = threading.Thread(target=flood, daemon=True)
        noisy.start()
        try:
            while sent[0] < 300 and noisy.is_alive():
                time.sleep(0.01)
            answers = [_refused(eco.host, eco.port, "127.0.0.1") for _ in range(3)]
        finally:
            stop.set()
            noisy.join(15)
        assert sent[0] >= 300
        assert all(len(a) > 16 and a[:4] != BAD[:4] for a in answers), answers
