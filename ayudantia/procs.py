"""Stopping a child process the one way: a signal, a bounded wait, then SIGKILL and a wait.

``ayudantia run`` (each role it starts), the benchmarks' peers (:mod:`ayudantia.netbench`)
and the tests' role processes all stop a child the same way, and each wrote it out on its
own, each slightly differently (one forgot that the child may be gone between ``poll`` and
``send_signal``). The polite signal first lets the child clean up (flush its outbox, stop
its own children); the SIGKILL after ``grace`` seconds means nothing outlives the caller;
the final ``wait`` reaps it, so no zombie is left either way.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess

__all__ = ["terminate"]


def terminate(proc: subprocess.Popen, grace: float, sig: int = signal.SIGINT) -> bool:
    """Stop ``proc``: ``sig``, up to ``grace`` seconds for it to exit, then SIGKILL; reaped.

    True when it exited on its own or on ``sig`` (or had exited already), False when it had
    to be killed. Its exit status is ``proc.returncode`` afterwards.
    """
    if proc.poll() is not None:
        return True
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(grace)
        return True
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        return False
