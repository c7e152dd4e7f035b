"""``ayudantia run --tls --key``: the whole class closed to outsiders, and its summary says so."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from procs import ayudantia_cmd

from ayudantia.run_secure import SecureClass


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
            "--report",
            str(tmp_path / "report.json"),
        ),
        capture_output=True,
        text=True,
        timeout=110,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # where its certificates live, briefly
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"│ result\s+│ OK", out), out
    assert re.search(r"│ security\s+│", out), out
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert report["profesor_count"] == report["answered"] == 12
    security = report["security"]
    assert "TLSv1.3 on every hop, mutual" in security
    assert "keyed handshake" in security and "signed Profesor writes" in security
    assert secret not in out + done.stderr
    assert not list(tmp_path.glob("ayudantia-certs-*"))  # the run removed its certificates


def test_the_summary_says_when_the_class_is_open():
    open_class = SecureClass(tls=False, key=None)
    assert open_class.flags("docencio") == [] and not open_class.tls
    assert open_class.describe().startswith("none: no TLS, no key")
    keyed = SecureClass(tls=False, key="k")
    assert "keyed handshake" in keyed.describe() and "TLS" not in keyed.describe()
