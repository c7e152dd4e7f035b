"""recv: one ``recv(4096)`` taken as the whole reply.

The notebook reads the server's answer with ``json.loads(sock.recv(4096).decode())`` (and its pickle
cell the same way with ``10**5``). TCP is a byte stream with no message boundaries: one
``recv`` returns what has arrived, at most its argument. With the Quijote as the reply the
first read holds a sliver of it, and decoding fails. The framed connection reads the
10-byte header, then exactly the declared length, however many reads that takes.
"""

from __future__ import annotations

import contextlib
import json
import socket

from ayudantia import quijote
from ayudantia.lessons import _loopback as lo
from ayudantia.lessons._runner import N_, Context, Outcome, Q, Row, T
from protocol.transport import Connection

NAME = "recv"
SECTION = "«Envio utilizando JSON», «Envio utilizando Pickle»"
PATTERN = N_("one recv(4096) taken as the whole reply")
DEFECT = N_(
    "the server sends the notebook's message with the whole Quijote as its text; "
    "the client reads it with one recv(4096) and json.loads"
)
FIX = N_(
    "the same message through protocol.transport.Connection: send() frames it, "
    "recv() reads the declared length"
)
WHY = N_(
    "TCP delivers a stream of bytes, not messages: one recv returns whatever has "
    "arrived, at most what you asked for. Only a length (or a delimiter) says "
    "where a message ends."
)
FIX_AT = "protocol/framing.py FrameDecoder.next_event; protocol/transport.py Connection.recv"
HEADLINE = "first_read"


def _serve_raw(server: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError), server.accept()[0] as sock:
        sock.sendall(data)  # the client leaves after one read: this ends in EPIPE


def _serve_framed(server: socket.socket, message: dict, sent: list[int]) -> None:
    with contextlib.suppress(OSError), Connection(server.accept()[0], side="server") as conn:
        sent.append(conn.send(message).wire_bytes)


def run(ctx: Context) -> Outcome:
    text, real = lo.book_text()
    message = quijote.book_message(text)
    data = json.dumps(message).encode("utf-8")

    server = lo.listener(ctx)
    server.settimeout(ctx.budget)
    ctx.thread(_serve_raw, server, data, name="recv-raw")
    with lo.connect(ctx, server.getsockname()) as sock:
        first = sock.recv(4096)  # the notebook's read
    try:
        json.loads(first.decode("utf-8"))
        decoded = T("decoded")
        failed = False
    except ValueError as exc:  # JSONDecodeError or UnicodeDecodeError
        decoded = T("fails: {error}", error=type(exc).__name__)
        failed = True

    framed = lo.listener(ctx)
    framed.settimeout(ctx.budget)
    sent: list[int] = []
    serving = ctx.thread(_serve_framed, framed, message, sent, name="recv-framed")
    with Connection.connect(*framed.getsockname()[:2], idle_timeout=ctx.budget) as conn:
        received = conn.recv_message()
    serving.join(ctx.budget)
    whole = received.obj == message and sent == [received.wire_bytes]
    took = received.wire_bytes

    rows = [
        Row("sent", N_("bytes of the reply"), Q(len(data), "bytes"), Q(sent[0], "bytes")),
        Row("first_read", N_("bytes the reader took"), Q(len(first), "bytes"), Q(took, "bytes")),
        Row(
            "share",
            N_("share of the reply"),
            Q(100 * len(first) / len(data), "%"),
            Q(100 * took / sent[0], "%"),
        ),
        Row(
            "decoded",
            N_("decoding"),
            decoded,
            T("equal to what was sent") if whole else T("different"),
        ),
    ]
    notes = [] if real else [T("the book is not on disk: a 2.1 MB stand-in text was sent")]
    return Outcome(
        rows, defect_showed=failed and len(first) < len(data), fix_held=whole, notes=notes
    )
