"""docs/protocol.md against the code: its test vectors, its header table, its client."""

from __future__ import annotations

import ast
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protocol import codecs
from protocol.encodings import Compression, compression_for
from protocol.errors import (
    REFUSAL_CODES,
    BadFlags,
    BadMagic,
    BadSignature,
    ConnectionClosed,
    ContentDisallowed,
    MessageTooLarge,
    ProtocolError,
    ReflectedFrame,
    Refused,
    SignatureMissing,
    SignatureUnexpected,
    Timeout,
    Truncated,
    UnknownCodec,
    UnsupportedVersion,
)
from protocol.framing import (
    CLOSED,
    HEADER_SIZE,
    MAX_REFUSAL_PAYLOAD,
    NEED_DATA,
    FrameDecoder,
    Message,
    encode_message,
    encode_refusal,
    frame_count,
    refusal_for,
    refusal_frame,
)
from protocol.signing import Signer
from protocol.transport import Connection

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"

# The table from the issue, row by row, exactly as the doc must carry it.
HEADER_TABLE = (
    "offset size field",
    '0      2    magic b"AY"',
    "2      1    version = 1",
    "3      1    codec id (0 raw, 1 json, 2 pickle, 3 msgpack, 64-255 plug-ins)",
    "4      1    flags: bit 0 MORE (another frame of this message follows); "
    "bit 1 SIGNED; bit 2 REFUSAL; other bits 0",
    "5      1    content encoding (0 identity, 1 zstd, 2 lz4 frame, 64-255 plug-ins)",
    "6      4    payload length, unsigned big-endian",
    "10     n    payload",
)

VECTOR = re.compile(
    r"^### vector: (?P<name>[\w-]+)\s*\n"
    r"\s*codec: (?P<codec>\w+), chunk size: (?P<chunk>\d+)"
    r"(?:, encoding: (?P<encoding>\w+), level: (?P<level>-?\d+))?\s*\n"
    r"\s*object: `(?P<object>[^`\n]+)`\s*\n"
    r"\s*```hex\n(?P<hex>[0-9a-fA-F\s]*?)```",
    re.MULTILINE,
)
CLIENT = re.compile(r"^## Minimal client.*?\n```python\n(?P<code>.*?)```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Vector:
    name: str
    codec: str
    chunk: int
    obj: Any
    wire: bytes
    encoding: str = "none"
    level: int | None = None

    @property
    def compression(self) -> Compression | None:
        return compression_for(self.encoding, self.level)


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def load_vectors() -> list[Vector]:
    vectors = []
    for m in VECTOR.finditer(doc_text()):
        vectors.append(
            Vector(
                m["name"],
                m["codec"],
                int(m["chunk"]),
                ast.literal_eval(m["object"]),
                bytes.fromhex("".join(m["hex"].split())),
                m["encoding"] or "none",
                int(m["level"]) if m["level"] else None,
            )
        )
    return vectors


VECTORS = load_vectors()


def test_doc_has_every_vector() -> None:
    names = [v.name for v in VECTORS]
    assert len(names) == len(set(names))
    assert {
        "empty-json-map",
        "quijote-json",
        "quijote-msgpack",
        "raw-three-chunks",
        "quijote-msgpack-zstd",
        "raw-two-lz4-frames",
        "cbor-preferred-numbers",
    } <= set(names)
    # every "### vector:" heading parsed: none silently skipped by a formatting slip
    assert doc_text().count("### vector:") == len(VECTORS)


def test_doc_has_the_header_table() -> None:
    flat = " ".join(doc_text().split())
    for row in HEADER_TABLE:
        assert " ".join(row.split()) in flat, row


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_vector_encodes(vector: Vector) -> None:
    codec = codecs.get(vector.codec)
    payload = codec.encode(vector.obj)
    wire = encode_message(codec.id, payload, vector.chunk, compression=vector.compression)
    assert wire == vector.wire


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_vector_decodes(vector: Vector) -> None:
    codec = codecs.get(vector.codec)
    for pieces in ([vector.wire], [vector.wire[i : i + 1] for i in range(len(vector.wire))]):
        # a plug-in's vector (cbor) is accepted as its receiver would accept it: by name
        accept = codecs.DEFAULT_ACCEPT | {vector.codec}
        decoder = FrameDecoder(check_codec=codecs.REGISTRY.accept_checker(accept))
        events = []
        for piece in [*pieces, b""]:
            decoder.receive_data(piece)
            while (event := decoder.next_event()) is not NEED_DATA:
                events.append(event)
                if event is CLOSED:
                    break
        message, closed = events
        assert closed is CLOSED
        assert isinstance(message, Message)
        assert message.codec_id == codec.id
        assert message.frames == frame_count(len(message.payload), vector.chunk)
        assert message.wire_bytes == len(vector.wire)
        assert message.encoding_id == (vector.compression.id if vector.compression else 0)
        assert codec.decode(message.payload) == vector.obj


def test_raw_vector_is_three_frames() -> None:
    (raw,) = [v for v in VECTORS if v.name == "raw-three-chunks"]
    assert frame_count(len(raw.obj), raw.chunk) == 3


# --- signed frames (issue 15, defect 11: the tag is bound to its direction) --------------


def examples(kind: str, fields: str) -> list[re.Match[str]]:
    """The doc's ``### {kind} example: name`` sections: a ``fields`` line, then a hex block."""
    pattern = (
        rf"^### {kind} example: (?P<name>[\w-]+)\s*\n\s*{fields}\s*\n"
        r"\s*```hex\n(?P<hex>[0-9a-fA-F\s]*?)```"
    )
    return list(re.finditer(pattern, doc_text(), re.MULTILINE))


def wire_of(match: re.Match[str]) -> bytes:
    return bytes.fromhex("".join(match["hex"].split()))


def signed_vectors() -> list[re.Match[str]]:
    return examples(
        "Signed frame",
        r"key: `b\"(?P<key>[^\"]*)\"` \(ASCII\), sent by: (?P<side>client|server), seq 0, "
        r"codec (?P<codec>\w+), object `(?P<object>[^`\n]+)`",
    )


def test_doc_has_both_signed_vectors() -> None:
    assert doc_text().count("### Signed frame example:") == len(signed_vectors()) == 2
    assert {m["side"] for m in signed_vectors()} == {"client", "server"}


@pytest.mark.parametrize("match", signed_vectors(), ids=lambda m: m["name"])
def test_signed_vector_matches_the_code(match: re.Match[str]) -> None:
    """Defect 11: the documented tags include the sender's direction byte."""
    codec = codecs.get(match["codec"])
    key = match["key"].encode("ascii")
    wire = wire_of(match)
    payload = codec.encode(ast.literal_eval(match["object"]))
    assert encode_message(codec.id, payload, signer=Signer(key, side=match["side"])) == wire
    other = "server" if match["side"] == "client" else "client"
    receiver = FrameDecoder(key=key, side=other)
    receiver.receive_data(wire)
    assert bytes(receiver.next_event().payload) == payload
    sender = FrameDecoder(key=key, side=match["side"])  # reflected back to whoever sent it
    sender.receive_data(wire)
    with pytest.raises(ReflectedFrame):
        sender.next_event()


# --- refusal frames (issue 16) ----------------------------------------------------------


def refusal_vectors() -> list[re.Match[str]]:
    return examples("Refusal", r"code: (?P<code>\d+), text: (?P<text>\"[^\n]*\")")


def test_doc_has_the_refusal_vectors() -> None:
    assert doc_text().count("### Refusal example:") == len(refusal_vectors()) >= 3


@pytest.mark.parametrize("match", refusal_vectors(), ids=lambda m: m["name"])
def test_refusal_vector_encodes_and_decodes(match: re.Match[str]) -> None:
    code, text = int(match["code"]), json.loads(match["text"])
    wire = wire_of(match)
    assert encode_refusal(code, text) == wire
    for key in (None, b"clave"):  # a keyed receiver reads refusals too: they are never signed
        for step in (1, len(wire)):
            decoder = FrameDecoder(key=key)
            with pytest.raises(Refused) as info:
                for pos in range(0, len(wire), step):
                    decoder.receive_data(wire[pos : pos + step])
                    assert decoder.next_event() is NEED_DATA
            assert (info.value.code, info.value.text) == (code, text)
            assert info.value.reason == REFUSAL_CODES[code]


def test_refusal_for_maps_header_errors_to_codes() -> None:
    accepted = frozenset({"json", "msgpack", "raw"})
    cases = [
        (ContentDisallowed("pickle", accepted), 1, "this server accepts json, msgpack, raw"),
        (UnknownCodec(99, ["raw", "json"]), 1, "no codec with id 99"),
        (MessageTooLarge(100_000_000, 67108864), 2, "exceeds max_message=67108864"),
        (SignatureUnexpected("x"), 3, "this frame is signed and this server has no key"),
        (SignatureMissing("x"), 3, "requires signed frames"),
        (BadSignature("x"), 3, "does not verify"),
        (UnsupportedVersion("x"), 4, "version 1"),
        (BadMagic("x"), 5, "not a valid ayudantia frame"),
        (BadFlags("x"), 5, "not a valid ayudantia frame"),
    ]
    for exc, code, words in cases:
        got = refusal_for(exc)
        assert got is not None and got[0] == code and words in got[1], (exc, got)
        assert len(encode_refusal(*got)) <= HEADER_SIZE + MAX_REFUSAL_PAYLOAD
    assert refusal_for(Truncated("x")) is None
    assert refusal_for(Timeout("x")) is None
    assert refusal_frame(Truncated("x")) is None
    assert refusal_frame(BadMagic("x")) == encode_refusal(
        5, "not a valid ayudantia frame: BadMagic"
    )


def test_encode_refusal_caps_and_cleans_our_own_text() -> None:
    wire = encode_refusal(5, "ñ" * 600 + "\x1b[31m")
    assert len(wire) <= HEADER_SIZE + MAX_REFUSAL_PAYLOAD
    text = wire[HEADER_SIZE + 1 :].decode("utf-8")  # cut at a character boundary
    assert set(text) == {"ñ"}
    with pytest.raises(ValueError):
        encode_refusal(0, "no reason")


# --- the stdlib client in the doc --------------------------------------------------------


def client_code() -> str:
    match = CLIENT.search(doc_text())
    assert match, "docs/protocol.md has no '## Minimal client' section with a python block"
    return match["code"]


def test_client_imports_only_the_standard_library() -> None:
    tree = ast.parse(client_code())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= set(sys.stdlib_module_names), imported
    assert not imported & {"protocol", "ayudantia", "roles", "msgpack"}


class EchoServer:
    """A stand-in for ``ayudantia eco``: answers every message with the same codec and payload.

    ``reply_chunk`` None mirrors the sender's chunking; a number forces it (to check that a
    client copes with chunked replies).
    """

    def __init__(self, reply_chunk: int | None = None) -> None:
        self.reply_chunk = reply_chunk
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.address = self.listener.getsockname()[:2]
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.served = 0
        self._conns: list[Connection] = []
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True)
        self._accepter.start()

    def _accept_loop(self) -> None:
        while not self.stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            conn = Connection(sock, idle_timeout=0.2, read_timeout=5)
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: Connection) -> None:
        try:
            while not self.stop.is_set():
                try:
                    r = conn.recv_message()
                except Timeout:
                    continue
                except ConnectionClosed:
                    return
                self.served += 1
                chunk = r.chunk_size if self.reply_chunk is None else self.reply_chunk
                conn.send_payload(r.codec.id, r.payload, chunk_size=chunk)
        except (ProtocolError, codecs.CodecError) as exc:  # a broken peer: drop it
            self.errors.append(exc)
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self._accepter.join(5)
        for conn in list(self._conns):
            conn.shutdown()
        for thread in self._threads:
            thread.join(5)
        for conn in self._conns:
            conn.close()


@pytest.fixture(params=[None, 7], ids=["mirrored-reply", "reply-in-7-byte-frames"])
def echo_server(request: pytest.FixtureRequest) -> Iterator[EchoServer]:
    server = EchoServer(reply_chunk=request.param)
    try:
        yield server
    finally:
        server.close()


def test_echo_server_echoes(echo_server: EchoServer, notebook_message: dict) -> None:
    """The stand-in itself, checked with a Connection, so a client failure means the client."""
    with Connection.connect(*echo_server.address, codec="msgpack", chunk_size=5) as conn:
        conn.send(notebook_message)
        got = conn.recv_message()
        assert got.obj == notebook_message
        assert got.codec.name == "msgpack"
        assert got.chunk_size == (5 if echo_server.reply_chunk is None else 7)


def test_doc_client_against_an_echo_server(
    echo_server: EchoServer, tmp_path: Path, notebook_message: dict
) -> None:
    script = tmp_path / "client.py"
    script.write_text(client_code(), encoding="utf-8")
    host, port = echo_server.address
    result = subprocess.run(
        [sys.executable, "-I", str(script), host, str(port)],
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert json.loads(result.stdout.decode("utf-8")) == notebook_message
    assert echo_server.served == 1
    assert echo_server.errors == []


def test_doc_client_fails_loudly_without_a_server(tmp_path: Path) -> None:
    """The client is not vacuous: with nothing listening it must exit non-zero."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    script = tmp_path / "client.py"
    script.write_text(client_code(), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-I", str(script), "127.0.0.1", str(port)],
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert b"ConnectionRefusedError" in result.stderr


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_doc_client_talks_to_ayudantia_eco(
    codec: str, tmp_path: Path, notebook_message: dict
) -> None:
    """The issue's acceptance check: a client written from the doc alone, a real eco process."""
    from tests.procs import running

    script = tmp_path / "client.py"
    script.write_text(client_code(), encoding="utf-8")
    with running("eco", "--port", "0", "--codec", codec) as eco:
        result = subprocess.run(
            [sys.executable, "-I", str(script), eco.host, str(eco.port)],
            capture_output=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace") + "".join(eco.output)
        assert json.loads(result.stdout.decode("utf-8")) == notebook_message
        assert eco.proc.poll() is None
