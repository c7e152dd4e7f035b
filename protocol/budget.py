"""A token bucket: how often a server may afford a courtesy (a refusal frame).

A flood of bad connections gets plain closes past the budget, so refusing can never cost
more than closing.
"""

from __future__ import annotations

import time


class TokenBucket:
    """At most ``rate`` events a second on average, ``burst`` at once (loop thread only)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class PerPeer:
    """A small bucket per peer address in front of a shared one (loop thread only).

    Why: with the shared bucket alone, one noisy peer that keeps being refused spends every
    refusal, and the next peer with a real problem (a wrong codec, a wrong key) is closed
    without learning why. Each address first spends its own few tokens, which a flood
    exhausts long before the shared bucket. At most ``peers`` addresses are remembered (the
    oldest forgotten first), so a spray of addresses cannot grow the table.
    """

    def __init__(self, shared: TokenBucket, rate: float, burst: float, peers: int = 4096) -> None:
        self.shared = shared
        self.rate, self.burst, self.peers = rate, burst, peers
        self._by_peer: dict[str, TokenBucket] = {}

    def take(self, peer: str = "") -> bool:
        bucket = self._by_peer.pop(peer, None) or TokenBucket(self.rate, self.burst)
        self._by_peer[peer] = bucket  # most recent last
        if len(self._by_peer) > self.peers:
            del self._by_peer[next(iter(self._by_peer))]
        return bucket.take() and self.shared.take()


# Refusal frames a process sends: a few per peer address, 50 a second in all.
REFUSALS = PerPeer(TokenBucket(rate=50, burst=100), rate=10, burst=50)
