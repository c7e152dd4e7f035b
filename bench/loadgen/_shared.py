"""What every scenario shares: the question kinds, the client's event loop, progress lines, the
latency percentiles.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable, Iterable

CONTENIDO = "Contenido"
TAREA = "Tarea"
DIFICIL = "Pregunta Dificil"
ECHO_PAYLOAD = b"En un lugar de la Mancha, de cuyo nombre no quiero acordarme"  # 60 bytes


def loop_name(choice: str = "auto") -> str:
    """Install the event loop ``choice`` asks for; ``auto`` is uvloop when it imports."""
    if choice == "asyncio":
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("--loop uvloop: uvloop is not installed") from None
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


class Progress:
    """One line a second on stderr while a long run goes on (silent if ``quiet``)."""

    def __init__(self, label: str, status: Callable[[], str], quiet: bool) -> None:
        self.label, self.status, self.quiet = label, status, quiet
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        start = time.perf_counter()
        while True:
            await asyncio.sleep(1.0)
            elapsed = time.perf_counter() - start
            print(f"[{self.label} {elapsed:5.1f}s] {self.status()}", file=sys.stderr, flush=True)

    def __enter__(self) -> Progress:
        if not self.quiet:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


def ms(seconds: Iterable[float]) -> dict[str, float | None]:
    values = sorted(seconds)
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": round(statistics.median(values) * 1000, 3),
        "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))] * 1000, 3),
        "max_ms": round(values[-1] * 1000, 3),
    }
