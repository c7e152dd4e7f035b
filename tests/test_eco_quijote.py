"""`ayudantia eco` and `ayudantia quijote` end to end: real processes, real loopback sockets."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol.errors import Refused
from protocol.framing import FrameDecoder, encode_message, pack_header
from protocol.transport import Connection
from roles.base import WireSettings
from roles.eco import Eco
from tests.procs import ayudantia_cmd, running

MESSAGE = {
    "titulo": "Don Quijote de la mancha",
    "año": 1605,
    "Texto": "En un lugar de la Mancha, de cuyo nombre no quiero acordarme...",
}


@pytest.fixture(scope="module")
def book() -> Path:
    path = os.environ.get("AYUDANTIA_QUIJOTE")
    if not path or not Path(path).is_file():
        pytest.skip("AYUDANTIA_QUIJOTE is not set to the book (.ci/run sets it)")
    return Path(path)


@pytest.fixture
def eco() -> Iterator[Eco]:
    server = Eco("127.0.0.1", 0, wire=WireSettings(read_timeout=5.0, idle_timeout=30.0))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def quijote(*args: str, book: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ayudantia_cmd("quijote", "--file", str(book), *args),
        capture_output=True,
        text=True,
        timeout=120,
    )


def field(out: str, name: str) -> str:
    m = re.search(rf"^{name}\s+(.+)$", out, re.M)
    assert m, f"no {name!r} line in:\n{out}"
    return m.group(1)


@pytest.mark.parametrize("codec", ["json", "msgpack", "pickle"])
def test_quijote_round_trip_per_codec(codec: str, book: Path) -> None:
    done = quijote("--codec", codec, "--chunk-size", "4K", book=book)
    assert done.returncode == 0, done.stderr
    assert field(done.stdout, "codec") == codec
    assert field(done.stdout, "verified").startswith("yes")
    wire = int(field(done.stdout, "wire bytes").split()[0].replace(",", ""))
    frames = int(field(done.stdout, "frames").split()[0].replace(",", ""))
    assert wire > book.stat().st_size * 0.95
    down = field(done.stdout, "wire bytes").split("up,")[1].split()[0]
    assert int(down.replace(",", "")) == wire  # same settings both ways: same bytes back
    assert frames == -(-(wire - 10 * frames) // 4096)
    assert float(field(done.stdout, "MB/s").split()[0].replace(",", "")) > 0
    assert ("run code on this machine" in done.stderr) == (codec == "pickle")


@pytest.mark.parametrize("chunk", ["1K", "64K"])
def test_quijote_stream_checks_sha256(chunk: str, book: Path) -> None:
    done = quijote("--stream", "--chunk-size", chunk, book=book)
    assert done.returncode == 0, done.stderr
    assert "matches" in field(done.stdout, "verified")
    size = 1024 if chunk == "1K" else 65536
    assert int(field(done.stdout, "frames").replace(",", "").split()[0]) == -(
        -book.stat().st_size // size
    )


def test_quijote_to_an_eco_process(book: Path) -> None:
    with running("eco", "--port", "0", "--codec", "msgpack") as eco_proc:
        done = quijote("--to", f"{eco_proc.host}:{eco_proc.port}", "--codec", "msgpack", book=book)
        assert done.returncode == 0, done.stderr + "".join(eco_proc.output)
        assert field(done.stdout, "verified").startswith("yes")
        # the eco refuses pickle: it did not opt in, and it says so by closing
        refused = quijote(
            "--to", f"{eco_proc.host}:{eco_proc.port}", "--codec", "pickle", book=book
        )
        assert refused.returncode != 0
        assert eco_proc.proc.poll() is None, "the eco keeps serving"


def test_unknown_codec_is_a_usage_error_listing_choices() -> None:
    done = subprocess.run(
        ayudantia_cmd("eco", "--codec", "yaml"), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    for name in ("raw", "json", "pickle", "msgpack"):
        assert name in done.stderr


def test_eco_answers_same_codec_and_chunking(eco: Eco) -> None:
    for codec, chunk in [("json", 0), ("msgpack", 7), ("json", 4096)]:
        with Connection.connect(*eco.address, codec=codec, chunk_size=chunk) as conn:
            conn.send(MESSAGE)
            back = conn.recv_message()
            assert back.obj == MESSAGE
            assert back.codec.name == codec
            assert back.chunk_size == (
                chunk if chunk and chunk < len(conn.codec.encode(MESSAGE)) else 0
            )


def test_eco_echoes_a_raw_stream_frame_by_frame(eco: Eco) -> None:
    data = os.urandom(100_000)
    with Connection.connect(*eco.address, chunk_size=1000) as conn:
        conn.send_stream([data])
        chunks = list(conn.recv_chunks())
    assert b"".join(c.data for c in chunks) == data
    assert [len(c.data) for c in chunks] == [1000] * 100


def refusal_then_eof(sock: socket.socket) -> Refused:
    """What a refused peer reads: one refusal frame (decoded as Refused), then the close."""
    sock.settimeout(5)
    decoder = FrameDecoder()
    while True:
        data = sock.recv(4096)
        decoder.receive_data(data)
        if not data:
            break
    with pytest.raises(Refused) as refused:
        decoder.next_event()
    return refused.value


def test_second_client_served_while_first_sends_garbage(eco: Eco) -> None:
    bad = socket.create_connection(eco.address, timeout=5)
    stalled = socket.create_connection(eco.address, timeout=5)
    try:
        bad.sendall(b"GET / HTTP/1.1\r\n\r\n" + os.urandom(4096))
        stalled.sendall(pack_header(1, 100)[:5])  # half a header, then nothing
        with Connection.connect(*eco.address, codec="msgpack") as good:
            for i in range(20):
                good.send({"i": i, **MESSAGE})
                assert good.recv()["i"] == i
        assert refusal_then_eof(bad).reason == "malformed", (
            "the garbage sender is told, then dropped"
        )
    finally:
        bad.close()
        stalled.close()


def test_giant_length_is_refused_and_server_keeps_serving(eco: Eco) -> None:
    with socket.create_connection(eco.address, timeout=5) as liar:
        liar.sendall(pack_header(1, 0xFFFFFFFF))
        assert refusal_then_eof(liar).reason == "too_large"
    with socket.create_connection(eco.address, timeout=5) as raw:
        raw.sendall(encode_message(1, b'{"ok":true}'))
        assert raw.recv(100) == encode_message(1, b'{"ok":true}')


def test_sigint_exits_cleanly_and_frees_the_port() -> None:
    with running("eco", "--port", "0") as eco_proc:
        with Connection.connect(eco_proc.host, eco_proc.port) as conn:
            conn.send(MESSAGE)
            assert conn.recv() == MESSAGE
            assert eco_proc.stop(signal.SIGINT, timeout=10) == 0
        port = eco_proc.port
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
