"""Ctrl+C right after starting ``ayudantia``, while the CLI imports: 130, no traceback."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.procs import ayudantia_cmd

# shared libraries the CLI's imports load, in order; seeing one means "inside the imports"
MARKERS = ("zstandard", "lz4", "msgpack")


def _importing(pid: int) -> bool:
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
    return any(marker in maps for marker in MARKERS)


@pytest.mark.timeout(60)
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("late", [0.0, 0.05])
def test_sigint_during_imports_exits_130_without_traceback(late: float) -> None:
    proc = subprocess.Popen(
        ayudantia_cmd("eco", "--port", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not _importing(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        assert proc.poll() is None and _importing(proc.pid), "never reached the imports"
        time.sleep(late)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in err, err
    assert proc.returncode == 130, (proc.returncode, err)
    assert "listening" not in out or late  # at 0 s it was interrupted before it listened
