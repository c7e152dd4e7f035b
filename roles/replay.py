"""Record a keyed session and replay it into a new connection: old signing against the handshake.

For the lesson the lead wires later (``ayudantia lesson replay``): :func:`replay_lesson`
returns what happened, it prints nothing. Under the old signing (signed frames, counters
from 0, no handshake) a recorded session is a valid session for ever: replayed into a new
connection, every frame verifies and every question is decoded again. With the keyed
handshake the replayed PROOF answers a nonce the server no longer uses: it is refused
before a single frame is decoded.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from protocol import codecs
from protocol.errors import AyudantiaError
from protocol.framing import NEED_DATA, FrameDecoder, Message, encode_message
from protocol.handshake import RECORD_HEADER, RECORD_SIZE
from protocol.signing import Signer
from protocol.transport import Connection
from roles.eco import Eco
from roles.wire import WireSettings

QUESTIONS = ({"id": "a-1", "tipo": "Pregunta Dificil"}, {"id": "a-2", "tipo": "Tarea"})


@dataclass
class Replay:
    """One replay: was it accepted, what the receiver decoded, and why it stopped."""

    accepted: bool
    decoded: list[Any] = field(default_factory=list)
    error: str | None = None


@dataclass
class ReplayLesson:
    old_signing: Replay
    handshake: Replay
    recorded_bytes: int


def old_signing_replay(key: bytes, questions: tuple[Any, ...] = QUESTIONS) -> Replay:
    """A session signed the old way (no handshake), replayed to a fresh keyed receiver."""
    json = codecs.get("json")
    signer = Signer(key, side="client")
    recorded = b"".join(encode_message(json.id, json.encode(q), signer=signer) for q in questions)
    receiver = FrameDecoder(key=key, side="server")  # a new connection: counters at 0
    receiver.receive_data(recorded)
    decoded: list[Any] = []
    try:
        while isinstance(event := receiver.next_event(), Message):
            decoded.append(json.decode(event.payload))
    except AyudantiaError as exc:
        return Replay(False, decoded, f"{type(exc).__name__}: {exc}")
    return Replay(bool(decoded), decoded)


class Tap:
    """A loopback relay to ``target`` that records what the client sends (a sniffer's view)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.recorded = bytearray()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = self._listener.getsockname()[:2]
        self._thread = threading.Thread(target=self._serve_one, name="tap", daemon=True)
        self._thread.start()

    def _serve_one(self) -> None:
        with self._listener, contextlib.suppress(OSError):
            self._listener.settimeout(10.0)
            client, _ = self._listener.accept()
            with client, socket.create_connection(self.target, timeout=10.0) as server:
                back = threading.Thread(target=_pump, args=(server, client, None), daemon=True)
                back.start()
                _pump(client, server, self.recorded)
                back.join(10.0)

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)


def _pump(src: socket.socket, dst: socket.socket, record: bytearray | None) -> None:
    with contextlib.suppress(OSError):
        src.settimeout(10.0)
        while data := src.recv(65536):
            if record is not None:
                record += data
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)


def handshake_replay(
    target: tuple[str, int], key: bytes, questions: tuple[Any, ...] = QUESTIONS
) -> tuple[Replay, int]:
    """Record a real keyed session with the server at ``target``, then replay its bytes."""
    tap = Tap(target)
    with Connection.connect(*tap.address, key=key, side="client", read_timeout=5.0) as conn:
        for question in questions:
            conn.send(question)
            conn.recv()
    tap.join()
    recorded = bytes(tap.recorded)
    return _replay_into(target, recorded), len(recorded)


def _replay_into(target: tuple[str, int], recorded: bytes) -> Replay:
    """Send ``recorded`` on a new connection; read what the server answers until it closes."""
    with socket.create_connection(target, timeout=5.0) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(recorded)
        answer = b"".join(_read_until_closed(sock))
    while answer.startswith(RECORD_HEADER):  # the server's HELLO and PROOF: not frames
        answer = answer[RECORD_SIZE:]
    reader = FrameDecoder()  # then its frames (an echo), or its refusal
    reader.receive_data(answer)
    reader.receive_data(b"")
    decoded: list[Any] = []
    try:
        while (event := reader.next_event()) is not NEED_DATA and isinstance(event, Message):
            decoded.append(codecs.get("json").decode(event.payload))
    except AyudantiaError as exc:
        return Replay(bool(decoded), decoded, f"{type(exc).__name__}: {exc}")
    return Replay(bool(decoded), decoded, None if decoded else "closed without an answer")


def _read_until_closed(sock: socket.socket) -> Iterator[bytes]:
    with contextlib.suppress(OSError):
        while data := sock.recv(65536):
            yield data


def replay_lesson(key: bytes) -> ReplayLesson:
    """Both replays, the second against a real keyed eco server started here."""
    old = old_signing_replay(key)
    with Eco("127.0.0.1", 0, wire=WireSettings(key=key)) as eco:
        new, size = handshake_replay(eco.address, key)
    return ReplayLesson(old, new, size)
