"""Captures of a real class through ``--pcap``, read by tshark with the dissector.

``ayudantia run --pcap DIR`` puts a capturing proxy on each TCP hop; the class's own report
says how many questions went where, and the captures must agree frame by frame: every
question one message up, every answer one message down, each in the codec and encoding
the class was told to use. ``ayudantia proxy --pcap`` in front of an eco captures its
refusal. A TLS class shows no AY frame at all. Skipped without tshark, failed in CI.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from protocol.framing import HEADER, MAGIC, VERSION
from tests.procs import ayudantia_cmd, running, stop_run
from tests.tshark import packets, tshark, tshark_path

STUDENTS, QUESTIONS = 2, 5
HOPS = ("students-docencio.pcap", "docencio-tareo.pcap")
CODEC_IDS = {"json": "1", "msgpack": "3", "cbor": "64"}
ENCODING_IDS = {"none": "0", "zstd": "1", "lz4": "2"}
BAD_TCP = (
    "tcp.analysis.lost_segment or tcp.analysis.retransmission or tcp.analysis.out_of_order"
    " or tcp.analysis.ack_lost_segment or tcp.analysis.duplicate_ack"
    " or tcp.checksum.status != 1 or ip.checksum.status != 1"  # 1: good (checked, below)
)


@pytest.fixture(autouse=True)
def _needs_tshark() -> None:
    tshark_path()


def run_class(tmp_path: Path, *flags: str) -> tuple[dict[str, Any], Path]:
    """A whole class with a capture per hop; its JSON report and the capture directory."""
    caps, report = tmp_path / "caps", tmp_path / "report.json"
    run = subprocess.Popen(
        ayudantia_cmd(
            "run",
            *("--students", str(STUDENTS), "--questions", str(QUESTIONS), "--interval", "0.01"),
            *("--pcap", str(caps), "--report", str(report), *flags),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = run.communicate(timeout=90)
    finally:
        stop_run(run)
    assert run.returncode == 0, out
    summary = json.loads(report.read_text(encoding="utf-8"))
    assert sorted(Path(p).name for p in summary["captures"].values()) == sorted(HOPS)
    return summary, caps


def messages(got: list[dict[str, list[str]]], server_port: str) -> tuple[int, int]:
    """Messages that ended, client to server and server to client (ay.message.frames)."""
    up = sum(len(p["ay.message.frames"]) for p in got if p["tcp.dstport"] == [server_port])
    down = sum(len(p["ay.message.frames"]) for p in got if p["tcp.srcport"] == [server_port])
    return up, down


def server_port(pcap: Path, home: Path) -> str:
    """The hop's server port: where every SYN of the capture goes."""
    syns = packets(pcap, home, "tcp.flags == 0x002")
    ports = {p["tcp.dstport"][0] for p in syns}
    assert syns and len(ports) == 1, ports
    return ports.pop()


def assert_tcp_is_sound(pcap: Path, home: Path) -> None:
    """Sequence and acknowledgment numbers as a real stack's, checksums right: tshark
    flags nothing."""
    checks = ("-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE")
    run = tshark(pcap, *checks, "-Y", BAD_TCP, home=home)
    assert run.returncode == 0 and run.stdout.strip() == "", run.stdout


@pytest.mark.parametrize(
    ("codec", "compress"), [("json", "none"), ("msgpack", "zstd"), ("cbor", "lz4")]
)
def test_every_question_and_answer_is_one_message_in_its_codec(
    tmp_path: Path, codec: str, compress: str
) -> None:
    summary, caps = run_class(tmp_path, "--codec", codec, "--compress", compress)
    asked = STUDENTS * QUESTIONS
    assert summary["answered"] == asked
    forwarded = asked - summary["by_kind"].get("Contenido", 0)  # the Docencio answers those
    home = tmp_path / "home"
    for hop, expected in (("students-docencio.pcap", asked), ("docencio-tareo.pcap", forwarded)):
        got = packets(caps / hop, home)
        assert messages(got, server_port(caps / hop, home)) == (expected, expected), hop
        codecs = [c for p in got for c in p["ay.codec"]]
        encodings = [e for p in got for e in p["ay.encoding"]]
        assert codecs == [CODEC_IDS[codec]] * len(codecs) and len(codecs) >= 2 * expected
        assert encodings == [ENCODING_IDS[compress]] * len(codecs), hop
        assert {v for p in got for v in p["ay.version"]} == {"1"}
        compressed = [c for p in got for c in p["ay.compressed"]]
        assert len(compressed) == (0 if compress == "none" else len(codecs))
        assert_tcp_is_sound(caps / hop, home)
    if codec == "json":  # and each json question reached Wireshark's JSON dissector
        run = tshark(caps / HOPS[0], "-2", "-Y", "json", home=home)
        assert run.returncode == 0 and len(run.stdout.splitlines()) >= asked


def test_a_keyed_class_shows_its_handshakes_and_signed_frames(tmp_path: Path) -> None:
    """Through --network's shaping proxies this time: they are the ones that capture."""
    summary, caps = run_class(tmp_path, "--key", "la clave de la clase", "--network", "delay=2ms")
    assert summary["network_hops"].keys() == summary["captures"].keys()
    home = tmp_path / "home"
    got = packets(caps / HOPS[0], home)
    flows = {p["tcp.stream"][0] for p in got}
    kinds = [k for p in got for k in p["ay.handshake.type"]]
    assert kinds.count("HELLO") == kinds.count("PROOF") == 2 * len(flows)  # two each way
    assert messages(got, server_port(caps / HOPS[0], home)) == (
        summary["answered"],
        summary["answered"],
    )
    signed = [s for p in got if p["ay.message.frames"] for s in p["ay.flags.signed"]]
    assert signed and set(signed) == {"1"}
    assert all(len(t) == 64 for p in got for t in p["ay.tag"])
    assert sum(len(p["ay.tag"]) for p in got) == sum(len(p["ay.message.frames"]) for p in got)


def test_a_tls_class_shows_no_ay_frame(tmp_path: Path) -> None:
    _, caps = run_class(tmp_path, "--tls")
    home = tmp_path / "home"
    for hop in HOPS:
        assert packets(caps / hop, home) == [], hop
        tls = tshark(caps / hop, "-Y", "tls.handshake.type == 1", home=home)
        assert tls.returncode == 0 and tls.stdout.strip(), hop  # the hop was captured, as TLS


def test_proxy_pcap_captures_a_refusal(tmp_path: Path) -> None:
    """A pickle message to an eco that does not take pickle: its refusal, decoded."""
    pcap = tmp_path / "eco.pcap"
    with running("eco", "--port", "0") as eco:
        with running("proxy", "--to", f"{eco.host}:{eco.port}", "--pcap", str(pcap)) as proxy:
            with socket.create_connection((proxy.host, proxy.port), timeout=20) as sock:
                pickled = b"\x80\x05N."  # pickle.dumps(None): codec 2, never accepted by default
                sock.sendall(HEADER.pack(MAGIC, VERSION, 2, 0, 0, len(pickled)) + pickled)
                reply = b""
                while chunk := sock.recv(4096):
                    reply += chunk
            assert reply[4] == 0x04  # the eco refused, with a refusal frame
            time.sleep(0.2)
            assert proxy.stop() == 0
        assert any("capture:" in line and "packets" in line for line in proxy.output)
    got = packets(pcap, tmp_path / "home")
    refusal = [p for p in got if p["ay.flags.refusal"] == ["1"]]
    assert len(refusal) == 1 and refusal[0]["tcp.srcport"] == [str(eco.port)]
    assert refusal[0]["ay.refusal.reason"] == ["1"]  # codec
    assert "pickle" in refusal[0]["ay.refusal.text"][0]
    first = got[0]
    assert first["tcp.dstport"] == [str(eco.port)] and first["ay.codec"] == ["2"]
    assert_tcp_is_sound(pcap, tmp_path / "home")
