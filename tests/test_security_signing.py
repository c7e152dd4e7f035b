"""Signed frames (flag bit 1, HMAC-SHA256): round trips, and every way a frame can lie."""

from __future__ import annotations

import hashlib
import hmac
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
    ReflectedFrame,
    SignatureMissing,
    SignatureUnexpected,
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
    ca = Connection(a, key=KEY, read_timeout=5, idle_timeout=5, side="client")
    cb = Connection(b, key=KEY, read_timeout=5, idle_timeout=5, side="server")
    yield ca, cb
    ca.close()
    cb.close()


def test_layout_is_header_data_tag():
    wire = encode_message(1, b"[1]", signer=Signer(KEY))
    header, data, tag = wire[:HEADER_SIZE], wire[HEADER_SIZE:-TAG_SIZE], wire[-TAG_SIZE:]
    assert header == b"AY\x01\x01\x02\x00" + (3 + TAG_SIZE).to_bytes(4, "big")
    assert header[4] & FLAG_SIGNED
    assert data == b"[1]"
    assert tag == frame_tag(KEY, "client", header, 0, b"[1]")
    assert tag == hmac.new(KEY, b"C" + header + bytes(8) + b"[1]", hashlib.sha256).digest()


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
    with Connection(a) as plain, Connection(b, key=KEY, read_timeout=5, side="server") as keyed:
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
        [sys.executable, "-m", "ayudantia", "lesson", "pickle", "--lang", "en"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for n in range(1, 6):
        assert f"step {n}:" in proc.stdout
    assert "result: as taught" in proc.stdout
    assert "Traceback" not in proc.stderr


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


LESSON = ROOT / "ayudantia" / "lessons" / "pickle.py"


def test_plain_pickle_loads_only_in_the_lesson():
    offenders = []
    for pkg in ("ayudantia", "protocol", "roles"):
        for path in (ROOT / pkg).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for needle in ("pickle.loads(", "pickle.load(", "Unpickler(io", "_pickle.loads("):
                if needle in text and path not in (LESSON, ROOT / "protocol" / "safepickle.py"):
                    offenders.append(f"{path}: {needle}")
    assert not offenders
    lesson = LESSON.read_text(encoding="utf-8")
    assert lesson.count("pickle.loads(event.payload)") == 1


def test_connection_closed_when_peer_leaves_signed(pair):
    ca, cb = pair
    ca.close()
    with pytest.raises(ConnectionClosed):
        cb.recv()


# --- issue 15, defect 11: a tag is bound to its direction --------------------------------


def test_defect_11_reflected_frame_is_refused():
    """Defect 11: Alice's own signed frame bounced back to her does not verify."""
    a, b = socket.socketpair()
    with Connection(a, key=KEY, side="client", read_timeout=5) as alice:
        alice.send({"pregunta": "¿quién soy?"})
        reflected = b.recv(4096)  # a man in the middle, without the key, bounces it back
        b.sendall(reflected)
        with pytest.raises(BadSignature) as info:
            alice.recv()
        assert isinstance(info.value, ReflectedFrame)
        assert "reflected" in str(info.value)
    b.close()


def test_defect_11_directions_differ_and_pair_up():
    """Defect 11: the same frame signed as client and as server carries different tags."""
    as_client = encode_message(1, b"{}", signer=Signer(KEY, side="client"))
    as_server = encode_message(1, b"{}", signer=Signer(KEY, side="server"))
    assert as_client[:-TAG_SIZE] == as_server[:-TAG_SIZE]
    assert as_client[-TAG_SIZE:] != as_server[-TAG_SIZE:]
    assert bytes(decode_all(as_client)[0].payload) == b"{}"  # a server accepts a client's
    with pytest.raises(ReflectedFrame):
        decode_all(as_server)  # ...and not a frame that a server signed
    client_side = FrameDecoder(key=KEY, side="client")
    client_side.receive_data(as_server)
    assert bytes(client_side.next_event().payload) == b"{}"


def test_defect_11_signed_connection_needs_a_side():
    """Defect 11: without a side a signed connection cannot know which tags to expect."""
    a, b = socket.socketpair()
    with pytest.raises(ValueError, match="side="):
        Connection(a, key=KEY)
    with pytest.raises(ValueError):
        Signer(KEY, side="cliente")  # type: ignore[arg-type]
    a.close()
    b.close()


def test_signature_unexpected_names_the_cause():
    """Issue 16: a signed frame at a keyless receiver says so, not 'unsupported flag bits'."""
    with pytest.raises(SignatureUnexpected, match="signed and this receiver has no key"):
        decode_all(encode_message(1, b"{}", signer=Signer(KEY)), key=None)
