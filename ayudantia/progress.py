"""A tiny progress bar on stderr: long work shows that it is moving.

Redraws in place on a terminal, at most ten times a second; when stderr is not a
terminal (CI, a pipe) it prints a line at each tenth of the way instead of flooding logs.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _human(n: float, unit: str) -> str:
    if unit != "B":
        return f"{n:,.0f}"
    for suffix in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or suffix == "GiB":
            return f"{n:.1f} {suffix}" if suffix != "B" else f"{n:.0f} B"
        n /= 1024
    return f"{n:.1f} GiB"


class Progress:
    def __init__(
        self, label: str, total: int | None, *, unit: str = "", stream: TextIO | None = None
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self.stream = stream or sys.stderr
        self._tty = self.stream.isatty()
        self._last_draw = 0.0
        self._last_decile = -1
        self._start = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._draw()

    def _line(self) -> str:
        done = _human(self.done, self.unit)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            return f"{self.label} [{bar:<30}] {frac:6.1%} {done} / {_human(self.total, self.unit)}"
        return f"{self.label} {done}"

    def _draw(self, final: bool = False) -> None:
        now = time.monotonic()
        if self._tty:
            if final or now - self._last_draw >= 0.1:
                self._last_draw = now
                self.stream.write("\r" + self._line() + ("\n" if final else ""))
                self.stream.flush()
            return
        decile = int(10 * self.done / self.total) if self.total else -1
        if final or decile > self._last_decile:
            self._last_decile = decile
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._draw(final=True)
