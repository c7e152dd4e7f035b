"""Signals as events: SIGINT and SIGTERM stop a process cleanly instead of raising anywhere."""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import time
from collections.abc import Iterator
from types import FrameType


class SignalEvent:
    """An event a signal handler may set: a flag plus a self-pipe, no lock.

    ``threading.Event.set`` takes a lock; a handler that runs while the main thread holds
    that same lock (inside ``Event.wait``) deadlocks. And a main thread blocked in
    ``Event.wait()`` with no timeout may never run the Python-level handler at all when the
    kernel delivers the signal to another thread. Here the handler only stores a flag and
    writes one byte; :meth:`wait` sleeps in ``select`` on the other end of the pipe.
    """

    def __init__(self) -> None:
        self._flag = False
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def set(self) -> None:
        self._flag = True
        with contextlib.suppress(OSError):
            self._w.send(b"x")

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._flag:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            # a bounded sleep: signals are run by the main thread between bytecodes
            with contextlib.suppress(OSError, ValueError):
                select.select([self._r], [], [], 0.5 if left is None else min(left, 0.5))
        return self._flag

    def close(self) -> None:
        self._r.close()
        self._w.close()


@contextlib.contextmanager
def handle_signals() -> Iterator[SignalEvent]:
    """SIGINT and SIGTERM set an event instead of raising in whatever code was running."""
    requested = SignalEvent()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        requested.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        requested.close()


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread while inside.

    For servers whose blocking loop only stops that way (waitress, cheroot); the previous
    handlers come back on exit.
    """

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
