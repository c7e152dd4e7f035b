"""chunks: the chunk loop whose index never moves, and a reader waiting for EOF.

The notebook's "Uso de chunck" cell sends ``mensaje[inicio:inicio + 4096]`` in a
``while inicio < len(mensaje)`` loop that never advances ``inicio``: it resends the first
4 KiB forever. Its reader appends every ``recv(4096)`` to ``respuesta`` until ``recv``
returns ``b""``, which happens only when the sender closes, and the sender is waiting for
the answer. Both are cut here by the lesson's deadline.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import time
from typing import Any

from ayudantia import quijote
from ayudantia.lessons import _loopback as lo
from ayudantia.lessons._runner import N_, Context, Outcome, Q, Row, T
from protocol import codecs
from protocol.transport import Connection

NAME = "chunks"
SECTION = "«Uso de chunck»"
PATTERN = N_("a chunk loop whose index never moves, read until an EOF nobody sends")
DEFECT = N_(
    "the client sends the book with the notebook's chunk loop (inicio never "
    "advances) and keeps the socket open for the answer; the server appends "
    'recv(4096) to respuesta until b""'
)
FIX = N_(
    "Connection.send(chunk_size=4096): frames with the MORE flag; the server "
    "reads them with recv_chunks() and knows the last one by its flag"
)
WHY = N_(
    "the loop's index is never increased, so its condition never changes; and "
    'b"" means the peer closed, not that a message ended. Without a length or a '
    "last-frame flag the reader cannot know where the message stops."
)
FIX_AT = (
    "protocol/transport.py Connection.send/recv_chunks; protocol/framing.py "
    "FLAG_MORE, FrameDecoder.next_event(stream=True)"
)
HEADLINE = "sent"
CHUNK = 4096


def _notebook_sender(sock: socket.socket, mensaje: bytes, until: float, out: dict) -> None:
    inicio = 0
    with contextlib.suppress(OSError):
        while inicio < len(mensaje) and time.monotonic() < until:  # the lesson's deadline
            if inicio + CHUNK < len(mensaje):
                chunck = mensaje[inicio : inicio + CHUNK]
            else:
                chunck = mensaje[inicio:]
            sock.sendall(chunck)
            out["sent"] += len(chunck)  # ...and inicio stays 0, as in the notebook


def _notebook_reader(sock: socket.socket, until: float, out: dict) -> None:
    """``respuesta += data`` until ``b""``; counted, not kept (it would hold all of it)."""
    sock.settimeout(0.1)
    while time.monotonic() < until:
        try:
            data = sock.recv(CHUNK)
        except TimeoutError:
            continue
        except OSError:
            return
        if not data:
            out["finished"] = True
            return
        out["held"] += len(data)


def _defect(ctx: Context, mensaje: bytes) -> dict[str, Any]:
    server = lo.listener(ctx)
    client = lo.connect(ctx, server.getsockname())
    peer = lo.accept(ctx, server)
    out = {"sent": 0, "held": 0, "finished": False}
    window = ctx.pick(0.6, 3.0)
    started = time.monotonic()
    sending = ctx.thread(
        _notebook_sender, client, mensaje, started + window, out, name="chunks-send"
    )
    _notebook_reader(peer, started + window + ctx.pick(0.4, 1.0), out)
    sending.join(1.0)
    out["waited"] = time.monotonic() - started
    return out


def _fix(ctx: Context, message: dict) -> dict[str, Any]:
    server = lo.listener(ctx)
    client = Connection.connect(*server.getsockname()[:2], chunk_size=CHUNK)
    ctx.stack.callback(client.close)
    reader = Connection(
        lo.accept(ctx, server),
        side="server",
        idle_timeout=ctx.budget / 2,
        read_timeout=ctx.budget / 2,
    )
    ctx.stack.callback(reader.close)
    out: dict[str, Any] = {}
    ctx.thread(lambda: out.update(sent=client.send(message)), name="chunks-frames")
    started = time.monotonic()
    digest, held, total, frames = hashlib.sha256(), 0, 0, 0
    for chunk in reader.recv_chunks():
        digest.update(chunk.data)
        held, total, frames = max(held, len(chunk.data)), total + len(chunk.data), frames + 1
    out.update(
        took=time.monotonic() - started,
        held=held,
        total=total,
        frames=frames,
        digest=digest.digest(),
    )
    return out


def run(ctx: Context) -> Outcome:
    text, _real = lo.book_text()
    message = quijote.book_message(text)
    mensaje = bytes(codecs.get("json").encode(message))  # the bytes send() frames
    bad = _defect(ctx, mensaje)
    good = _fix(ctx, message)
    same = good["digest"] == hashlib.sha256(mensaje).digest() and good["total"] == len(mensaje)
    rows = [
        Row("size", N_("size of the message"), Q(len(mensaje), "B"), Q(len(mensaje), "B")),
        Row(
            "sent",
            N_("bytes sent for one message"),
            Q(bad["sent"], "B"),
            Q(good["sent"].wire_bytes, "B"),
        ),
        Row(
            "finished",
            N_("reader finished"),
            T("no: cut after {s}", s=Q(bad["waited"], "s")),
            T("yes, after {s}", s=Q(good["took"], "s")),
        ),
        Row(
            "held", N_("bytes the reader holds at once"), Q(bad["held"], "B"), Q(good["held"], "B")
        ),
        Row("frames", N_("frames (the last one without MORE)"), None, good["frames"]),
    ]
    return Outcome(
        rows,
        defect_showed=bad["sent"] > len(mensaje) and not bad["finished"],
        fix_held=same and good["held"] <= CHUNK,
    )
