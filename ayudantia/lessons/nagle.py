"""nagle: the header and the payload sent in two writes, with Nagle's algorithm on.

What a student writes after splitting the notebook's ``sendall(len + msg)`` in two:
``sendall(header)`` then ``sendall(payload)``, asking a question and waiting for its answer.
Nagle holds the second small write until the first is acknowledged; the server delays
that ACK (about 40 ms on Linux) hoping to send it with an answer, and it cannot answer
before the payload arrives. Each round trip waits for the delayed-ACK timer.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import time
from typing import Any

from ayudantia.lessons import _loopback as lo
from ayudantia.lessons._runner import N_, Context, Outcome, Q, Row
from protocol.errors import AyudantiaError
from protocol.transport import Connection

NAME = "nagle"
SECTION = "«Servidor Multicliente», «P2P» (send)"
PATTERN = N_("header and payload sent in two writes, with Nagle on")
DEFECT = N_(
    "a student sends each question as two writes (the 4-byte length, then the text) on "
    "a socket with Nagle's algorithm on, and waits for each answer"
)
FIX = N_(
    "Connection.send: the header and the payload leave in one sendmsg, on a socket with TCP_NODELAY"
)
WHY = N_(
    "Nagle's algorithm keeps a small write while an earlier one is unacknowledged; the "
    "receiver delays its ACK (about 40 ms on Linux) to piggyback it on an answer, and it "
    "cannot answer before the rest of the question arrives. Both wait for the timer."
)
FIX_AT = "protocol/transport.py Connection._sendmsg_all and Connection.__init__ (TCP_NODELAY)"
HEADLINE = "round_trip"
ANSWER = lo.prefixed("ok")  # one write: the answer is not the problem
FASTER = 4  # the margin the fix must beat: ~500x on an idle machine, less under load
WARMUP = 3  # the first segments of a connection are acknowledged at once (quick-ack mode)


class CountingSocket(socket.socket):
    """A socket that counts the send calls made on it: each is one system call here."""

    sends = 0

    def send(self, *args: Any) -> int:
        self.sends += 1
        return super().send(*args)

    def sendall(self, *args: Any) -> None:  # one send(2) for a few bytes on loopback
        self.sends += 1
        return super().sendall(*args)

    def sendmsg(self, *args: Any) -> int:
        self.sends += 1
        return super().sendmsg(*args)


def counting(sock: socket.socket) -> CountingSocket:
    """The same connection, as a socket that counts its send calls."""
    timeout = sock.gettimeout()
    counted = CountingSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    counted.settimeout(timeout)
    return counted


def nodelay(sock: socket.socket) -> bool:
    """Whether Nagle's algorithm is off on ``sock`` (asked from the kernel)."""
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def _ok(pregunta: str) -> str:
    return "ok"


def _answer_framed(server: socket.socket, until: float) -> None:
    with contextlib.suppress(OSError, AyudantiaError):
        conn = Connection(server.accept()[0], side="server", idle_timeout=1.0)
        with conn:
            while time.monotonic() < until:
                conn.recv()
                conn.send("ok")


def _two_writes(ctx: Context, rounds: int) -> tuple[list[float], float, bool]:
    """Round trips, send calls per question, and whether TCP_NODELAY was on."""
    server = lo.listener(ctx)
    ctx.thread(lo.serve_notebook, server, ctx.deadline(ctx.budget), _ok, name="nagle-notebook")
    sock = counting(socket.create_connection(server.getsockname()[:2], timeout=5.0))
    ctx.stack.callback(lo.close, sock)  # Nagle on: the socket's default
    question = b"Pregunta Dificil"
    times = []
    until = ctx.deadline(ctx.budget * 0.6)
    for _ in range(rounds + WARMUP):
        if time.monotonic() > until:
            break
        start = time.perf_counter()
        sock.sendall(len(question).to_bytes(4, byteorder="big"))
        sock.sendall(question)
        lo.read_exactly(sock, len(ANSWER))
        times.append(time.perf_counter() - start)
    sends, off = sock.sends / max(1, len(times)), nodelay(sock)
    sock.close()
    return times[WARMUP:], sends, off


def _one_sendmsg(ctx: Context, rounds: int) -> tuple[list[float], float, bool]:
    """Round trips, send calls per question, and whether TCP_NODELAY was on."""
    server = lo.listener(ctx)
    ctx.thread(_answer_framed, server, ctx.deadline(ctx.budget), name="nagle-framed")
    conn = Connection(
        counting(socket.create_connection(server.getsockname()[:2], timeout=5.0)),
        side="client",
        idle_timeout=ctx.budget,
    )
    ctx.stack.callback(conn.close)
    assert isinstance(conn.sock, CountingSocket)
    times = []
    for _ in range(rounds + WARMUP):
        start = time.perf_counter()
        conn.send("Pregunta Dificil")
        conn.recv()
        times.append(time.perf_counter() - start)
    sends, off = conn.sock.sends / len(times), nodelay(conn.sock)
    conn.close()
    return times[WARMUP:], sends, off


def run(ctx: Context) -> Outcome:
    rounds = ctx.pick(15, 60)
    slow, slow_sends, slow_nodelay = _two_writes(ctx, rounds)
    fast, fast_sends, fast_nodelay = _one_sendmsg(ctx, rounds)
    slow_median, fast_median = statistics.median(slow), statistics.median(fast)
    rows = [
        Row("round_trip", N_("median round trip"), Q(slow_median, "s"), Q(fast_median, "s")),
        Row("fastest", N_("fastest round trip"), Q(min(slow), "s"), Q(min(fast), "s")),
        Row("rounds", N_("round trips measured"), len(slow), len(fast)),
        Row("writes", N_("system calls to send one question"), slow_sends, fast_sends),
        Row("nodelay", N_("TCP_NODELAY on the socket"), slow_nodelay, fast_nodelay),
    ]
    return Outcome(
        rows,
        defect_showed=slow_median > 0.010 and slow_sends == 2 and not slow_nodelay,
        fix_held=fast_median * FASTER < slow_median and fast_sends == 1 and fast_nodelay,
    )
