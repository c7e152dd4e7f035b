"""ayudantia.procs.terminate on real child processes: polite first, SIGKILL when ignored."""

from __future__ import annotations

import signal
import subprocess
import sys

from ayudantia.procs import terminate

# A child that says it is ready once its SIGINT disposition is set, then sleeps.
CHILD = """
import signal, sys, time
signal.signal(signal.SIGINT, {handler})
print("ready", flush=True)
time.sleep(60)
"""


def _child(handler: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(handler=handler)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    return proc


def test_a_child_that_obeys_stops_on_the_signal():
    proc = _child("lambda *a: sys.exit(3)")
    try:
        assert terminate(proc, 10.0) is True
        assert proc.returncode == 3
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_child_that_ignores_the_signal_is_killed_and_reaped():
    proc = _child("signal.SIG_IGN")
    try:
        assert terminate(proc, 0.3) is False
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_child_already_gone_is_no_error():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    assert terminate(proc, 0.1, signal.SIGTERM) is True
    assert proc.returncode == 0
