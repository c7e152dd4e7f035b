"""The keyed handshake: documented bytes, replays, splices, wrong keys, refusals, fuzzing."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import aio
from protocol.aio import Speech
from protocol.errors import (
    AyudantiaError,
    BadSignature,
    HandshakeFailed,
    HandshakeMissing,
    Refused,
    SignatureUnexpected,
    Timeout,
)
from protocol.framing import NEED_DATA, FrameDecoder, Message, encode_message
from protocol.handshake import (
    HELLO_LABEL,
    RECORD_SIZE,
    Handshake,
    SessionKeys,
    hkdf_sha256,
    record,
)
from protocol.signing import Signer
from protocol.transport import Connection
from roles.base import Server, WireSettings
from roles.eco import Eco
from roles.replay import handshake_replay, old_signing_replay, replay_lesson

KEY = b"clave de la clase"
DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def exchange(client: Handshake, server: Handshake) -> tuple[SessionKeys, SessionKeys]:
    """Run two sans-IO handshakes against each other in memory."""
    for _ in range(3):
        to_server, to_client = client.data_to_send(), server.data_to_send()
        for end, data in ((server, to_server), (client, to_client)):
            if data:  # b"" would mean "closed"
                end.receive_data(data)
        got_c, got_s = client.next_event(), server.next_event()
        if isinstance(got_c, SessionKeys) and isinstance(got_s, SessionKeys):
            return got_c, got_s
    raise AssertionError("the handshake did not finish")


class Recorder(Server):
    """A keyed server that records every message it decodes and echoes it."""

    role = "recorder"

    def __init__(self, key: bytes, **kwargs: object) -> None:
        super().__init__(wire=WireSettings(key=key, read_timeout=1.0), **kwargs)  # type: ignore[arg-type]
        self.decoded: list[object] = []
        self.errors: list[BaseException | None] = []

    def message_received(self, conn, received) -> None:  # type: ignore[no-untyped-def]
        self.decoded.append(received.obj)
        conn.send_obj(received.obj)

    def connection_lost(self, conn, error) -> None:  # type: ignore[no-untyped-def]
        self.errors.append(error)
        super().connection_lost(conn, error)


def read_all(sock: socket.socket) -> bytes:
    out = b""
    sock.settimeout(5.0)
    while data := sock.recv(65536):
        out += data
    return out


# --- the documented exchange -----------------------------------------------------------


def doc_vector() -> dict[str, bytes]:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"```handshake\n(.*?)```", text, re.S)
    assert block, "docs/protocol.md has no handshake vector"
    fields: dict[str, bytes] = {}
    name = ""
    for line in block.group(1).splitlines():
        head, hexpart = line[:15].strip(), line[15:]
        name = head or name
        fields[name] = fields.get(name, b"") + bytes.fromhex(hexpart)
    return fields


def test_doc_vector_is_what_the_code_sends():
    v = doc_vector()
    client = Handshake(v["key"], "client", nonce=v["client nonce"])
    server = Handshake(v["key"], "server", nonce=v["server nonce"])
    assert client.data_to_send() == v["client HELLO"]
    assert server.data_to_send() == v["server HELLO"]
    client.receive_data(v["server HELLO"])
    server.receive_data(v["client HELLO"])
    assert client.next_event() is NEED_DATA and server.next_event() is NEED_DATA
    assert client.data_to_send() == v["client PROOF"]
    assert server.data_to_send() == b""  # the server proves only after the client has
    server.receive_data(v["client PROOF"])
    keys_s = server.next_event()
    assert server.data_to_send() == v["server PROOF"]
    client.receive_data(v["server PROOF"])
    keys_c = client.next_event()
    assert (keys_c.send, keys_c.recv) == (v["k_C"], v["k_S"])
    assert (keys_s.send, keys_s.recv) == (v["k_S"], v["k_C"])
    assert encode_message(1, b"{}", signer=Signer(v["k_C"], side="client")) == v["client frame"]
    for name in ("client HELLO", "server HELLO", "client PROOF", "server PROOF"):
        assert len(v[name]) == RECORD_SIZE


def test_hkdf_is_rfc5869_as_cryptography_computes_it():
    salt, info = bytes(range(64)), b"ayudantia/1 frames C"
    expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(KEY)
    assert hkdf_sha256(KEY, salt, info) == expected


# --- replays and splices ----------------------------------------------------------------


@pytest.mark.timeout(30)
def test_replayed_keyed_connection_is_refused_and_old_signing_was_not():
    lesson = replay_lesson(KEY)
    assert lesson.old_signing.accepted and len(lesson.old_signing.decoded) == 2
    assert not lesson.handshake.accepted and lesson.handshake.decoded == []
    assert lesson.handshake.error is not None and "signature" in lesson.handshake.error
    assert lesson.recorded_bytes > 2 * RECORD_SIZE  # the handshake and the questions


@pytest.mark.timeout(30)
def test_replay_decodes_nothing_at_the_server():
    with Recorder(KEY) as server:
        with Connection.connect(*server.address, key=KEY, read_timeout=5) as conn:
            conn.send({"n": 1})
            assert conn.recv() == {"n": 1}
        replayed, _ = handshake_replay(server.address, KEY, ({"n": 2},))  # recorded by a tap
        deadline = time.monotonic() + 5
        while len(server.errors) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not replayed.accepted
        assert server.decoded == [{"n": 1}, {"n": 2}]  # the recording itself, never the replay
        assert any(isinstance(e, HandshakeFailed) for e in server.errors)


def test_a_frame_spliced_from_another_connection_is_refused():
    keys_a, _ = exchange(Handshake(KEY, "client"), Handshake(KEY, "server"))
    _, keys_b_server = exchange(Handshake(KEY, "client"), Handshake(KEY, "server"))
    frame_from_a = encode_message(1, b'{"id":"intruso"}', signer=Signer(keys_a.send, side="client"))
    receiver_b = FrameDecoder(key=keys_b_server.recv, side="server")
    receiver_b.receive_data(frame_from_a)
    with pytest.raises(BadSignature):
        receiver_b.next_event()
    # the old way, the shared key itself, is no key of any connection either
    receiver_b = FrameDecoder(key=keys_b_server.recv, side="server")
    receiver_b.receive_data(encode_message(1, b"{}", signer=Signer(KEY, side="client")))
    with pytest.raises(BadSignature):
        receiver_b.next_event()


def test_old_signing_replay_is_accepted():
    replay = old_signing_replay(KEY)
    assert replay.accepted and replay.error is None and len(replay.decoded) == 2


# --- wrong key, no key, no handshake --------------------------------------------------


@pytest.mark.timeout(30)
def test_wrong_key_is_a_typed_error_and_nothing_is_decoded():
    with Recorder(KEY) as server:
        conn = Connection.connect(*server.address, key=b"otra clave", read_timeout=5)
        # its own check of the server's PROOF fails, or (when the server read the client's
        # HELLO and PROOF in one go) the server's signature refusal comes first
        with conn, pytest.raises((HandshakeFailed, Refused)) as info:
            conn.send({"id": "intruso-1"})
        assert getattr(info.value, "reason", "signature") == "signature"
        assert "otra clave" not in str(info.value) and KEY.decode() not in str(info.value)
        deadline = time.monotonic() + 5
        while not server.errors and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.decoded == []
        assert isinstance(server.errors[0], HandshakeFailed)


@pytest.mark.timeout(30)
def test_keyed_peer_refuses_a_plain_frame_and_a_silent_peer():
    with Recorder(KEY) as server:
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(encode_message(1, b'{"id":"intruso-1"}'))
            answer = read_all(sock)
        assert len(answer) > RECORD_SIZE  # its HELLO, then its refusal
        reader = FrameDecoder()
        reader.receive_data(answer[RECORD_SIZE:])
        with pytest.raises(Refused) as info:
            reader.next_event()
        assert info.value.reason == "signature"
        with socket.create_connection(server.address, timeout=5) as sock:
            # its HELLO, then a close (read_timeout=1 here): read_all gives up after 5 s
            assert len(read_all(sock)) == RECORD_SIZE
        assert server.decoded == []
        assert any(isinstance(e, HandshakeMissing) for e in server.errors)
        assert any(isinstance(e, Timeout) for e in server.errors)


@pytest.mark.timeout(30)
def test_keyed_client_to_keyless_server_is_refused_clearly():
    with Eco("127.0.0.1", 0, wire=WireSettings()) as eco:
        conn = Connection.connect(*eco.address, key=KEY, read_timeout=5)
        with conn, pytest.raises(Refused) as info:
            conn.send({"a": 1})
        assert info.value.reason == "signature"
        assert "no key" in info.value.text


@pytest.mark.timeout(30)
def test_event_loop_client_handshakes_and_fails_typed():
    async def main() -> tuple[object, BaseException | None]:
        with Eco("127.0.0.1", 0, wire=WireSettings(key=KEY)) as eco:
            conn = await aio.connect(*eco.address, speech=Speech(key=KEY))
            await conn.send({"hola": "mundo"})
            echoed = await conn.recv()
            conn.close()
            try:
                await aio.connect(*eco.address, speech=Speech(key=b"otra"))
            except AyudantiaError as exc:
                return echoed, exc
            return echoed, None

    echoed, error = asyncio.run(main())
    assert echoed == {"hola": "mundo"}
    assert isinstance(error, HandshakeFailed | Refused)


def test_a_hello_to_a_keyless_decoder_is_a_signed_frame():
    dec = FrameDecoder()
    dec.receive_data(Handshake(KEY, "client").data_to_send())
    with pytest.raises(SignatureUnexpected):
        dec.next_event()


@pytest.mark.timeout(30)
def test_blocking_pair_over_a_socketpair():
    a, b = socket.socketpair()
    with Connection(a, key=KEY, side="client") as ca, Connection(b, key=KEY, side="server") as cb:
        peer = threading.Thread(target=lambda: cb.send(cb.recv()))
        peer.start()
        ca.send({"x": [1, 2, 3]}, chunk_size=3)
        assert ca.recv() == {"x": [1, 2, 3]}
        peer.join(5)
        assert ca.bytes_sent > 2 * RECORD_SIZE


# --- fuzzing: only typed errors ---------------------------------------------------------


def _valid_stream(side: str) -> bytes:
    client, server = Handshake(KEY, "client"), Handshake(KEY, "server")
    hello_c, hello_s = client.data_to_send(), server.data_to_send()
    client.receive_data(hello_s)
    client.next_event()
    proof_c = client.data_to_send()
    server.receive_data(hello_c + proof_c)
    server.next_event()
    proof_s = server.data_to_send()
    return hello_s + proof_s if side == "client" else hello_c + proof_c


def test_a_server_proves_nothing_to_a_client_that_has_not_proved():
    """A server that answered every HELLO with its PROOF gave a keyless client an HMAC of
    known bytes: a weak key ("secreto") fell to an offline dictionary."""
    server = Handshake(KEY, "server")
    server.data_to_send()
    stranger = Handshake(b"otra clave", "client")
    server.receive_data(stranger.data_to_send())
    assert server.next_event() is NEED_DATA and server.data_to_send() == b""
    stranger.receive_data(record(HELLO_LABEL, server.nonce))
    stranger.next_event()
    server.receive_data(stranger.data_to_send())  # a wrong PROOF
    with pytest.raises(HandshakeFailed):
        server.next_event()
    assert server.data_to_send() == b""
    assert len(_valid_stream("client")) == len(_valid_stream("server")) == 2 * RECORD_SIZE


@settings(max_examples=300, deadline=None)
@given(
    side=st.sampled_from(["client", "server"]),
    mutations=st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 140),
    tail=st.binary(max_size=40),
    eof=st.booleans(),
    splits=st.lists(st.integers(1, 60), max_size=6),
)
def test_handshake_messages_only_typed_errors(side, mutations, cut, tail, eof, splits):
    data = bytearray(_valid_stream(side)[:cut] + tail)
    for pos, value in mutations:
        if pos < len(data):
            data[pos] = value
    hs = Handshake(KEY, side)  # type: ignore[arg-type]
    hs.data_to_send()
    pieces, rest = [], bytes(data)
    for n in splits:
        pieces.append(rest[:n])
        rest = rest[n:]
    pieces.append(rest)
    try:
        for piece in pieces:
            if piece:
                hs.receive_data(piece)
            event = hs.next_event()
            hs.data_to_send()
        if eof:
            hs.receive_data(b"")
            event = hs.next_event()
    except AyudantiaError:
        return
    # The stream's PROOF answers another handshake's nonce: it can never be accepted.
    assert event is NEED_DATA


def test_message_types_after_the_handshake():
    keys_c, keys_s = exchange(Handshake(KEY, "client"), Handshake(KEY, "server"))
    dec = FrameDecoder(key=keys_s.recv, side="server")
    dec.receive_data(encode_message(1, b"[1]", signer=Signer(keys_c.send, side="client")))
    assert isinstance(dec.next_event(), Message)
