"""Real role processes for end-to-end tests: started, waited for, and always reaped."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from ayudantia.procs import terminate

LISTENING = re.compile(r"listening on (?:http://)?\[?([\w.:-]+?)\]?:(\d+)\b")


@dataclass
class RoleProcess:
    proc: subprocess.Popen[str]
    host: str
    port: int
    output: list[str] = field(default_factory=list)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        """``sig``, then SIGKILL after ``timeout``; a child that needed the kill fails the test."""
        if not terminate(self.proc, timeout, sig):
            raise subprocess.TimeoutExpired(self.proc.args, timeout)
        return self.proc.returncode


def stop_run(run: subprocess.Popen, grace: float = 30.0) -> None:
    """Stop an ``ayudantia run`` that is still going the way that reaps its class: SIGTERM
    lets it stop its children (each in its own session); a SIGKILL first would leave them
    all behind, so it comes only after ``grace`` seconds."""
    terminate(run, grace, signal.SIGTERM)


def ayudantia_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ayudantia", *args]


@contextlib.contextmanager
def running(
    *args: str, ready_timeout: float = 20.0, env: dict[str, str] | None = None
) -> Iterator[RoleProcess]:
    """Start ``ayudantia ARGS`` and wait for its "listening on HOST:PORT" line; kill it on exit."""
    proc = subprocess.Popen(
        ayudantia_cmd(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines: list[str] = []
    found = threading.Event()
    address: list[tuple[str, int]] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = LISTENING.search(line)
            if m and not found.is_set():
                address.append((m.group(1), int(m.group(2))))
                found.set()
        found.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        if not found.wait(ready_timeout) or not address:
            raise RuntimeError(f"{args[0]} did not start listening:\n{''.join(lines)}")
        yield RoleProcess(proc, address[0][0], address[0][1], lines)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        reader.join(5)
