"""Hostile peers against a real ``ayudantia eco`` process: it must drop them and keep serving."""

from __future__ import annotations

import contextlib
import json
import pickle
import socket
import time
from pathlib import Path

import psutil
import pytest

from ayudantia.lessons.pickle import TouchMarker
from protocol.framing import HEADER, MAGIC, VERSION, encode_message
from protocol.signing import Signer
from protocol.transport import Connection
from tests.procs import running

MAX = 1024 * 1024
ECO_ARGS = (
    "eco",
    "--port",
    "0",
    "--max-message",
    str(MAX),
    "--read-timeout",
    "1",
    "--message-timeout",
    "3",
    "--send-timeout",
    "2",
    "--log-level",
    "WARNING",
)


@pytest.fixture(scope="module")
def eco():
    with running(*ECO_ARGS) as proc:
        yield proc


def header(codec_id: int, length: int, flags: int = 0) -> bytes:
    return HEADER.pack(MAGIC, VERSION, codec_id, flags, 0, length)


def closed_by_server(sock: socket.socket, within: float = 8.0) -> float:
    """Seconds until the server closed this socket; fails if it did not within ``within``."""
    start = time.monotonic()
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"server kept the connection open for {within}s")
    return time.monotonic() - start


def still_serves(eco, codec: str = "json") -> None:
    assert eco.proc.poll() is None, "".join(eco.output)
    with Connection.connect(eco.host, eco.port, codec=codec, read_timeout=5, idle_timeout=5) as c:
        c.send({"still": "here", "n": [1, 2, 3]})
        assert c.recv() == {"still": "here", "n": [1, 2, 3]}


def attack(eco, wire: bytes) -> float:
    with socket.create_connection((eco.host, eco.port), timeout=5) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(wire)
        return closed_by_server(sock)


def rss(eco) -> int:
    return psutil.Process(eco.proc.pid).memory_info().rss


@pytest.mark.parametrize("length", [0xFFFFFFFF, MAX + 1, 0x7FFFFFFF])
def test_huge_length_refused_without_allocating(eco, length):
    before = rss(eco)
    attack(eco, header(1, length) + b"x" * 100)
    assert rss(eco) - before < 32 * 1024 * 1024
    still_serves(eco)


def test_chunked_total_above_max_message(eco):
    wire = header(0, MAX // 2, flags=1) + b"\0" * (MAX // 2) + header(0, MAX // 2 + 1)
    attack(eco, wire)
    still_serves(eco)


@pytest.mark.parametrize(
    "wire",
    [
        b"AY\x01",  # half a header, then close
        header(1, 100) + b"[1,2",  # truncated payload
        header(1, 4, flags=1) + b"[1,2",  # MORE set, next frame never comes
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # wrong protocol
        b"AY\x09\x01\x00\x00\x00\x00\x00\x00",  # bad version
        header(1, 2, flags=0x80) + b"{}",  # reserved flag
        header(1, 2, flags=0x02) + b"{}",  # signed frame to a server without a key
        header(200, 2) + b"{}",  # unknown codec
    ],
    ids=["half-header", "truncated", "more-never", "http", "version", "flag", "signed", "codec"],
)
def test_truncated_and_malformed_frames_then_close(eco, wire):
    with socket.create_connection((eco.host, eco.port), timeout=5) as sock:
        sock.sendall(wire)
        sock.shutdown(socket.SHUT_WR)
        closed_by_server(sock)
    still_serves(eco)


def test_slowloris_half_header_dropped_after_read_timeout(eco):
    with socket.create_connection((eco.host, eco.port), timeout=5) as sock:
        sock.sendall(b"AY\x01\x01\x00")
        waited = closed_by_server(sock, within=8)
    assert waited < 5  # read timeout is 1 s
    still_serves(eco)


def test_drip_feed_dropped_by_message_deadline(eco):
    wire = header(1, 64) + b" " * 64
    start = time.monotonic()
    with socket.create_connection((eco.host, eco.port), timeout=5) as sock:
        sock.settimeout(0.01)
        for byte in wire:  # one byte every 0.5 s: each read is within the 1 s read timeout
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1) == b"":
                    break
            except TimeoutError:
                pass
            except OSError:
                break
            if time.monotonic() - start > 15:
                pytest.fail("drip feed held the connection for 15 s")
            time.sleep(0.5)
        else:
            pytest.fail("the whole drip-fed message was accepted")
    assert time.monotonic() - start < 8  # message timeout is 3 s
    still_serves(eco)


@pytest.mark.parametrize(
    ("codec_id", "payload"),
    [
        (1, b'{"a":"\xff\xfe"}'),  # invalid UTF-8
        (1, b"\xef\xbb\xbf{}"),  # a BOM is not JSON
        (1, b'{"a":'),  # malformed json
        (1, b"[" * 200_000 + b"]" * 200_000),  # deeply nested json
        (1, b"9" * 100_000),  # huge integer
        (1, b"NaN"),  # not JSON
        (3, b"\xc1"),  # never-used msgpack byte
        (3, b"\xdd\xff\xff\xff\xff"),  # array of 4 billion items, 0 given
        (3, b"\xdf\xff\xff\xff\xff"),  # map of 4 billion pairs, 0 given
        (3, b"\xdb\xff\xff\xff\xff"),  # str of 4 GB
        (3, b"\x91" * 200_000 + b"\xc0"),  # deeply nested msgpack arrays
        (3, b"\x82\x01"),  # truncated map
    ],
    ids=[
        "json-utf8",
        "json-bom",
        "json-malformed",
        "json-nested",
        "json-huge-int",
        "json-nan",
        "msgpack-c1",
        "msgpack-huge-array",
        "msgpack-huge-map",
        "msgpack-huge-str",
        "msgpack-nested",
        "msgpack-truncated",
    ],
)
def test_malformed_payloads_drop_only_that_client(eco, codec_id, payload):
    before = rss(eco)
    attack(eco, encode_message(codec_id, payload))
    assert rss(eco) - before < 64 * 1024 * 1024
    still_serves(eco, "json" if codec_id == 1 else "msgpack")


def test_pickle_frame_to_a_role_that_did_not_opt_in(eco, tmp_path: Path):
    marker = tmp_path / "pwned"
    attack(eco, encode_message(2, pickle.dumps(TouchMarker(marker))))
    assert not marker.exists()
    still_serves(eco)


def test_a_thousand_connections_opened_and_dropped(eco):
    proc = psutil.Process(eco.proc.pid)
    still_serves(eco)
    threads0, fds0 = proc.num_threads(), proc.num_fds()
    fds_before = proc.net_connections()
    for i in range(1000):
        try:
            sock = socket.create_connection((eco.host, eco.port), timeout=5)
        except OSError:
            time.sleep(0.01)
            continue
        if i % 3 == 0:
            sock.sendall(b"AY")  # some leave half a header behind
        elif i % 3 == 1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")  # RST
        sock.close()
    # Idle means idle for a while: connections still in the listen backlog are accepted
    # later, so one lucky sample between two accepts proves nothing.
    deadline = time.monotonic() + 20
    calm = 0
    while time.monotonic() < deadline and calm < 5:
        calm = calm + 1 if proc.num_threads() <= threads0 and proc.num_fds() <= fds0 else 0
        time.sleep(0.2)
    assert proc.num_threads() <= threads0, "client threads left behind"
    assert proc.num_fds() <= fds0, f"sockets left open: {proc.net_connections()} {fds_before}"
    cpu0 = sum(proc.cpu_times()[:2])
    time.sleep(1.0)
    assert sum(proc.cpu_times()[:2]) - cpu0 < 0.1, "the server spins while idle"
    still_serves(eco)


def test_signed_eco_refuses_unsigned_and_tampered():
    key = "hostile-test-key"
    with running(*ECO_ARGS, env={"AYUDANTIA_KEY": key}) as eco:
        assert key not in "".join(eco.output)
        attack(eco, encode_message(1, b'{"a":1}'))  # unsigned
        bad = bytearray(encode_message(1, b'{"a":1}', signer=Signer(key.encode())))
        bad[11] ^= 1
        attack(eco, bytes(bad))  # tampered
        attack(eco, encode_message(1, b'{"a":1}', signer=Signer(b"wrong")))  # wrong key
        with Connection.connect(eco.host, eco.port, key=key, read_timeout=5) as c:
            c.send({"firmado": True}, chunk_size=4)
            assert c.recv() == {"firmado": True}
        # an unsigned client is not served
        with socket.create_connection((eco.host, eco.port), timeout=5) as sock:
            sock.sendall(encode_message(1, json.dumps({"a": 1}).encode()))
            closed_by_server(sock)
        assert key not in "".join(eco.output)
