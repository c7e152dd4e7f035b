"""The event loop a role runs on, apart from what runs on it.

Servers (:mod:`roles.base`), the network emulator and the tests all need the same three
things: a fresh loop of the kind asked for (uvloop where it installs), a way to stop a loop
running in a background thread from another thread, and enough file descriptors for the
clients a cap promises. None of it knows about frames or roles, so it lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import threading

__all__ = ["LOOPS", "new_event_loop", "raise_fd_limit", "stop_loop_thread"]

LOOPS = ("auto", "asyncio", "uvloop")


def new_event_loop(kind: str = "auto") -> tuple[asyncio.AbstractEventLoop, str]:
    """A fresh event loop of ``kind`` and the name of what it is (``uvloop`` or ``asyncio``)."""
    if kind not in LOOPS:
        raise ValueError(f"unknown loop {kind!r}; choose from {', '.join(LOOPS)}")
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise ValueError("--loop uvloop: uvloop is not installed here") from None
        else:
            return uvloop.new_event_loop(), "uvloop"
    return asyncio.new_event_loop(), "asyncio"


def stop_loop_thread(
    loop: asyncio.AbstractEventLoop | None,
    stop: asyncio.Event | None,
    thread: threading.Thread | None,
    timeout: float,
) -> None:
    """Set a background loop's ``stop`` event from another thread, then wait for the thread.

    Either may not exist yet (never started) or be gone already (the loop closed): then
    there is nothing to tell, and a loop closing meanwhile is no error.
    """
    if loop is not None and stop is not None and not loop.is_closed():
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)
    if thread is not None:
        thread.join(timeout)


def raise_fd_limit(needed: int) -> tuple[int, str | None]:
    """Raise the soft RLIMIT_NOFILE toward ``needed``; (descriptors available, why not more)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed, None
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            return soft, f"cannot raise the open-file limit from {soft} to {target}: {exc}"
    if soft < needed:
        return soft, (
            f"the hard open-file limit is {hard} (ulimit -Hn), below the {needed} this cap needs"
        )
    return soft, None
