"""Loopback plumbing the lessons share: listeners, the notebook's length prefix, the book.

The notebook's own wire format is a 4-byte big-endian length and then the text; the
helpers here write it the way its cells do, so each lesson's reproduction stays a few
lines long. Everything opened here is registered on the lesson's cleanup stack.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator

from ayudantia import quijote
from ayudantia.lessons._runner import Context


def close(sock: socket.socket) -> None:
    """Shut a socket down, then close it: a thread blocked on it (in ``recv``, ``accept``,
    ``sendall``) wakes at once, where a bare ``close`` leaves it waiting on Linux."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def listener(ctx: Context) -> socket.socket:
    """A TCP listener on 127.0.0.1 with a free port, closed by the lesson's cleanup."""
    sock = socket.create_server(("127.0.0.1", 0))
    ctx.stack.callback(close, sock)
    return sock


def connect(ctx: Context, address: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(address[:2], timeout=timeout)
    ctx.stack.callback(close, sock)
    return sock


def accept(ctx: Context, server: socket.socket, timeout: float = 5.0) -> socket.socket:
    server.settimeout(timeout)
    sock, _ = server.accept()
    ctx.stack.callback(close, sock)
    return sock


def free_port() -> int:
    """A port nothing listens on right now (for a Profesor that is down)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prefixed(text: str) -> bytes:
    """The notebook's message: ``len(msg).to_bytes(4, "big") + msg``."""
    data = text.encode()
    return len(data).to_bytes(4, byteorder="big") + data


def book_text() -> tuple[str, bool]:
    """The Quijote when it is on disk ($AYUDANTIA_QUIJOTE or the cache), else a stand-in.

    A lesson never downloads: the stand-in is the book's first sentence repeated to the
    book's size (2.1 MB), which shows every defect the same way. The flag says which.
    """
    path = os.environ.get(quijote.ENV_VAR) or str(quijote.cache_path())
    try:
        return quijote.load_text(path), True
    except (OSError, quijote.BookUnavailable):
        line = "En un lugar de la Mancha, de cuyo nombre no quiero acordarme... "
        return line * (2_100_000 // len(line)), False


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def notebook_questions(sock: socket.socket, until: float) -> Iterator[str]:
    """The notebook's reading loop: ``recv(4)`` for the length, ``recv(length)`` for the text.

    It stops when the peer leaves or at the lesson's deadline; the notebook has neither
    stop and spins on ``b""`` (the spin lesson shows that).
    """
    sock.settimeout(max(0.1, until - time.monotonic()))
    while time.monotonic() < until:
        head = sock.recv(4)
        if not head:
            return
        pregunta = sock.recv(int.from_bytes(head, byteorder="big")).decode(errors="replace")
        if not pregunta:
            return
        yield pregunta


def serve_notebook(server: socket.socket, until: float, reply: Callable[[str], str | None]) -> None:
    """Accept one peer and answer each question with ``reply`` (None: no answer at all)."""
    with contextlib.suppress(OSError), server.accept()[0] as sock:
        for pregunta in notebook_questions(sock, until):
            answer = reply(pregunta)
            if answer is not None:
                sock.sendall(prefixed(answer))


def read_exactly(sock: socket.socket, n: int) -> int:
    """Read ``n`` bytes (or until the peer leaves or a timeout); how many arrived."""
    got = 0
    with contextlib.suppress(OSError):
        while got < n:
            more = sock.recv(n - got)
            if not more:
                break
            got += len(more)
    return got
