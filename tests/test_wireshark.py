"""The Wireshark dissector, read by Debian's tshark: every field on captures made here.

The captures are synthesized by ayudantia.pcap from frames the protocol package encodes,
so each expected value is known exactly; tests/test_wireshark_class.py reads captures of
a real class. Without tshark these are skipped with the reason, and in CI they fail.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from ayudantia.commands.wireshark import dissector_path
from ayudantia.pcap import PcapWriter
from protocol.encodings import compression_for
from protocol.framing import encode_message, encode_refusal
from protocol.handshake import record
from protocol.signing import Signer
from tests.tshark import packets, tshark, tshark_path

QUESTION = json.dumps({"pregunta": "Tarea", "id": 7, "año": 1605}, ensure_ascii=False).encode()


@pytest.fixture(autouse=True)
def _needs_tshark() -> None:
    tshark_path()


def command(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``args`` run with HOME in ``home`` (where --install writes), as a user would."""
    env = None if home is None else {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env, check=False)


def test_the_dissector_ships_in_the_package_and_the_cli_shows_it(tmp_path: Path) -> None:
    path = dissector_path()
    assert path.is_file() and path.read_text(encoding="utf-8").startswith("-- ayudantia.lua")
    shown = command(sys.executable, "-m", "ayudantia", "wireshark", "--print-path")
    assert shown.returncode == 0 and Path(shown.stdout.strip()) == path
    done = command(sys.executable, "-m", "ayudantia", "wireshark", "--install", home=tmp_path)
    target = tmp_path / ".local" / "lib" / "wireshark" / "plugins" / "ayudantia.lua"
    assert done.returncode == 0 and str(target) in done.stdout
    assert target.read_bytes() == path.read_bytes()
    bare = command(sys.executable, "-m", "ayudantia", "wireshark")
    assert bare.returncode == 2 and len(bare.stderr.strip().splitlines()) == 1


def test_the_installed_plugin_is_what_tshark_loads(tmp_path: Path) -> None:
    """Installed for the user, tshark finds it without -X (one copy: no double registration)."""
    pcap = tmp_path / "one.pcap"
    with PcapWriter(pcap) as w:
        flow = w.flow(("127.0.0.1", 40000), ("127.0.0.1", 12345))
        flow.data(True, encode_message(1, QUESTION))
        flow.close()
    command(sys.executable, "-m", "ayudantia", "wireshark", "--install", home=tmp_path)
    run = command(
        tshark_path(), "-r", str(pcap), "-Y", "ay", "-T", "fields", "-e", "ay.codec", home=tmp_path
    )
    assert run.returncode == 0 and run.stdout.split() == ["1"], run.stderr


def test_header_fields_messages_refusal_and_reassembly(tmp_path: Path) -> None:
    pcap = tmp_path / "frames.pcap"
    book = msgpack.packb({"Texto": "En un lugar de la Mancha " * 8000})
    with PcapWriter(pcap) as w:
        flow = w.flow(("127.0.0.1", 40000), ("127.0.0.1", 4446))
        # One segment: a one-frame json message, then the same cut in 7-byte frames.
        flow.data(True, encode_message(1, QUESTION) + encode_message(1, QUESTION, 7))
        # A msgpack message of 200 KB whose header is split after 5 bytes.
        big = encode_message(3, book)
        flow.data(False, big[:5])
        flow.data(False, big[5:70_000])
        flow.data(False, big[70_000:])
        flow.data(True, encode_refusal(1, "this server accepts json, msgpack, raw; not pickle"))
        flow.close()
    got = packets(pcap, tmp_path / "home")
    assert len(got) == 3
    first, second, refusal = got
    assert first["tcp.dstport"] == ["4446"]
    n = -(-len(QUESTION) // 7)
    assert first["ay.version"] == ["1"] * (1 + n)
    assert first["ay.codec"] == ["1"] * (1 + n)
    assert first["ay.encoding"] == ["0"] * (1 + n)
    assert first["ay.flags.more"] == ["0"] + ["1"] * (n - 1) + ["0"]
    assert first["ay.length"] == [str(len(QUESTION))] + ["7"] * (n - 1) + [str(len(QUESTION) % 7)]
    assert first["ay.message.frames"] == ["1", str(n)]
    assert first["ay.message.length"] == [str(len(QUESTION))] * 2
    assert first["ay.compressed"] == [] and first["ay.tag"] == []
    assert second["tcp.srcport"] == ["4446"]
    assert second["ay.codec"] == ["3"] and second["ay.length"] == [str(len(book))]
    assert second["ay.message.frames"] == ["1"] and second["ay.message.length"] == [str(len(book))]
    assert refusal["ay.flags.refusal"] == ["1"] and refusal["ay.refusal.reason"] == ["1"]
    assert refusal["ay.refusal.text"] == ["this server accepts json, msgpack, raw; not pickle"]
    assert refusal["ay.message.frames"] == []  # a refusal is not a message
    # The json payload went to Wireshark's own JSON dissector, chunked message included.
    keys = tshark(
        pcap, "-2", "-Y", "json", "-T", "fields", "-e", "json.key", home=tmp_path / "home"
    )
    assert keys.stdout.split() == ["pregunta,id,año,pregunta,id,año"]


def test_compressed_signed_and_handshake(tmp_path: Path) -> None:
    pcap = tmp_path / "closed.pcap"
    key = b"k" * 32
    with PcapWriter(pcap) as w:
        # A class on --port 0: no registered port, the heuristic finds it.
        flow = w.flow(("127.0.0.1", 40001), ("127.0.0.1", 33333))
        flow.data(True, record(b"AYHELLO1", bytes(32)))
        flow.data(False, record(b"AYHELLO1", bytes(range(32))) + record(b"AYPROOF1", bytes(32)))
        flow.data(True, encode_message(1, QUESTION, signer=Signer(key, side="client")))
        flow.data(True, encode_message(1, QUESTION, compression=compression_for("zstd")))
        flow.data(False, encode_message(0, b"z" * 100, 40, compression=compression_for("lz4")))
        flow.close()
        # The heuristic's first segment cuts a 16 KiB frame: TCP must still reassemble it.
        other = w.flow(("127.0.0.1", 40002), ("127.0.0.1", 33334))
        chunked = encode_message(0, bytes(100_000), 16_384)
        for at in range(0, len(chunked), 32_741):
            other.data(True, chunked[at : at + 32_741])
        other.close()
    hello, server, signed, zstd, lz4, *bulk = packets(pcap, tmp_path / "home")
    assert [n for p in bulk for n in p["ay.length"]] == ["16384"] * 6 + ["1696"]
    assert [n for p in bulk for n in p["ay.message.frames"]] == ["7"]
    assert hello["ay.handshake.type"] == ["HELLO"] and hello["ay.message.frames"] == []
    assert server["ay.handshake.type"] == ["HELLO", "PROOF"]
    assert signed["ay.flags.signed"] == ["1"]
    assert signed["ay.length"] == [str(len(QUESTION) + 32)]
    assert len(signed["ay.tag"]) == 1 and len(signed["ay.tag"][0]) == 64  # 32 bytes in hex
    assert signed["ay.message.length"] == [str(len(QUESTION))]  # the tag is not data
    assert zstd["ay.encoding"] == ["1"] and zstd["ay.compressed"] == ["1"]
    assert lz4["ay.encoding"] == ["2"] * 3 and lz4["ay.compressed"] == ["1"] * 3
    assert lz4["ay.flags.more"] == ["1", "1", "0"] and lz4["ay.message.frames"] == ["3"]


def test_bytes_that_are_not_frames_show_no_frames(tmp_path: Path) -> None:
    """A TLS-like stream on a default port and on a free one: not a single AY field."""
    pcap = tmp_path / "tls.pcap"
    rng = random.Random(3)
    with PcapWriter(pcap) as w:
        for port in (4445, 40000):
            flow = w.flow(("127.0.0.1", 50000 + port % 1000), ("127.0.0.1", port))
            flow.data(True, b"\x16\x03\x01\x02\x00" + rng.randbytes(512))
            flow.data(False, b"\x16\x03\x03\x00\x7a" + rng.randbytes(4000))
            flow.close()
    assert packets(pcap, tmp_path / "home") == []


def _fuzzed(rng: random.Random) -> bytes:
    """A stream that starts like frames and goes wrong: truncated, bad magic, lies."""
    good = [
        encode_message(1, QUESTION),
        encode_message(1, QUESTION, 5),
        encode_refusal(rng.randrange(256) or 1, "x" * rng.randrange(40)),
        record(b"AYHELLO1", rng.randbytes(32)),
        encode_message(0, rng.randbytes(300), 64, compression=compression_for("zstd")),
    ]
    out = b"".join(rng.choice(good) for _ in range(rng.randrange(1, 5)))
    damage = rng.randrange(6)
    if damage == 0:  # truncated anywhere
        out = out[: rng.randrange(len(out))]
    elif damage == 1:  # bad magic in the middle
        at = rng.randrange(len(out))
        out = out[:at] + b"XY" + out[at:]
    elif damage == 2:  # random bytes flipped, header fields included
        data = bytearray(out)
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        out = bytes(data)
    elif damage == 3:  # a header that declares 4 GiB, or a refusal that declares 0 bytes
        out = rng.choice([b"AY\x01\x01\x00\x00\xff\xff\xff\xff", b"AY\x01\x00\x04\x00\0\0\0\0"])
    elif damage == 4:  # a short signed frame and reserved flags
        out = b"AY\x01\x01\x02\x00\x00\x00\x00\x03abc" + b"AY\x01\x01\xf8\x00\x00\x00\x00\x00"
    return out


def test_a_fuzzed_capture_never_makes_tshark_error_out(tmp_path: Path) -> None:
    pcap = tmp_path / "fuzz.pcap"
    rng = random.Random(22)
    with PcapWriter(pcap) as w:
        for i in range(300):
            port = rng.choice([4445, 4446, 12345, 30000 + i])
            flow = w.flow(("127.0.0.1", 40000 + i), ("127.0.0.1", port))
            for _ in range(rng.randrange(1, 4)):
                stream = _fuzzed(rng)
                cut = rng.randrange(len(stream) + 1)
                flow.data(rng.random() < 0.7, stream[:cut])
                flow.data(rng.random() < 0.7, stream[cut:])
            if rng.random() < 0.3:
                flow.reset()
            else:
                flow.close()
    for args, shown in ((("-2", "-V"), "Ayudantia frame"), (("-T", "json"), '"ay.codec"')):
        run = tshark(pcap, *args, home=tmp_path / "home")
        assert run.returncode == 0, run.stderr[-2000:]
        assert "Lua Error" not in run.stdout and "Lua Error" not in run.stderr, (
            [line for line in run.stdout.splitlines() if "Lua Error" in line][:5],
            run.stderr[-2000:],
        )
        assert shown in run.stdout  # the dissector did run on these
