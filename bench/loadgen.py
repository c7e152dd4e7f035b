"""Load generator for issue 9's targets: black-box clients against real server processes.

Run as its own process, so its event loop never shares a core's time slice with the server
it measures through the same interpreter::

    python -m bench.loadgen students     --to HOST:PORT --n 5000 --server-pid PID --json
    python -m bench.loadgen flood        --to HOST:PORT --students 10 --seconds 10 --json
    python -m bench.loadgen echo-small   --to HOST:PORT --sessions 3 --rounds 20000 --json
    python -m bench.loadgen connect-rate --to HOST:PORT --workers 8 --seconds 5 --json

``--to`` is a Docencio for ``students``, ``flood`` and ``connect-rate`` and an ``ayudantia
eco`` for ``echo-small``. The output is one JSON object (``--json``) or ``key: value`` lines;
progress goes to stderr once a second. The clients speak the wire format through the
sans-IO pieces (:func:`~protocol.framing.encode_message`, :class:`~protocol.framing.FrameDecoder`),
never through the blocking :class:`~protocol.transport.Connection`: what is measured is the
server, whatever its implementation. ``echo-small`` uses no project code at all on its
client side (a hand-built header on a blocking socket), as a user of docs/protocol.md would.

The client's event loop is uvloop when it imports, stock asyncio otherwise (``--loop``
chooses); the JSON says which. ``flood --flood-reads`` makes the flooder greedy instead of
silent: it reads every answer at once, so only the server's fairness holds it back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import multiprocessing.connection
import os
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from protocol import codecs
from protocol.framing import CLOSED, NEED_DATA, FrameDecoder, encode_message

CONTENIDO = "Contenido"
TAREA = "Tarea"
DIFICIL = "Pregunta Dificil"
ECHO_PAYLOAD = b"En un lugar de la Mancha, de cuyo nombre no quiero acordarme"  # 60 bytes


# --- the event loop and the server's own figures -------------------------------------------


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


class ServerSampler:
    """Samples a server process's RSS, threads and fds in a thread of its own.

    A thread, not a task: while the loop is busy opening thousands of connections a task
    would sample late, exactly when the server is at its peak.
    """

    def __init__(self, pid: int | None, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.before: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.after: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> dict[str, int]:
        with self._proc.oneshot():
            return {
                "rss": self._proc.memory_info().rss,
                "threads": self._proc.num_threads(),
                "fds": self._proc.num_fds(),
            }

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                sample = self._sample()
            except Exception:  # the server died: its last peak stands
                return
            for key, value in sample.items():
                self.peak[key] = max(self.peak.get(key, 0), value)

    def __enter__(self) -> ServerSampler:
        if self.pid is None:
            return self
        import psutil

        self._proc = psutil.Process(self.pid)
        self.before = self._sample()
        self.peak = dict(self.before)
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self.after = self._sample()
            for key, value in self.after.items():
                self.peak[key] = max(self.peak.get(key, 0), value)

    def report(self) -> dict[str, Any]:
        if not self.before:
            return {}
        return {
            "server_rss_before": self.before["rss"],
            "server_rss_peak": self.peak["rss"],
            "server_rss_growth": self.peak["rss"] - self.before["rss"],
            "server_threads_before": self.before["threads"],
            "server_threads_peak": self.peak["threads"],
            "server_fds_before": self.before["fds"],
            "server_fds_peak": self.peak["fds"],
            "server_threads_after": self.after.get("threads"),
            "server_fds_after": self.after.get("fds"),
        }


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


# --- a framed student connection ------------------------------------------------------------


class Student(asyncio.Protocol):
    """One student's connection: questions out, answers routed back to their askers by id.

    An answer whose id this student never asked, or already had answered, is counted in
    ``misrouted``: with unique ids per run, that is an answer that reached the wrong student.
    An answer that comes after its asker stopped waiting is counted in ``late``.
    """

    def __init__(self, codec: str = "json", *, read: bool = True) -> None:
        self.codec = codecs.get(codec)
        self.read = read
        self.decoder = FrameDecoder(check_codec=codecs.REGISTRY.accept_checker(["json", "msgpack"]))
        self.transport: asyncio.Transport | None = None
        self.waiting: dict[Any, asyncio.Future[tuple[float, dict[str, Any]]]] = {}
        self.misrouted = 0
        self.late = 0
        self.received = 0  # bytes read: stays 0 for a student that never reads
        self.broken: BaseException | None = None
        self.can_write = asyncio.Event()
        self.can_write.set()

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.set_write_buffer_limits(high=64 * 1024)
        if not self.read:
            self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        try:
            self.decoder.receive_data(data)
            while (event := self.decoder.next_event()) not in (NEED_DATA, CLOSED):
                self._answer(codecs.get(event.codec_id).decode(event.payload))
        except Exception as exc:  # a broken stream ends this student, and says why
            self._fail(exc)
            if self.transport is not None:
                self.transport.abort()

    def eof_received(self) -> bool:
        self._fail(ConnectionError("the server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection lost"))
        self.can_write.set()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    # what a student does
    def _answer(self, message: Any) -> None:
        qid = message.get("id") if isinstance(message, dict) else None
        future = self.waiting.pop(qid, None) if isinstance(qid, str | int) else None
        if future is None:  # never asked on this connection, or answered twice
            self.misrouted += 1
        elif future.done():  # its asker gave up waiting: late, but it did come back
            self.late += 1
        else:
            future.set_result((time.perf_counter(), message))

    def _fail(self, exc: BaseException) -> None:
        if self.broken is None:
            self.broken = exc
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(ConnectionError(str(exc)))
        self.waiting.clear()

    def question_bytes(self, qid: str, tipo: str, de: str) -> bytes:
        payload = self.codec.encode({"id": qid, "tipo": tipo, "de": de})
        return encode_message(self.codec.id, payload)

    def ask(self, qid: str, tipo: str, de: str) -> asyncio.Future[tuple[float, dict[str, Any]]]:
        """Send one question; the future gets (arrival time, answer)."""
        future = asyncio.get_running_loop().create_future()
        if self.broken is not None or self.transport is None or self.transport.is_closing():
            future.set_exception(ConnectionError(f"cannot ask: {self.broken}"))
            return future
        self.waiting[qid] = future
        self.transport.write(self.question_bytes(qid, tipo, de))
        return future

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(
    host: str, port: int, codec: str = "json", *, read: bool = True, rcvbuf: int = 0
) -> Student:
    """A connected :class:`Student`; ``rcvbuf`` shrinks its receive buffer before connecting."""
    loop = asyncio.get_running_loop()
    if rcvbuf:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        where: dict[str, Any] = {"sock": sock}
    else:
        where = {"host": host, "port": port}
    _, student = await loop.create_connection(lambda: Student(codec, read=read), **where)
    if not read:  # again: uvloop starts reading after connection_made, whatever it asked
        student.transport.pause_reading()
    return student


async def answer_of(
    future: Awaitable[tuple[float, dict[str, Any]]], timeout: float
) -> tuple[float, dict[str, Any]] | None:
    """The answer, or None on timeout or a broken connection."""
    try:
        return await asyncio.wait_for(future, timeout)
    except (TimeoutError, ConnectionError, OSError):
        return None


def ms(seconds: Iterable[float]) -> dict[str, float | None]:
    values = sorted(seconds)
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": round(statistics.median(values) * 1000, 3),
        "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))] * 1000, 3),
        "max_ms": round(values[-1] * 1000, 3),
    }


def is_answer(message: dict[str, Any]) -> bool:
    return isinstance(message.get("respuesta"), str)


# --- scenario a: many students at once ------------------------------------------------------


@dataclass
class Tally:
    answered: int = 0
    errors: int = 0  # error answers
    failed: int = 0  # no answer: timeout or broken connection
    latencies: list[float] = field(default_factory=list)
    error_texts: dict[str, int] = field(default_factory=dict)  # what the error answers said

    def add(self, asked_at: float, result: tuple[float, dict[str, Any]] | None) -> None:
        if result is None:
            self.failed += 1
            return
        arrived, message = result
        self.latencies.append(arrived - asked_at)
        if is_answer(message):
            self.answered += 1
        else:
            self.errors += 1
            text = str(message.get("error", message))[:120]
            if text in self.error_texts or len(self.error_texts) < 5:
                self.error_texts[text] = self.error_texts.get(text, 0) + 1


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


# --- scenario b: one student floods and never reads -----------------------------------------


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


# --- scenario d: connect, ask, read, close --------------------------------------------------


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


# --- scenario c: a small raw message, paired with multiprocessing.connection -----------------

RAW_HEADER = struct.Struct(">2sBBBBI")  # magic, version, codec id, flags, reserved, length


def _mp_echo_serve(ready: Any, cpus: set[int] | None) -> None:
    """Process entry point: a ``multiprocessing.connection`` echo, one thread per client."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    with multiprocessing.connection.Listener(("127.0.0.1", 0)) as listener:
        ready.send(listener.address)
        while True:
            conn = listener.accept()
            threading.Thread(target=_mp_echo, args=(conn,), daemon=True).start()


def _mp_echo(conn: multiprocessing.connection.Connection) -> None:
    with contextlib.suppress(EOFError, OSError), conn:
        while True:
            conn.send_bytes(conn.recv_bytes())


@contextlib.contextmanager
def mp_echo_server(cpus: set[int] | None = None) -> Any:
    """The reference echo in a spawned process; yields its address; always terminated."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_mp_echo_serve, args=(child, cpus), daemon=True)
    process.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("the multiprocessing.connection echo did not start in 30 s")
        yield parent.recv()
    finally:
        process.terminate()
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)


class RawEcho:
    """A client of ``ayudantia eco`` built from docs/protocol.md alone: no project code."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _exactly(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            part = self.sock.recv(n - got)
            if not part:
                raise ConnectionError("eco closed the connection mid-frame")
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def round_trip(self, payload: bytes) -> bytes:
        self.sock.sendall(RAW_HEADER.pack(b"AY", 1, 0, 0, 0, len(payload)) + payload)
        reply, more = b"", True
        while more:  # the eco may chunk its reply; read frames until MORE is clear
            magic, version, codec_id, flags, _, length = RAW_HEADER.unpack(self._exactly(10))
            if magic != b"AY" or version != 1 or codec_id != 0:
                raise ConnectionError(f"unexpected frame {magic!r} v{version} codec {codec_id}")
            reply += self._exactly(length)
            more = bool(flags & 1)
        return reply

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawEcho:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pin(pid: int, cpus: set[int] | None) -> set[int] | None:
    """Pin ``pid`` to ``cpus``; returns its previous affinity to restore (None: untouched)."""
    if not cpus:
        return None
    previous = os.sched_getaffinity(pid)
    os.sched_setaffinity(pid, cpus)
    return previous


def echo_session(
    host: str, port: int, mp_address: Any, rounds: int, warmup: int
) -> dict[str, float]:
    """One session on fresh connections: ayudantia and mp round trips, alternated per round."""
    eco = RawEcho(host, port)
    mp = multiprocessing.connection.Client(mp_address)
    clock = time.perf_counter_ns
    ay_ns: list[int] = []
    mp_ns: list[int] = []
    try:
        for i in range(warmup + rounds):
            order = (0, 1) if i % 2 == 0 else (1, 0)  # neither always goes first
            took = [0, 0]
            for which in order:
                t0 = clock()
                if which == 0:
                    reply = eco.round_trip(ECHO_PAYLOAD)
                else:
                    mp.send_bytes(ECHO_PAYLOAD)
                    reply = mp.recv_bytes()
                took[which] = clock() - t0
                if reply != ECHO_PAYLOAD:
                    raise ConnectionError(f"echo came back wrong: {reply[:80]!r}")
            if i >= warmup:
                ay_ns.append(took[0])
                mp_ns.append(took[1])
    finally:
        eco.close()
        mp.close()
    ratios = [a / m for a, m in zip(ay_ns, mp_ns, strict=True)]
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    return {
        "ayudantia_us": round(statistics.median(ay_ns) / 1000, 2),
        "mp_us": round(statistics.median(mp_ns) / 1000, 2),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_q1": round(q1, 3),
        "ratio_q3": round(q3, 3),
        "rounds": len(ratios),
    }


def echo_small(
    host: str,
    port: int,
    *,
    sessions: int = 3,
    rounds: int = 20000,
    warmup: int = 200,
    cpus: list[int] | None = None,
    server_pid: int | None = None,
    quiet: bool = True,
) -> dict[str, Any]:
    """Issue 9's small-message target: ayudantia eco vs a multiprocessing.connection echo."""
    client_cpus = {cpus[0]} if cpus else None
    server_cpus = {cpus[-1]} if cpus else None
    mine = _pin(0, client_cpus)
    theirs = _pin(server_pid, server_cpus) if server_pid else None
    try:
        with mp_echo_server(server_cpus) as address:
            results = []
            for k in range(sessions):
                results.append(echo_session(host, port, address, rounds, warmup))
                if not quiet:
                    print(
                        f"[echo-small] session {k + 1}/{sessions}: {results[-1]}", file=sys.stderr
                    )
    finally:
        if mine is not None:
            os.sched_setaffinity(0, mine)
        if theirs is not None and server_pid:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(server_pid, theirs)
    return {
        "payload_bytes": len(ECHO_PAYLOAD),
        "sessions": results,
        "rounds": rounds,
        "ayudantia_us": statistics.median(r["ayudantia_us"] for r in results),
        "mp_us": statistics.median(r["mp_us"] for r in results),
        "ratio": statistics.median(r["ratio"] for r in results),
        "cpus": cpus or [],
    }


# --- command line --------------------------------------------------------------------------

SCENARIOS = ("students", "flood", "echo-small", "connect-rate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n")[0])
    p.add_argument("scenario", choices=SCENARIOS)
    p.add_argument("--to", required=True, metavar="HOST:PORT", help="the server under load")
    p.add_argument(
        "--server-pid", type=int, help="sample its RSS/threads/fds (echo-small: pin it with --cpu)"
    )
    p.add_argument("--codec", default="json", help="question codec (students, flood, rate)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--loop", choices=("auto", "asyncio", "uvloop"), default="auto", help="client event loop"
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--n", type=int, default=5000, help="students: how many connect at once")
    p.add_argument(
        "--connect-concurrency", type=int, default=1000, help="students: connects in flight"
    )
    p.add_argument("--timeout", type=float, default=60.0, help="students: whole-run bound (s)")
    p.add_argument("--students", type=int, default=10, help="flood: paced students beside it")
    p.add_argument(
        "--tipos",
        help="question kinds, comma-separated, asked in turn "
        f"(default {CONTENIDO}; flood: {TAREA},{DIFICIL} for the paced students)",
    )
    p.add_argument("--flood-tipo", default=TAREA, help="flood: the flooder's question kind")
    p.add_argument("--interval", type=float, default=0.05, help="flood: seconds between asks")
    p.add_argument("--seconds", type=float, default=None, help="flood/connect-rate duration")
    p.add_argument("--head-start", type=float, default=1.0, help="flood: flooding alone first (s)")
    p.add_argument("--flood-id-bytes", type=int, default=200, help="flood: id length")
    p.add_argument("--flood-reads", action="store_true", help="flood: a greedy flooder that reads")
    p.add_argument("--flood-questions", type=int, default=10_000_000, help="flood: at most N")
    p.add_argument(
        "--answer-timeout", type=float, default=5.0, help="flood: an answer later is lost"
    )
    p.add_argument("--workers", type=int, default=8, help="connect-rate: concurrent workers")
    p.add_argument("--max-connections", type=int, default=1_000_000, help="connect-rate bound")
    p.add_argument("--sessions", type=int, default=3, help="echo-small: fresh-connection sessions")
    p.add_argument("--rounds", type=int, default=20000, help="echo-small: rounds per session")
    p.add_argument("--warmup", type=int, default=200, help="echo-small: untimed rounds first")
    p.add_argument("--cpu", default="", help="echo-small: CPUS to pin, e.g. 0 or 0,1")
    return p.parse_args(argv)


def kinds(text: str | None, default: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in (text or default).split(",") if k.strip())


def run(args: argparse.Namespace) -> dict[str, Any]:
    host, _, port_text = args.to.rpartition(":")
    host, port = host.strip("[]") or "127.0.0.1", int(port_text)
    common = {"server_pid": args.server_pid, "quiet": args.quiet}
    header = {"scenario": args.scenario, "target": f"{host}:{port}", "loop": "none"}
    if args.scenario == "echo-small":
        cpus = [int(c) for c in args.cpu.split(",") if c.strip()]
        result = echo_small(
            host,
            port,
            sessions=args.sessions,
            rounds=args.rounds,
            warmup=args.warmup,
            cpus=cpus,
            **common,
        )
        return {**header, **result}
    header["loop"] = loop_name(args.loop)
    wire = {"codec": args.codec, **common}
    if args.scenario == "students":
        job = students(
            host,
            port,
            n=args.n,
            tipos=kinds(args.tipos, CONTENIDO),
            timeout=args.timeout,
            connect_concurrency=args.connect_concurrency,
            **wire,
        )
    elif args.scenario == "flood":
        job = flood(
            host,
            port,
            students_n=args.students,
            tipos=kinds(args.tipos, f"{TAREA},{DIFICIL}"),
            flood_tipo=args.flood_tipo,
            interval=args.interval,
            seconds=10.0 if args.seconds is None else args.seconds,
            head_start=args.head_start,
            flood_questions=args.flood_questions,
            answer_timeout=args.answer_timeout,
            flood_id_bytes=args.flood_id_bytes,
            flood_reads=args.flood_reads,
            **wire,
        )
    else:
        job = connect_rate(
            host,
            port,
            workers=args.workers,
            seconds=5.0 if args.seconds is None else args.seconds,
            max_connections=args.max_connections,
            tipos=kinds(args.tipos, CONTENIDO),
            **wire,
        )
    return {**header, **asyncio.run(job)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
