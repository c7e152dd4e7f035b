"""spin: a read loop that takes ``b""`` for data after the client leaves.

The notebook's ``listen_client_thread`` loops ``while True: recv(4)``; when the student
leaves, ``recv`` returns ``b""`` at once, forever: the length is 0, ``recv(0)`` is ``b""``,
the "question" is empty, and the loop goes round again, burning a whole CPU per departed
student. The lesson measures that thread's CPU time per second of wall time (bounded by a
deadline), then the CPU of the project's event-loop server after the same client leaves.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from ayudantia.lessons import _loopback as lo
from ayudantia.lessons._runner import N_, Context, Outcome, Q, Row, T
from protocol.errors import ConnectionClosed
from protocol.transport import Connection
from roles.tareo import Tareo

NAME = "spin"
SECTION = "«Servidor Multicliente»"
PATTERN = N_('a read loop that takes b"" for data after the client leaves')
DEFECT = N_(
    "a student asks one question and leaves; the server's thread keeps looping "
    "recv(4), recv(length)"
)
FIX = N_(
    "the same student with the Tareo (an event-loop server, roles/tareo.py); and "
    "a blocking Connection.recv() after the peer left"
)
WHY = N_(
    'recv returns b"" only when the peer has closed, and then returns it at once '
    'on every call: a loop that does not stop on b"" never blocks again. It spins'
    " at full speed until the process dies."
)
FIX_AT = (
    "protocol/framing.py FrameDecoder.eof_received; protocol/transport.py "
    "Connection.recv (ConnectionClosed); protocol/aio.py FrameConnection.eof_received"
)
HEADLINE = "cpu"
# Wide margins for a loaded machine: the spinning thread burns close to 1 CPU s/s when it
# gets a core, the idle loop close to 0. Under load the spinning thread's CPU share falls,
# but it stays runnable (on a core or queued for one) nearly all the time.
SPINNING = 0.25
IDLE = 0.05
ALWAYS_RUNNABLE = 0.8


def busy(runnable: float | None) -> bool:
    return runnable is not None and runnable > ALWAYS_RUNNABLE


def thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds a running thread has used (Linux: its own clock)."""
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def _notebook_handler(sock: socket.socket, stop: threading.Event, out: dict[str, Any]) -> None:
    while not stop.is_set():  # the notebook: while True
        head = sock.recv(4)
        length = int.from_bytes(head, byteorder="big")
        pregunta = sock.recv(length).decode()
        out["reads"] += 1
        if not pregunta:
            out["empty"] += 1
            out["seen"] = repr(head)


def runnable_seconds(thread: threading.Thread) -> float | None:
    """Seconds ``thread`` has been on a core or waiting in a run queue for one (Linux).

    On a loaded machine a spinning thread gets only its share of a core, so its CPU time
    per second falls; but it is runnable all the time, which this counts. None where the
    kernel does not keep scheduler statistics.
    """
    try:
        with open(f"/proc/self/task/{thread.native_id}/schedstat", encoding="ascii") as stat:
            on_cpu, waiting = (int(x) for x in stat.read().split()[:2])
    except (OSError, ValueError):
        return None
    return (on_cpu + waiting) / 1e9


def _measure(thread: threading.Thread, window: float) -> tuple[float, float | None]:
    """CPU seconds per second of ``thread`` over ``window`` s, and its runnable share."""
    start_cpu, start_ready, start = thread_cpu(thread), runnable_seconds(thread), time.monotonic()
    time.sleep(window)
    cpu, ready, wall = thread_cpu(thread), runnable_seconds(thread), time.monotonic() - start
    share = None if ready is None or start_ready is None else (ready - start_ready) / wall
    return (cpu - start_cpu) / wall, share


def _defect(ctx: Context, window: float) -> dict[str, Any]:
    server = lo.listener(ctx)
    student = lo.connect(ctx, server.getsockname())
    peer = lo.accept(ctx, server)
    out: dict[str, Any] = {"reads": 0, "empty": 0}
    stop = threading.Event()
    handler = ctx.thread(_notebook_handler, peer, stop, out, name="spin-handler")
    ctx.stack.callback(stop.set)  # cleanup sets it; the runner joins the thread after
    student.sendall(lo.prefixed("Tarea"))
    student.close()  # the student leaves
    time.sleep(0.05)
    out["cpu"], out["runnable"] = _measure(handler, window)
    out["alive"] = int(handler.is_alive())  # its socket is still open: nobody closes it
    stop.set()
    return out


def _fix(ctx: Context, window: float) -> dict[str, Any]:
    tareo = Tareo(profesor="http://127.0.0.1:9")
    tareo.start()
    ctx.stack.callback(tareo.stop)
    with Connection.connect(*tareo.address, idle_timeout=ctx.budget) as student:
        student.send({"id": 1, "tipo": "Tarea", "de": "Ana"})
        answer = student.recv()
    time.sleep(0.05)
    assert tareo._thread is not None
    cpu, runnable = _measure(tareo._thread, window)
    # The blocking side: what the notebook's loop should have seen.
    server = lo.listener(ctx)
    leaving = lo.connect(ctx, server.getsockname())
    conn = Connection(lo.accept(ctx, server), side="server", idle_timeout=ctx.budget)
    ctx.stack.callback(conn.close)
    leaving.close()
    try:
        conn.recv()
        seen = "?"
    except ConnectionClosed as exc:
        seen = type(exc).__name__
    return {
        "cpu": cpu,
        "runnable": runnable,
        "answer": answer,
        "clients": tareo.client_count,
        "extra": tareo.answered + tareo.errors - 1,  # messages handled beyond the one asked
        "seen": seen,
    }


def run(ctx: Context) -> Outcome:
    window = ctx.pick(0.7, 3.0)
    bad = _defect(ctx, window)
    good = _fix(ctx, window)
    rows = [
        Row(
            "cpu",
            N_("server CPU after the student left"),
            Q(bad["cpu"], "CPU s/s"),
            Q(good["cpu"], "CPU s/s"),
        ),
        Row(
            "runnable",
            N_("share of the time on a core or waiting for one"),
            None if bad["runnable"] is None else Q(100 * bad["runnable"], "%"),
            None if good["runnable"] is None else Q(100 * good["runnable"], "%"),
        ),
        Row("empty", N_("empty reads taken as questions"), bad["empty"], good["extra"]),
        Row(
            "seen",
            N_("what the server sees when the student leaves"),
            bad.get("seen", "?"),
            good["seen"],
        ),
        Row("clients", N_("connections still open"), bad["alive"], good["clients"]),
    ]
    notes = [T("measured over {s} of wall time", s=Q(window, "s"))]
    return Outcome(
        rows,
        defect_showed=bad["empty"] > 1000 and (bad["cpu"] > SPINNING or busy(bad["runnable"])),
        fix_held=good["cpu"] < IDLE
        and good["extra"] == 0
        and good["seen"] == "ConnectionClosed"
        and good["clients"] == 0
        and "respuesta" in good["answer"],
        notes=notes,
    )
