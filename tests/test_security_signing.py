"""Signed frames (flag bit 1, HMAC-SHA256): round trips, and every way a frame can lie."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protocol.errors import (
    BadFlags,
    BadSignature,
    ConnectionClosed,
    ProtocolError,
    SignatureMissing,
    Timeout,
)
from protocol.framing import (
    FLAG_SIGNED,
    HEADER_SIZE,
    FrameDecoder,
    Message,
    encode_message,
)
from protocol.signing import TAG_SIZE, Signer, frame_tag
from protocol.transport import Connection
from roles.base import WireSettings

KEY = b"a shared secret for tests"
ROOT = Path(__file__).resolve().parent.parent


def decode_all(data: bytes, key: bytes | None = KEY, *, eof: bool = False) -> list[Message]:
    dec = FrameDecoder(key=key)
    dec.receive_data(data)
    if eof:
        dec.receive_data(b"")
    out = []
    while isinstance(ev := dec.next_event(), Message):
        out.append(ev)
    return out


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    ca = Connection(a, key=KEY, read_timeout=5, idle_timeout=5)
    cb = Connection(b, key=KEY, read_timeout=5, idle_timeout=5)
    yield ca, cb
    ca.close()
    cb.close()


def test_layout_is_header_data_tag():
    wire = encode_message(1, b"[1]", signer=Signer(KEY))
    header, data, tag = wire[:HEADER_SIZE], wire[HEADER_SIZE:-TAG_SIZE], wire[-TAG_SIZE:]
    assert header == b"AY\x01\x01\x02\x00" + (3 + TAG_SIZE).to_bytes(4, "big")
    assert header[4] & FLAG_SIGNED
    assert data == b"[1]"
    assert tag == frame_tag(KEY, header, 0, b"[1]")


@pytest.mark.parametrize("chunk", [0, 1, 3, 1000])
def test_round_trip_chunked(chunk):
    signer = Signer(KEY)
    payload = b'{"texto":"En un lugar de la Mancha"}'
    wire = encode_message(1, payload, chunk, signer=signer) + encode_message(
        1, b"{}", chunk, signer=signer
    )
    msgs = decode_all(wire)
    assert [bytes(m.payload) for m in msgs] == [payload, b"{}"]
    assert msgs[0].wire_bytes == len(wire) - len(
        encode_message(1, b"{}", chunk, signer=Signer(KEY))
    )
    # one byte at a time gives the same
    dec = FrameDecoder(key=KEY)
    got = []
    for i in range(len(wire)):
        dec.receive_data(wire[i : i + 1])
        while isinstance(ev := dec.next_event(), Message):
            got.append(bytes(ev.payload))
    assert got == [payload, b"{}"]


def test_every_single_byte_flip_is_refused():
    wire = encode_message(1, b'{"a":[1,2,3]}', 5, signer=Signer(KEY))
    for i in range(len(wire)):
        bad = bytearray(wire)
        bad[i] ^= 0x01
        with pytest.raises(ProtocolError):  # bad tag, bad header, or truncated at EOF
            decode_all(bytes(bad), eof=True)


def test_wrong_key_unsigned_short_and_no_key():
    wire = encode_message(1, b"{}", signer=Signer(b"another key"))
    with pytest.raises(BadSignature):
        decode_all(wire)
    with pytest.raises(SignatureMissing):
        decode_all(encode_message(1, b"{}"))
    short = bytearray(encode_message(1, b"", signer=Signer(KEY))[: HEADER_SIZE + 5])
    short[6:10] = (5).to_bytes(4, "big")
    with pytest.raises(BadSignature):
        decode_all(bytes(short))
    # a receiver without a key refuses a signed frame, as before signing existed
    with pytest.raises(BadFlags):
        decode_all(encode_message(1, b"{}", signer=Signer(KEY)), key=None)
    # and unsigned traffic without a key is unchanged
    assert bytes(decode_all(encode_message(1, b"{}"), key=None)[0].payload) == b"{}"


def test_replay_reorder_and_drop_are_refused():
    signer = Signer(KEY)
    first = encode_message(1, b"[1]", signer=signer)
    second = encode_message(1, b"[2]", signer=signer)
    with pytest.raises(BadSignature):
        decode_all(first + first)  # replayed
    with pytest.raises(BadSignature):
        decode_all(second + first)  # reordered
    with pytest.raises(BadSignature):
        decode_all(second)  # first one dropped


def test_connection_signed_round_trip_and_stream(pair):
    ca, cb = pair
    ca.send({"x": "hola"}, chunk_size=4)
    assert cb.recv() == {"x": "hola"}
    cb.send([1, 2, 3])
    assert ca.recv() == [1, 2, 3]
    ca.send_stream([b"abc" * 1000], chunk_size=512)
    assert b"".join(cb.recv_stream()) == b"abc" * 1000


def test_unsigned_peer_is_refused_by_keyed_connection():
    a, b = socket.socketpair()
    with Connection(a) as plain, Connection(b, key=KEY, read_timeout=5) as keyed:
        plain.send({"x": 1})
        with pytest.raises(SignatureMissing):
            keyed.recv()


def test_message_timeout_drops_a_drip_feed():
    a, b = socket.socketpair()
    with Connection(b, read_timeout=1.0, message_timeout=0.6) as conn:
        wire = encode_message(1, b'{"a":1}')
        a.sendall(wire[:3])
        start = time.monotonic()
        with pytest.raises(Timeout):
            for byte in wire[3:]:
                time.sleep(0.2)  # each byte well within read_timeout
                a.sendall(bytes([byte]))
                conn._set_timeout(None)
                conn.recv()
        assert time.monotonic() - start < 3
    a.close()


def test_message_timeout_does_not_touch_idle_wait():
    a, b = socket.socketpair()
    with Connection(b, idle_timeout=None, read_timeout=1.0, message_timeout=0.3) as conn:
        time.sleep(0.5)  # idle between messages is not part of a message
        a.sendall(encode_message(1, b"[7]"))
        assert conn.recv() == [7]
    a.close()


def test_key_never_in_repr():
    wire = WireSettings(key=KEY)
    assert KEY.decode() not in repr(wire)
    assert "secret" not in repr(Signer(KEY))


def test_empty_key_refused():
    with pytest.raises(ValueError):
        Signer(b"")


def test_closed_after_bad_signature_is_sticky():
    dec = FrameDecoder(key=KEY)
    dec.receive_data(encode_message(1, b"{}"))
    with pytest.raises(SignatureMissing):
        dec.next_event()
    with pytest.raises(SignatureMissing):
        dec.next_event()


def test_lesson_pickle_exits_zero_and_teaches_five_steps():
    proc = subprocess.run(
        [sys.executable, "-m", "ayudantia", "lesson", "pickle"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for n in range(1, 6):
        assert f"Step {n}:" in proc.stdout
    assert proc.stdout.count("result:   as taught") == 5
    assert "5/5 steps behaved as taught" in proc.stdout


def test_lesson_never_prints_the_key():
    secret = "do-not-print-this-key-42"
    proc = subprocess.run(
        [sys.executable, "-m", "ayudantia", "lesson", "pickle", "--key", secret],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0
    assert secret not in proc.stdout + proc.stderr


def test_plain_pickle_loads_only_in_the_lesson():
    offenders = []
    for pkg in ("ayudantia", "protocol", "roles"):
        for path in (ROOT / pkg).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for needle in ("pickle.loads(", "pickle.load(", "Unpickler(io", "_pickle.loads("):
                if needle in text and path.name not in ("lesson_pickle.py", "safepickle.py"):
                    offenders.append(f"{path}: {needle}")
    assert not offenders
    lesson = (ROOT / "ayudantia" / "lesson_pickle.py").read_text(encoding="utf-8")
    assert lesson.count("pickle.loads(event.payload)") == 1


def test_connection_closed_when_peer_leaves_signed(pair):
    ca, cb = pair
    ca.close()
    with pytest.raises(ConnectionClosed):
        cb.recv()


def test_docs_signed_vector_matches_the_code():
    import re

    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    if "### Signed frame example: signed-empty-json-map" not in text:
        pytest.skip("docs/protocol.md has no signed vector")
    section = text.split("### Signed frame example: signed-empty-json-map")[1]
    block = re.findall(r"```hex\n(.*?)```", section, re.S)[0]
    assert bytes.fromhex("".join(block.split())) == encode_message(
        1, b"{}", signer=Signer(b"clave")
    )
