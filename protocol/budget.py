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


# Refusal frames a process sends.
REFUSALS = TokenBucket(rate=50, burst=100)
