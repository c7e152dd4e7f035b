"""Loopback plumbing the lessons share: listeners, the notebook's length prefix, the book.

The notebook's own wire format is a 4-byte big-endian length and then the text; the
helpers here write it the way its cells do, so each lesson's reproduction stays a few
lines long. Everything opened here is registered on the lesson's cleanup stack.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

from ayudantia import quijote
from ayudantia.lessons._runner import Context


def listener(ctx: Context) -> socket.socket:
    """A TCP listener on 127.0.0.1 with a free port, closed by the lesson's cleanup."""
    sock = socket.create_server(("127.0.0.1", 0))
    ctx.stack.callback(sock.close)
    return sock


def connect(ctx: Context, address: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(address[:2], timeout=timeout)
    ctx.stack.callback(sock.close)
    return sock


def accept(ctx: Context, server: socket.socket, timeout: float = 5.0) -> socket.socket:
    server.settimeout(timeout)
    sock, _ = server.accept()
    ctx.stack.callback(sock.close)
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
