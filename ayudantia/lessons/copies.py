"""copies: ``respuesta += data``, a receive that copies everything it has so far, each time.

The notebook's chunk reader grows ``respuesta`` with ``+=`` on ``bytes``: each step makes
a new object and copies the whole answer into it, so the bytes copied grow with the square
of the answer's size. The project's decoder reads with ``recv_into`` straight into the
message's own buffer (preallocated from the header's length, grown a few times at most).
"""

from __future__ import annotations

import contextlib
import socket
import time

from ayudantia.lessons import _loopback as lo
from ayudantia.lessons._runner import N_, Context, Outcome, Q, Row
from protocol.transport import Connection

NAME = "copies"
SECTION = "«Uso de chunck»"
PATTERN = N_("respuesta += data")
DEFECT = N_(
    "the server sends the book's bytes and closes; the client reads recv(4096) in a loop "
    "and appends each piece with respuesta += data"
)
FIX = N_(
    "the book as one framed message read by Connection.recv_message(): the decoder "
    "hands recv_into a view of the message's buffer"
)
WHY = N_(
    "bytes are immutable: respuesta += data builds a new object and copies everything "
    "received so far into it. Reading n bytes in pieces of 4 KiB copies about "
    "n²/8 KiB bytes; recv_into writes each byte once, where it will be decoded."
)
FIX_AT = (
    "protocol/framing.py FrameDecoder.get_buffer, FrameDecoder.read_from; "
    "protocol/transport.py Connection._recv_into"
)
HEADLINE = "rate"
FASTER = 2  # the margin the fix must beat (it is ~20x on an idle machine)


def _send_and_close(server: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError), server.accept()[0] as sock:
        sock.sendall(data)


def _send_framed(server: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError), Connection(server.accept()[0], side="server") as conn:
        conn.send_payload(0, data)  # codec 0: raw bytes


def _notebook_read(ctx: Context, data: bytes) -> tuple[int, int, float]:
    server = lo.listener(ctx)
    ctx.thread(_send_and_close, server, data, name="copies-send")
    sock = lo.connect(ctx, server.getsockname(), timeout=ctx.budget)
    respuesta, copied = b"", 0
    start = time.perf_counter()
    while True:
        data_in = sock.recv(4096)
        if not data_in:
            break
        respuesta += data_in  # the notebook's line
        copied += len(respuesta)
    return len(respuesta), copied, time.perf_counter() - start


def _framed_read(ctx: Context, data: bytes) -> tuple[int, float, bool]:
    server = lo.listener(ctx)
    ctx.thread(_send_framed, server, data, name="copies-framed")
    conn = Connection.connect(*server.getsockname()[:2], idle_timeout=ctx.budget)
    ctx.stack.callback(conn.close)
    start = time.perf_counter()
    received = conn.recv_message()
    took = time.perf_counter() - start
    return len(received.payload), took, received.payload == data


def run(ctx: Context) -> Outcome:
    text, _real = lo.book_text()
    data = text.encode("utf-8")
    got, copied, slow = _notebook_read(ctx, data)
    size, fast, same = _framed_read(ctx, data)
    rows = [
        Row("size", N_("bytes received"), Q(got, "B"), Q(size, "B")),
        Row("copied", N_("bytes copied by the reader's code"), Q(copied, "B"), None),
        Row("time", N_("time to receive"), Q(slow, "s"), Q(fast, "s")),
        Row("rate", N_("receive rate"), Q(got / slow, "B/s"), Q(size / fast, "B/s")),
    ]
    return Outcome(
        rows,
        defect_showed=got == len(data) and copied > 20 * len(data),
        fix_held=same and fast * FASTER < slow,
    )
