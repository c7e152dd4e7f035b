"""Compression against a real ``ayudantia eco`` process: echoes, bombs, and the quijote CLI."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import psutil
import pytest
import zstandard

from protocol.encodings import compression_for
from protocol.errors import Refused
from protocol.transport import Connection
from tests.procs import ayudantia_cmd, running
from tests.test_encodings import BOMBS, BOOKISH, frame
from tests.test_hostile_eco import attack, still_serves

MAX = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def eco():
    args = ("eco", "--port", "0", "--max-message", str(MAX), "--log-level", "WARNING")
    with running(*args, "--read-timeout", "2", "--send-timeout", "3") as proc:
        yield proc


@pytest.mark.timeout(60)
@pytest.mark.parametrize("encoding", ["zstd", "lz4"])
@pytest.mark.parametrize("chunk", [0, 3000])
def test_eco_answers_in_the_codec_chunking_and_encoding_it_received(eco, encoding, chunk) -> None:
    obj = {"texto": BOOKISH.decode(), "año": 1605}
    with Connection.connect(
        eco.host, eco.port, codec="msgpack", compression=compression_for(encoding), read_timeout=5
    ) as conn:
        sent = conn.send(obj, chunk_size=chunk)
        back = conn.recv_message()
        assert back.obj == obj and back.codec.name == "msgpack"
        assert back.encoding_id == compression_for(encoding).id
        assert (back.frames, back.chunk_size, back.wire_bytes) == (
            sent.frames,
            chunk if sent.frames > 1 else 0,
            sent.wire_bytes,
        )
        streamed = conn.send_stream([BOOKISH], chunk_size=4096)
        pieces = list(conn.recv_chunks())
        assert b"".join(bytes(p.data) for p in pieces) == BOOKISH
        assert {p.encoding_id for p in pieces} == {compression_for(encoding).id}
        assert len(pieces) == streamed.frames


@pytest.mark.timeout(90)
def test_bombs_are_refused_rss_flat_and_the_eco_keeps_serving(eco) -> None:
    still_serves(eco)
    before = psutil.Process(eco.proc.pid).memory_info().rss
    for make, _error in BOMBS.values():
        attack(eco, make())
        still_serves(eco)
    grown = psutil.Process(eco.proc.pid).memory_info().rss - before
    assert grown < 64 * 1024 * 1024, f"eco grew by {grown:,} bytes"


@pytest.mark.timeout(30)
def test_a_bomb_gets_a_too_large_refusal(eco) -> None:
    wire = BOMBS["zstd-1GiB-zeros"][0]()
    with Connection.connect(eco.host, eco.port, read_timeout=5) as conn:
        conn.sock.sendall(wire)
        with pytest.raises(Refused) as info:
            conn.recv()
    assert info.value.reason == "too_large" and "1073741824" in info.value.text


@pytest.mark.timeout(30)
def test_a_ratio_bomb_under_max_message_gets_a_too_large_refusal(eco) -> None:
    cobj = zstandard.ZstdCompressor().compressobj(size=MAX)  # 8 MiB: max_message lets it in
    bomb = b"".join([*(cobj.compress(bytes(1 << 20)) for _ in range(MAX >> 20)), cobj.flush()])
    assert len(bomb) < 1024
    with Connection.connect(eco.host, eco.port, read_timeout=5) as conn:
        conn.sock.sendall(frame(bomb, 1))
        with pytest.raises(Refused) as info:
            conn.recv()
    assert info.value.reason == "too_large" and "send smaller frames" in info.value.text
    still_serves(eco)


def wire_bytes(book: Path, *args: str) -> int:
    out = subprocess.run(
        ayudantia_cmd("quijote", "--codec", "msgpack", "--file", str(book), *args),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "verified     yes" in out, out
    return int(re.search(r"wire bytes\s+([\d,]+)", out)[1].replace(",", ""))


@pytest.mark.timeout(120)
def test_quijote_with_zstd_reports_the_smaller_wire_size(tmp_path: Path) -> None:
    book = tmp_path / "libro.txt"
    book.write_bytes(BOOKISH * 10)  # the real book when AYUDANTIA_QUIJOTE is set is 2 MB
    plain = wire_bytes(book)
    packed = wire_bytes(book, "--compress", "zstd")
    assert packed < 0.5 * plain


def up_and_down(book: Path, *args: str) -> tuple[int, int]:
    """``quijote``'s 'wire bytes X up, Y down' line as two numbers."""
    out = subprocess.run(
        ayudantia_cmd("quijote", "--codec", "msgpack", "--file", str(book), *args),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "verified     yes" in out, out
    up, down = re.search(r"wire bytes\s+([\d,]+) up, ([\d,]+) down", out).groups()
    return int(up.replace(",", "")), int(down.replace(",", ""))


@pytest.mark.timeout(120)
def test_quijote_prints_the_echos_own_bytes_back_when_its_level_differs(tmp_path: Path) -> None:
    """The eco answers at its default level whatever level came in: the way down is then
    another size, which quijote must print instead of repeating the way up (issue 24)."""
    book = tmp_path / "libro.txt"
    book.write_bytes(BOOKISH * 10)
    default_up, default_down = up_and_down(book, "--compress", "zstd")
    assert default_up == default_down  # same level both ways: same bytes
    fast_up, fast_down = up_and_down(book, "--compress", "zstd", "--compress-level", "-7")
    assert fast_up != fast_down
    assert fast_down == default_up  # the eco's default level, byte for byte
