"""Reading captures with Debian's tshark and the package's own dissector, for the tests.

tshark runs with ``HOME`` in a fresh directory, so neither the user's preferences nor a
copy of the dissector they installed (which would register the protocol twice) get in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from ayudantia.commands.wireshark import dissector_path

FIELDS = (
    "frame.number",
    "tcp.stream",
    "tcp.srcport",
    "tcp.dstport",
    "ay.version",
    "ay.codec",
    "ay.flags.more",
    "ay.flags.signed",
    "ay.flags.refusal",
    "ay.encoding",
    "ay.length",
    "ay.compressed",
    "ay.message.frames",
    "ay.message.length",
    "ay.refusal.reason",
    "ay.refusal.text",
    "ay.handshake.type",
    "ay.tag",
)


def tshark_path() -> str:
    """tshark's path; the test is skipped without one, and fails in CI (``CI`` set)."""
    found = shutil.which("tshark")
    if found:
        return found
    reason = "no tshark on PATH"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; in CI the tshark tests must run (.ci/run installs tshark)")
    pytest.skip(f"{reason}: the dissector tests need Debian's tshark (apt-get install tshark)")


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def tshark(pcap: Path, *args: str, home: Path) -> Run:
    """``tshark -r PCAP`` with the dissector loaded and TCP reassembly on."""
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            tshark_path(),
            "-r",
            str(pcap),
            "-X",
            f"lua_script:{dissector_path()}",
            "-o",
            "tcp.desegment_tcp_streams:TRUE",
            "-o",
            "tcp.analyze_sequence_numbers:TRUE",
            *args,
        ],
        capture_output=True,
        text=True,
        errors="replace",  # a fuzzed capture's bytes are printed as they are
        timeout=100,
        env={**os.environ, "HOME": str(home), "LC_ALL": "C.UTF-8"},
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def packets(pcap: Path, home: Path, display_filter: str = "ay") -> list[dict[str, list[str]]]:
    """One dict per packet the filter keeps: each field's values, one per occurrence.

    A packet holding three frames has three ``ay.codec`` values, in order; the message
    fields appear once per message that ended in the packet. Two passes (``-2``), as the
    GUI does, so the per-message state is read back rather than built while printing.
    """
    run = tshark(
        pcap,
        "-2",
        "-Y",
        display_filter,
        "-T",
        "fields",
        *(arg for name in FIELDS for arg in ("-e", name)),
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=\x1f",
        "-E",
        "separator=\x1e",
        home=home,
    )
    assert run.returncode == 0, run.stderr
    assert "Lua Error" not in run.stderr + run.stdout, run.stderr + run.stdout
    out = []
    for line in run.stdout.split("\n"):
        if not line:
            continue
        values = dict(zip(FIELDS, line.split("\x1e"), strict=True))
        out.append({k: (v.split("\x1f") if v else []) for k, v in values.items()})
    return out
