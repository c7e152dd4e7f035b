"""Scenario b, ``flood``: one student floods and never reads (or reads greedily) beside paced
students that ask and wait; whether the server keeps answering them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass
from typing import Any

from bench.loadgen._sampler import ServerSampler
from bench.loadgen._shared import DIFICIL, TAREA, Progress, ms
from bench.loadgen._student import Student, Tally, answer_of, connect


@dataclass
class Flooder:
    """Sends questions as fast as the server takes them and never reads an answer.

    Its ids are padded to ``id_bytes`` (the Profesor counts ids up to 256 characters):
    every answer echoes its id, so long ids fill the way back to the flooder sooner.
    """

    student: Student
    tipo: str
    id_bytes: int = 200
    sent: int = 0
    paused_s: float = 0.0
    pushed_back: bool = False

    def _template(self) -> tuple[bytes, bytes]:
        """One question's frame split around a 10-digit counter: questions cost a format."""
        digits = "0" * 10
        pad = "x" * max(0, self.id_bytes - 11)
        frame = self.student.question_bytes(f"f{digits}{pad}", self.tipo, "flood")
        at = frame.index(digits.encode())
        return frame[:at], frame[at + len(digits) :]

    async def run(self, limit: int, until: float) -> None:
        head, tail = self._template()
        batch = 256
        for first in itertools.count(0, batch):
            if first >= limit or time.perf_counter() >= until or self.student.broken:
                return
            count = min(batch, limit - first)
            assert self.student.transport is not None
            self.student.transport.write(
                b"".join(b"%s%010d%s" % (head, first + i, tail) for i in range(count))
            )
            self.sent += count
            if not self.student.can_write.is_set():
                self.pushed_back = True
                t0 = time.perf_counter()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.student.can_write.wait(), max(0.0, until - time.perf_counter())
                    )
                self.paused_s += time.perf_counter() - t0
            else:
                await asyncio.sleep(0)


async def paced_student(
    student: Student,
    name: str,
    tipos: list[str],
    interval: float,
    until: float,
    answer_timeout: float,
    tally: Tally,
) -> int:
    """Asks one question every ``interval`` until ``until``; returns how many it asked."""
    pending: list[asyncio.Task[None]] = []

    async def one(qid: str, tipo: str) -> None:
        asked_at = time.perf_counter()
        tally.add(asked_at, await answer_of(student.ask(qid, tipo, name), answer_timeout))

    for k in itertools.count():
        if time.perf_counter() >= until:
            break
        pending.append(asyncio.create_task(one(f"{name}-{k}", tipos[k % len(tipos)])))
        await asyncio.sleep(interval)
    await asyncio.gather(*pending)
    return len(pending)


async def flood(
    host: str,
    port: int,
    *,
    students_n: int = 10,
    tipos: tuple[str, ...] = (TAREA, DIFICIL),
    flood_tipo: str = TAREA,
    interval: float = 0.05,
    seconds: float = 10.0,
    head_start: float = 1.0,
    flood_questions: int = 10_000_000,
    answer_timeout: float = 5.0,
    flood_rcvbuf: int = 4096,
    flood_id_bytes: int = 200,
    flood_reads: bool = False,
    codec: str = "json",
    server_pid: int | None = None,
    quiet: bool = True,
) -> dict[str, Any]:
    """A flooder that never reads beside ``students_n`` paced students that do.

    With ``flood_reads`` the flooder is greedy instead: it reads (and drops) its answers as
    fast as they come, so nothing pushes back on it but the server's own fairness.

    The flooder starts ``head_start`` seconds early, so the way back to it is already full
    when the others ask; the others ask for ``seconds`` while it goes on. ``lost`` counts
    their questions with no answer within ``answer_timeout`` (``late``: of those, the ones
    answered afterwards, before the run ended); error answers are counted apart, with what
    they said (``error_texts``).
    """
    tally = Tally()
    with ServerSampler(server_pid) as sampler:
        flooder = Flooder(
            await connect(
                host, port, codec, read=flood_reads, rcvbuf=0 if flood_reads else flood_rcvbuf
            ),
            flood_tipo,
            flood_id_bytes,
        )
        with Progress(
            "flood",
            lambda: f"flood sent {flooder.sent} answered {tally.answered} lost {tally.failed}",
            quiet,
        ):
            start = time.perf_counter()
            flooding = asyncio.create_task(
                flooder.run(flood_questions, start + head_start + seconds)
            )
            await asyncio.sleep(head_start)
            normal = [await connect(host, port, codec) for _ in range(students_n)]
            until = time.perf_counter() + seconds
            asked = await asyncio.gather(
                *(
                    paced_student(s, f"n{i}", list(tipos), interval, until, answer_timeout, tally)
                    for i, s in enumerate(normal)
                )
            )
            flooding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flooding
        flooder_closed = flooder.student.broken is not None
        for student in normal:
            student.close()
        if flooder.student.transport is not None:  # close() would wait to flush, forever
            flooder.student.transport.abort()
        await asyncio.sleep(0)
    return {
        "students": students_n,
        "tipos": list(tipos),
        "asked": sum(asked),
        "answered": tally.answered,
        "error_answers": tally.errors,
        "error_texts": tally.error_texts,
        "lost": tally.failed,
        "late": sum(s.late for s in normal),
        "misrouted": sum(s.misrouted for s in normal),
        **ms(tally.latencies),
        "flood_tipo": flood_tipo,
        "flood_id_bytes": flood_id_bytes,
        "flood_reads": flood_reads,
        "flood_sent": flooder.sent,
        "flood_paused_s": round(flooder.paused_s, 3),
        "flood_pushed_back": flooder.pushed_back,
        "flood_closed_by_server": flooder_closed,
        "flood_received": flooder.student.received,
        **sampler.report(),
    }
