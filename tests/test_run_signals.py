"""``ayudantia run`` stops its children and removes its temp dir on SIGINT, SIGTERM, SIGHUP."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import psutil
import pytest

from tests.procs import ayudantia_cmd


def _family(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_a_closed_terminal_leaves_no_process_and_no_temp_dir(tmp_path, sig):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    run = subprocess.Popen(
        ayudantia_cmd("run", "--students", "2", "--questions", "500", "--interval", "0.2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 40
        while len(children) < 5 and time.monotonic() < deadline:
            children = _family(run.pid)
            time.sleep(0.1)
        assert len(children) >= 5  # profesor, tareo, docencio, 2 students
        assert list(tmp.iterdir())  # its temp directory, in our TMPDIR
        run.send_signal(sig)
        assert run.wait(40) == 130
        _, alive = psutil.wait_procs(children, timeout=5)
        assert not alive
        assert not list(tmp.iterdir())
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for child in children:
            if child.is_running():
                child.kill()


@pytest.mark.timeout(90)
def test_a_sigkilled_run_takes_its_roles_with_it(tmp_path):
    """SIGKILL runs no handler in ``run``: the roles must notice on their own (PDEATHSIG)."""
    run = subprocess.Popen(
        ayudantia_cmd("run", "--students", "2", "--questions", "500", "--interval", "0.2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 40
        while len(children) < 5 and time.monotonic() < deadline:
            children = _family(run.pid)
            time.sleep(0.1)
        assert len(children) >= 5  # profesor, tareo, docencio, 2 students
        run.kill()
        run.wait(10)
        _, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, [p.pid for p in alive]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
