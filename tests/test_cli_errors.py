"""Every bad input of issue 16 through the real CLI: status 2, one line naming the setting.

Each case is a real ``python -m ayudantia`` process. None of them may start a server: a bad
value is refused before anything listens. The processes run a few at a time, once per
module (``outcomes``), and each case is then its own test.
"""

from __future__ import annotations

import os
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.procs import ayudantia_cmd

NOWHERE = "/nonexistent-ayudantia-16"


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    names: str  # what the one line must contain: the setting as the user wrote it
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # written under {tmp}
    status: int = 2

    @property
    def id(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        files = " ".join(f"[{data[:24]!r}]" for data in self.files.values())
        return f"{env} {' '.join(self.argv)} {files}".strip().replace("{tmp}/", "")


def toml(text: str) -> dict[str, bytes]:
    return {"c.toml": text.encode("utf-8")}


CASES = [
    # ports wrap no more, and HOST:PORT shares the port rule
    Case(("quijote", "--to", "127.0.0.1:70000"), "--to 127.0.0.1:70000"),
    Case(("docencio", "--tareo", "127.0.0.1:70000"), "--tareo"),
    Case(("estudiante", "--docencio", "127.0.0.1:0"), "--docencio"),
    Case(("tareo", "--profesor", "http://127.0.0.1:70000"), "--profesor"),
    Case(("eco", "--port", "70000"), "--port 70000"),
    Case(("eco", "--port", "-1"), "--port -1"),
    Case(("eco",), "AYUDANTIA_PORT=70000 (environment)", env={"AYUDANTIA_PORT": "70000"}),
    # settings that used to break a server after it said "listening"
    Case(("eco", "--max-message", "0"), "--max-message 0"),
    Case(("quijote", "--max-message", "0"), "--max-message 0"),
    Case(("profesor", "--threads", "0"), "--threads 0"),
    Case(("eco", "--max-clients", "0"), "--max-clients 0"),
    Case(("docencio", "--max-clients", "0"), "--max-clients 0"),
    Case(("tareo", "--workers", "0"), "--workers 0"),
    # raw cannot carry the class's maps
    Case(("estudiante", "--codec", "raw"), "--codec raw: raw carries bytes"),
    Case(("run", "--codec", "raw"), "--codec raw: raw carries bytes"),
    Case(
        ("quijote", "--codec", "raw", "--file", "{tmp}/book.txt"),
        "codec raw carries bytes",
        files={"book.txt": b"En un lugar de la Mancha"},
    ),
    Case(("quijote",), "AYUDANTIA_QUIJOTE=''", env={"AYUDANTIA_QUIJOTE": ""}),
    # counts
    Case(("run", "--students", "0"), "--students 0"),
    Case(("run", "--students", "-3"), "--students -3"),
    Case(("run", "--questions", "-1"), "--questions -1"),
    Case(("estudiante", "--questions", "-2"), "--questions -2"),
    # the config file
    Case(("eco", "--config", "{tmp}"), "--config"),
    Case(
        ("eco", "--config", "{tmp}/c.toml"),
        "chunk_size = 4096.5",
        files=toml("chunk_size = 4096.5\n"),
    ),
    Case(("quijote", "--config", "{tmp}/c.toml"), "to = 5", files=toml("[quijote]\nto = 5\n")),
    Case(
        ("eco", "--config", "{tmp}/c.toml"), "chunk_size = true", files=toml("chunk_size = true\n")
    ),
    Case(
        ("eco", "--config", "{tmp}/c.toml"),
        "chunk_sise",
        files=toml("chunk_sise = 4096\n"),
    ),
    Case(("eco", "--config", "{tmp}/c.toml"), "not UTF-8", files={"c.toml": b'codec = "\xe9"\n'}),
    Case(
        ("eco",),
        "[docencia]",
        env={"AYUDANTIA_CONFIG": "{tmp}/c.toml"},
        files=toml("[docencia]\nport = 1\n"),
    ),
    # the book
    Case(("quijote", "--file", "{tmp}/ls"), "not UTF-8", files={"ls": bytes(range(256)) * 8}),
    Case(
        ("quijote", "--file", "{tmp}/latin1.txt"),
        "not UTF-8",
        files={"latin1.txt": "En un lugar de la Mancha, año".encode("latin-1")},
    ),
    Case(("quijote", "--file", "{tmp}"), "--file"),
    # paths are checked before anything runs
    Case(("profesor", "--db", "{tmp}"), "--db"),
    Case(("profesor", "--db", f"{NOWHERE}/x.db"), "--db"),
    Case(("run", "--report", f"{NOWHERE}/r.json"), "--report"),
    Case(("run", "--keep", "{tmp}/afile"), "--keep", files={"afile": b"x"}),
    Case(("estudiante", "--report", "{tmp}"), "--report"),
    # values that used to be accepted silently
    Case(("eco", "--log-level", "FOO"), "--log-level FOO"),
    Case(("estudiante", "--interval", "inf"), "--interval inf"),
    Case(("run", "--interval", "nan"), "--interval nan"),
    Case(("estudiante", "--timeout", "-1"), "--timeout -1"),
    # a signed value is the value, not an unknown flag (argparse said "expected one argument")
    Case(("proxy", "--delay", "-5ms"), "--delay -5ms: a duration cannot be negative"),
    Case(("proxy", "--jitter", "-1s", "--delay", "5ms"), "--jitter -1s: a duration cannot be"),
    Case(("eco",), "AYUDANTIA_HOST='' (environment)", env={"AYUDANTIA_HOST": ""}),
    Case(("eco", "--host", "not a host"), "--host"),
    # flag errors read like environment errors
    Case(("eco", "--chunk-size", "1.5M"), "--chunk-size 1.5M: not a size"),
    Case(("eco", "--codec", "yaml"), "--codec yaml: unknown codec 'yaml'; expected one of"),
    # flags a command cannot honour
    Case(("profesor", "--key", "abc", "--port", "99999"), "--port 99999"),
    Case(("profesor", "--private"), "--private needs a key"),
    Case(("profesor", "--chunk-size", "4096"), "profesor does not take --chunk-size"),
    Case(("estudiante", "--host", "0.0.0.0"), "estudiante does not take --host"),
]


def _run(case: Case, tmp: Path) -> subprocess.CompletedProcess[str]:
    here = tmp / str(CASES.index(case))
    here.mkdir()
    for name, data in case.files.items():
        (here / name).write_bytes(data)
    argv = [a.replace("{tmp}", str(here)) for a in case.argv]
    env = {**os.environ, **{k: v.replace("{tmp}", str(here)) for k, v in case.env.items()}}
    for name in ("AYUDANTIA_CONFIG", "AYUDANTIA_PORT", "AYUDANTIA_HOST"):
        if name not in case.env:
            env.pop(name, None)
    return subprocess.run(ayudantia_cmd(*argv), capture_output=True, text=True, env=env, timeout=30)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, subprocess.CompletedProcess[str]]:
    tmp = tmp_path_factory.mktemp("bad-input")
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = pool.map(lambda c: _run(c, tmp), CASES)
        return {case.id: result for case, result in zip(CASES, done, strict=True)}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_clear_line(case: Case, outcomes) -> None:
    result = outcomes[case.id]
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stdout
    assert result.returncode == case.status, result.stderr
    assert len(lines) == 1, result.stderr
    assert case.names in lines[0]
    assert lines[0].startswith(f"ayudantia {case.argv[0]}: ")


def test_the_key_is_never_echoed_and_nothing_is_created(outcomes) -> None:
    refused = next(r for c, r in outcomes.items() if c.startswith("profesor --key"))
    assert "abc" not in refused.stderr
    assert len(outcomes) == len(CASES)  # every id is distinct
    assert not Path(NOWHERE).exists()  # --db and --report never create their directory


@pytest.mark.timeout(30)
def test_a_taken_port_is_named(tmp_path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            ayudantia_cmd("eco", "--port", str(port)), capture_output=True, text=True, timeout=20
        )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"ayudantia eco: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "argv",
    [
        ("proxy", "--to", "127.0.0.1:9", "--pcap", "/sys/ayudantia-cannot.pcap"),
        ("run", "--students", "1", "--questions", "1", "--pcap", "/sys/ayudantia-cannot"),
    ],
    ids=["proxy --pcap", "run --pcap"],
)
def test_an_unwritable_capture_is_named_not_taken_for_the_socket(argv) -> None:
    """/sys takes no new files even from root: the one line names the path, not a listen."""
    done = subprocess.run(ayudantia_cmd(*argv), capture_output=True, text=True, timeout=50)
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert done.returncode in (1, 2), done.stderr  # 2: the path rule saw it first (not root)
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"ayudantia {argv[0]}: ") and "/sys/ayudantia-cannot" in lines[0]
    assert "listen" not in lines[0] and "Error:" not in lines[0]
