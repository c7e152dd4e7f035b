"""A bounded, uniform sample of a stream of numbers (reservoir sampling, Algorithm R).

A student asked to ask "until Ctrl+C" (``--questions 0``) cannot keep every latency it
measured: memory would grow with the length of the class. It keeps every value up to
``size``; past that, each new value replaces a random kept one with probability
``size / seen``, so the kept values stay a uniform sample of all of them and percentiles
computed over it stay honest estimates. ``seen`` says how many values the sample stands for.
"""

from __future__ import annotations

import random


class Muestra:
    """At most ``size`` values, a uniform sample of the ``seen`` values added so far."""

    def __init__(self, size: int, seed: int | None = None) -> None:
        if size < 1:
            raise ValueError(f"a sample holds at least 1 value, not {size}")
        self.size = size
        self.values: list[float] = []
        self.seen = 0
        self._rng = random.Random(seed)  # its own: the student's kinds stay as seeded

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.size:
            self.values[slot] = value

    @property
    def exact(self) -> bool:
        """Whether every value seen is kept (the sample is the whole)."""
        return self.seen == len(self.values)
