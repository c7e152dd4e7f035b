"""Scenario a, ``students``: many students connect at once, then all ask one question at once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.loadgen._sampler import ServerSampler
from bench.loadgen._shared import CONTENIDO, Progress, ms
from bench.loadgen._student import Student, Tally, answer_of, connect


async def students(
    host: str,
    port: int,
    *,
    n: int = 5000,
    tipos: tuple[str, ...] = (CONTENIDO,),
    codec: str = "json",
    connect_concurrency: int = 1000,
    timeout: float = 60.0,
    server_pid: int | None = None,
    quiet: bool = True,
) -> dict[str, Any]:
    """N students connect at once, then all ask one question at once (kinds in turn)."""
    gate = asyncio.Semaphore(connect_concurrency)
    connected: list[Student] = []
    connect_errors: list[str] = []

    async def one() -> None:
        async with gate:
            try:
                connected.append(await asyncio.wait_for(connect(host, port, codec), timeout))
            except (OSError, TimeoutError) as exc:
                connect_errors.append(type(exc).__name__)

    tally = Tally()
    with (
        ServerSampler(server_pid) as sampler,
        Progress(
            "students",
            lambda: f"connected {len(connected)}/{n} answered {tally.answered}",
            quiet,
        ),
    ):
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        connect_s = time.perf_counter() - start
        asked_at = time.perf_counter()
        futures = [
            s.ask(f"s{i}-q", tipos[i % len(tipos)], f"s{i}") for i, s in enumerate(connected)
        ]
        remaining = max(0.1, timeout - connect_s)
        for result in await asyncio.gather(*(answer_of(f, remaining) for f in futures)):
            tally.add(asked_at, result)
        answer_s = max(tally.latencies, default=0.0)
        for student in connected:
            student.close()
        await asyncio.sleep(0)
    return {
        "n": n,
        "tipos": list(tipos),
        "connected": len(connected),
        "connect_errors": len(connect_errors),
        "connect_s": round(connect_s, 4),
        "answer_s": round(answer_s, 4),
        "answered": tally.answered,
        "errors": tally.errors + tally.failed + len(connect_errors),
        "error_answers": tally.errors,
        "error_texts": tally.error_texts,
        "unanswered": tally.failed,
        "misrouted": sum(s.misrouted for s in connected),
        **ms(tally.latencies),
        **sampler.report(),
    }
