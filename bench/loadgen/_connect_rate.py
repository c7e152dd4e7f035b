"""Scenario d, ``connect-rate``: workers that connect, ask, read the answer and close, in a loop."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from typing import Any

from bench.loadgen._sampler import ServerSampler
from bench.loadgen._shared import CONTENIDO, Progress, ms
from bench.loadgen._student import answer_of, connect, is_answer


async def connect_rate(
    host: str,
    port: int,
    *,
    workers: int = 8,
    seconds: float = 5.0,
    max_connections: int = 1_000_000,
    tipos: tuple[str, ...] = (CONTENIDO,),
    timeout: float = 10.0,
    codec: str = "json",
    server_pid: int | None = None,
    quiet: bool = True,
) -> dict[str, Any]:
    """Workers that each connect, ask one question, read its answer and close, in a loop."""
    done: list[float] = []
    cycles: list[float] = []
    errors: dict[str, int] = {}
    ids = itertools.count()
    start = time.perf_counter()
    until = start + seconds

    async def cycle() -> None:
        t0 = time.perf_counter()
        student = await asyncio.wait_for(connect(host, port, codec), timeout)
        try:
            k = next(ids)
            tipo = tipos[k % len(tipos)]
            result = await answer_of(student.ask(f"c{k}", tipo, f"c{k}"), timeout)
        finally:
            student.close()
        if result is None or not is_answer(result[1]) or student.misrouted:
            raise ConnectionError("no answer" if result is None else "bad answer")
        now = time.perf_counter()
        done.append(now - start)
        cycles.append(now - t0)

    async def worker() -> None:
        while time.perf_counter() < until and len(done) + sum(errors.values()) < max_connections:
            try:
                await cycle()
            except (OSError, TimeoutError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(0.01)  # a refused connect must not become a spin

    with (
        ServerSampler(server_pid) as sampler,
        Progress("connect-rate", lambda: f"{len(done)} done, {sum(errors.values())} errors", quiet),
    ):
        await asyncio.gather(*(worker() for _ in range(workers)))
        elapsed = time.perf_counter() - start
    per_second = [0] * max(1, int(elapsed) + 1)
    for t in done:
        per_second[int(t)] += 1
    whole = per_second[: int(elapsed)] or per_second
    return {
        "workers": workers,
        "seconds": round(elapsed, 3),
        "connections": len(done),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "rate_per_s": round(len(done) / elapsed, 1) if elapsed else 0.0,
        "per_second": per_second,
        "median_per_s": statistics.median(whole),
        **ms(cycles),
        **sampler.report(),
    }
