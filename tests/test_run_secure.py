"""``ayudantia run --tls --key``: the whole class closed to outsiders, and its summary says so."""

from __future__ import annotations

import os
import subprocess

import pytest
from procs import ayudantia_cmd


@pytest.mark.timeout(120)
def test_the_whole_class_runs_with_tls_and_a_key(tmp_path):
    secret = "secreto-de-la-clase-77"
    done = subprocess.run(
        ayudantia_cmd(
            "run",
            "--tls",
            "--key",
            secret,
            "--students",
            "2",
            "--questions",
            "6",
            "--interval",
            "0",
        ),
        capture_output=True,
        text=True,
        timeout=110,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # where its certificates live, briefly
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "result        OK" in out
    assert "Llevamos: 12 preguntas respondidas; students received 12 answers: OK" in out
    security = next(line for line in out.splitlines() if line.startswith("security"))
    assert "TLSv1.3 on every hop, mutual" in security
    assert "keyed handshake" in security and "signed Profesor writes" in security
    assert secret not in out + done.stderr
    assert not list(tmp_path.glob("ayudantia-certs-*"))  # the run removed its certificates


@pytest.mark.timeout(120)
def test_a_plain_run_says_it_is_open(tmp_path):
    done = subprocess.run(
        ayudantia_cmd("run", "--students", "1", "--questions", "2", "--interval", "0"),
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "security      none: no TLS, no key" in done.stdout
