"""One student asking serially: connect, ask a "Contenido", read the answer, close.

The Docencio's per-connection cost, paired against its floor: bench/min_server.py, a
minimal uvloop server that parses the same frames and answers the same JSON. Both sides
are real processes on loopback; the client is a blocking socket with no project code
(a hand-built header, as a user of docs/protocol.md would write it). The Docencio is a
default one (log level INFO, outbox on disk with the default sync, reports to a real
Profesor, a real Tareo upstream). Rounds alternate in blocks (bench._paired), and the
figure is the time ratio min server / Docencio per cycle, i.e. the Docencio's rate as a
fraction of the minimal server's: the target is >= 1/3.

A second figure pairs ``--outbox-sync full`` with the default ``normal`` on the same
path, since a lone serial student is where each answer waits for its own commit.

The ordinary ``uv run pytest`` runs one short session of each, untimed.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from bench import _paired
from bench.conftest import SESSIONS
from tests.procs import LISTENING, running

HEADER = struct.Struct(">2sBBBBI")
SERIAL_ROUNDS = 400  # cycles per side and session
SERIAL_WARMUP = 20
SERIAL_BLOCK = 20


def _exactly(sock: socket.socket, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        part = sock.recv(n - got)
        if not part:
            raise ConnectionError("the server closed the connection mid-frame")
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def cycle(port: int, k: int) -> None:
    """Connect, ask one "Contenido", read its answer (checked), close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        q = json.dumps({"id": f"q{k}", "tipo": "Contenido", "de": f"serial{k}"}).encode()
        sock.sendall(HEADER.pack(b"AY", 1, 1, 0, 0, len(q)) + q)
        magic, version, codec_id, flags, _, length = HEADER.unpack(_exactly(sock, 10))
        if magic != b"AY" or version != 1 or codec_id != 1 or flags:
            raise ConnectionError(f"unexpected frame {magic!r} codec {codec_id} flags {flags}")
        answer = json.loads(_exactly(sock, length))
        if answer.get("id") != f"q{k}" or not isinstance(answer.get("respuesta"), str):
            raise ConnectionError(f"wrong answer: {answer!r}")


@contextlib.contextmanager
def min_server() -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.min_server", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        match = LISTENING.search(proc.stdout.readline())
        assert match, "bench.min_server did not start"
        yield int(match.group(2))
    finally:
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def default_class(tmp: Path, *docencio_flags: str) -> Iterator[int]:
    """A Profesor, a Tareo and a default Docencio; yields the Docencio's port."""
    tmp.mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        db = tmp / "profesor.sqlite3"
        profesor = stack.enter_context(running("profesor", "--port", "0", "--db", str(db)))
        url = f"http://{profesor.host}:{profesor.port}"
        tareo = stack.enter_context(running("tareo", "--port", "0", "--profesor", url))
        docencio = stack.enter_context(
            running(
                "docencio",
                *("--port", "0", "--tareo", f"{tareo.host}:{tareo.port}", "--profesor", url),
                *("--outbox", str(tmp / "outbox.sqlite3")),
                *docencio_flags,
            )
        )
        yield docencio.port


def _pair(benchmark, benchmarking, numerator_port, denominator_port, **info) -> list[dict]:
    rounds = SERIAL_ROUNDS if benchmarking else 5
    counter = iter(range(10**9))

    def side(port: int) -> _paired.Step:
        return _paired.timed(lambda: cycle(port, next(counter)))

    def session() -> dict[str, float]:
        a, b = _paired.interleave(
            side(numerator_port),
            side(denominator_port),
            rounds,
            SERIAL_WARMUP if benchmarking else 1,
            SERIAL_BLOCK if benchmarking else 1,
        )
        return _paired.summarize(a, b)

    benchmark.group = "serial"
    return _paired.record(benchmark, SESSIONS if benchmarking else 1, session, **info)


def test_serial_connect_ask_close_vs_min_server(benchmark, benchmarking, tmp_path):
    with default_class(tmp_path) as docencio, min_server() as floor:
        done = _pair(
            benchmark,
            benchmarking,
            floor,
            docencio,
            figure="servers.serial-connect-ask-close.vs-min-server",
            numerator="minimal uvloop server (bench/min_server.py)",
            denominator="default Docencio",
        )
    assert all(s["ratio"] > 0 for s in done)


def test_serial_outbox_full_vs_normal(benchmark, benchmarking, tmp_path):
    with (
        default_class(tmp_path / "full", "--outbox-sync", "full") as full,
        default_class(tmp_path / "normal") as normal,
    ):
        done = _pair(
            benchmark,
            benchmarking,
            full,
            normal,
            figure="servers.serial-connect-ask-close.full-vs-normal",
            numerator="Docencio --outbox-sync full",
            denominator="Docencio --outbox-sync normal (default)",
        )
    assert all(s["ratio"] > 0 for s in done)
