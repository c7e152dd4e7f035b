"""header: ``recv(4)`` then ``recv(n)`` taken as exact reads.

The notebook's servers read a 4-byte length and then ``recv(length)``, as if each call
returned exactly what it asked for. It returns what has arrived. A sender that writes a
message in small pieces (a slow link, a student's loop, Nagle off) makes ``recv(n)`` return
part of the question, and the next ``recv(4)`` takes question bytes as the next length.
The lesson sends in lock-step with the reader, so the split is the same on every run.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

from ayudantia.lessons import _loopback as lo
from ayudantia.lessons._runner import N_, Context, Outcome, Q, Row, T
from protocol import codecs
from protocol.framing import FrameDecoder, Message, encode_message
from protocol.transport import Connection, Received

NAME = "header"
SECTION = "«Servidor Multicliente», «P2P»"
PATTERN = N_("recv(4) then recv(n) taken as exact reads")
DEFECT = N_(
    "a student writes each question in three pieces (the 4-byte length, then the "
    "text in two halves); the server reads recv(4), then recv(length)"
)
FIX = N_(
    "the same pieces carrying ayudantia frames, read by Connection.recv(); then "
    "the FrameDecoder fed the same bytes split at every position"
)
WHY = N_(
    "recv(n) returns at most n bytes: whatever has arrived. The notebook's reader"
    " never checks how many it got, so the rest of a question is read as the next"
    " length, and from then on every byte is misread."
)
FIX_AT = "protocol/framing.py FrameDecoder.receive_data, FrameDecoder.next_event"
HEADLINE = "length"
QUESTIONS = ("Tarea", "Pregunta Dificil", "Contenido")
TOO_LONG = 1 << 20  # the notebook's reader would now wait for (and allocate) this many bytes


def _split(message: bytes, head: int) -> list[bytes]:
    """The header whole, then the text in two halves: how a slow sender writes it."""
    body = message[head:]
    half = max(1, len(body) // 2)
    return [message[:head], body[:half], body[half:]]


def _notebook_reader(sock: socket.socket, stepped: threading.Event, out: dict[str, Any]) -> None:
    """The notebook's loop, bounded: it stops at a length no question could have."""
    try:
        while len(out["questions"]) < len(QUESTIONS):
            head = sock.recv(4)
            stepped.set()
            if not head:
                return
            length = int.from_bytes(head, byteorder="big")
            if length > TOO_LONG:
                out["bogus"], out["raw"] = length, head
                return
            out["questions"].append(sock.recv(length).decode(errors="replace"))
            stepped.set()
    except OSError:
        return
    finally:
        out["done"].set()
        stepped.set()


def _lockstep(
    sock: socket.socket, parts: list[bytes], stepped: threading.Event, done: threading.Event
) -> None:
    """Write each piece once the reader has returned from its previous recv."""
    for part in parts:
        if done.is_set():
            return
        stepped.clear()
        sock.sendall(part)
        stepped.wait(2.0)


def _defect(ctx: Context) -> dict[str, Any]:
    server = lo.listener(ctx)
    student = lo.connect(ctx, server.getsockname())
    student.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # every piece leaves alone
    peer = lo.accept(ctx, server)
    peer.settimeout(ctx.budget / 3)
    out: dict[str, Any] = {"questions": [], "bogus": None, "done": threading.Event()}
    stepped = threading.Event()
    ctx.thread(_notebook_reader, peer, stepped, out, name="header-reader")
    parts = [p for q in QUESTIONS for p in _split(lo.prefixed(q), 4)]
    _lockstep(student, parts, stepped, out["done"])
    out["done"].wait(ctx.budget / 3)
    return out


def _frames() -> list[bytes]:
    json_id = codecs.get("json").id
    return [encode_message(json_id, json.dumps({"tipo": q}).encode()) for q in QUESTIONS]


def _every_split(stream: bytes) -> tuple[int, int]:
    """Feed the decoder the stream cut at every position (and byte by byte): runs, equal runs."""
    expected = [{"tipo": q} for q in QUESTIONS]
    cuts = [[stream[:i], stream[i:]] for i in range(1, len(stream))]
    cuts.append([stream[i : i + 1] for i in range(len(stream))])
    equal = 0
    for pieces in cuts:
        decoder = FrameDecoder()
        got = []
        for piece in pieces:
            decoder.receive_data(piece)
            while isinstance(event := decoder.next_event(), Message):
                got.append(json.loads(bytes(event.payload)))
        equal += got == expected
    return len(cuts), equal


def _fix(ctx: Context) -> list[Received]:
    server = lo.listener(ctx)
    student = lo.connect(ctx, server.getsockname())
    student.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = Connection(lo.accept(ctx, server), side="server", idle_timeout=ctx.budget / 3)
    ctx.stack.callback(conn.close)
    for frame in _frames():
        for part in _split(frame, 10):
            student.sendall(part)
            time.sleep(0.002)
    return [conn.recv_message() for _ in QUESTIONS]


def run(ctx: Context) -> Outcome:
    out = _defect(ctx)
    received = _fix(ctx)
    got = [r.obj["tipo"] for r in received]
    runs, equal = _every_split(b"".join(_frames()))
    intact = sum(q in QUESTIONS for q in out["questions"])
    first = out["questions"][0] if out["questions"] else ""
    bogus = out["bogus"]
    rows = [
        Row("first_question", N_("first question read"), repr(first), repr(got[0])),
        Row(
            "intact",
            N_("questions read intact"),
            T("{n} of {total}", n=intact, total=len(QUESTIONS)),
            T(
                "{n} of {total}",
                n=sum(a == b for a, b in zip(got, QUESTIONS, strict=True)),
                total=len(QUESTIONS),
            ),
        ),
        Row(
            "length",
            N_("next length read"),
            Q(bogus or 0, "bytes"),
            Q(len(received[1].payload), "bytes"),  # the length the decoder read for it
        ),
        Row(
            "splits",
            N_("splits fed to the decoder, equal messages"),
            None,
            T("{n} of {total}", n=equal, total=runs),
        ),
    ]
    notes = (
        [
            T(
                "the reader took {length} as a length: the bytes {raw} of a question",
                length=Q(bogus, "bytes"),
                raw=repr(out["raw"]),
            )
        ]
        if bogus
        else []
    )
    return Outcome(
        rows,
        defect_showed=bogus is not None and intact < len(QUESTIONS),
        fix_held=list(got) == list(QUESTIONS) and equal == runs,
        notes=notes,
    )
