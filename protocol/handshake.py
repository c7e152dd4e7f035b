"""The keyed handshake, sans-IO: bytes in, a per-connection pair of keys out.

Signed frames alone (:mod:`protocol.signing`) bind a frame to its direction and its place
in the connection, but not to the connection: both counters restart at 0, so a recorded
signed session replayed into a new connection verified frame for frame. The handshake is
``multiprocessing.connection``'s challenge made symmetric: on connect each side sends a
fresh random nonce (HELLO); the client answers the server's nonce (PROOF) on its HELLO,
and the server answers the client's only once that PROOF verified; every later frame is
signed with a key derived from the shared key and both nonces, one per direction::

    HELLO  = header || b"AYHELLO1" || nonce                       (50 bytes)
    PROOF  = header || b"AYPROOF1" || HMAC-SHA256(K, b"ayudantia/1 proof " || dir
                                                     || nonce_client || nonce_server)
    k_dir  = HKDF-SHA256(IKM=K, salt=nonce_client || nonce_server,
                         info=b"ayudantia/1 frames " || dir, L=32)

``header`` is a valid frame header (codec 0, flags SIGNED, length 40), so a peer with no
key refuses the HELLO as a signed frame ("this frame is signed and this server has no key")
and a peer with a key that gets a plain frame instead refuses it (:class:`HandshakeMissing`).
A recorded session replayed later meets a new nonce, so its PROOF fails
(:class:`HandshakeFailed`), and so would each frame: the keys differ per connection.
A PROOF is an HMAC over a nonce of the prover's own choosing too, so it tells a peer
without the key nothing it could reuse; and the server sends none to a client that has not
proved first, since a PROOF over known bytes lets anyone who gets one try guesses of a
weak key offline (a keyless client with a HELLO got exactly that). See docs/protocol.md,
"Keyed handshake".
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import select
import socket
import time
from dataclasses import dataclass
from typing import Any, Final

from protocol.errors import (
    HandshakeFailed,
    HandshakeMalformed,
    HandshakeMissing,
    HandshakeReflected,
    Timeout,
    Truncated,
)
from protocol.framing import (
    FLAG_REFUSAL,
    FLAG_SIGNED,
    HEADER,
    HEADER_SIZE,
    MAGIC,
    NEED_DATA,
    VERSION,
    FrameDecoder,
)
from protocol.signing import DIRECTION, Side, check_key, check_side

NONCE_SIZE: Final = 32
LABEL_SIZE: Final = 8
HELLO_LABEL: Final = b"AYHELLO1"
PROOF_LABEL: Final = b"AYPROOF1"
RECORD_HEADER: Final = HEADER.pack(MAGIC, VERSION, 0, FLAG_SIGNED, 0, LABEL_SIZE + NONCE_SIZE)
RECORD_SIZE: Final = HEADER_SIZE + LABEL_SIZE + NONCE_SIZE  # 50
PROOF_INFO: Final = b"ayudantia/1 proof "
KEY_INFO: Final = b"ayudantia/1 frames "
# How long a keyed peer waits for the other's handshake before it drops the connection.
HANDSHAKE_TIMEOUT: Final = 10.0
_OTHER: Final[dict[str, Side]] = {"client": "server", "server": "client"}


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """This end's keys for one connection: what it signs with, what it verifies with."""

    send: bytes
    recv: bytes

    def __repr__(self) -> str:  # never show a key
        return "<SessionKeys>"


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 HKDF with SHA-256 (extract then expand), in HMAC alone."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
    return out[:length]


def proof(key: bytes, prover: Side, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """The 32 bytes ``prover`` sends to show it holds ``key`` for this pair of nonces."""
    data = PROOF_INFO + DIRECTION[prover] + client_nonce + server_nonce
    return hmac.new(key, data, hashlib.sha256).digest()


def frame_key(key: bytes, sender: Side, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """The key that signs the frames ``sender`` sends on this connection."""
    return hkdf_sha256(key, client_nonce + server_nonce, KEY_INFO + DIRECTION[sender])


def session_keys(key: bytes, side: Side, client_nonce: bytes, server_nonce: bytes) -> SessionKeys:
    other = _OTHER[side]
    return SessionKeys(
        send=frame_key(key, side, client_nonce, server_nonce),
        recv=frame_key(key, other, client_nonce, server_nonce),
    )


def record(label: bytes, body: bytes) -> bytes:
    """One 50-byte handshake record."""
    return RECORD_HEADER + label + body


class Handshake:
    """One end's handshake. Send :meth:`data_to_send`, feed :meth:`receive_data`, and call
    :meth:`next_event` until it returns :class:`SessionKeys` instead of ``NEED_DATA``.

    Errors are typed and sticky: :class:`HandshakeMissing` (the peer sent a frame, not a
    HELLO), :class:`HandshakeMalformed`, :class:`HandshakeFailed` (wrong key or a replay),
    :class:`HandshakeReflected`, :class:`Truncated` (closed midway), and :class:`Refused`
    when the peer sent a refusal frame instead. :attr:`wanted` is how many bytes complete
    the record under way, so a blocking reader never reads past the handshake;
    :meth:`trailing` gives back what an event-loop reader received beyond it.
    """

    def __init__(self, key: bytes | str, side: Side, *, nonce: bytes | None = None) -> None:
        self._key = check_key(key)
        self.side = check_side(side)
        self.nonce = secrets.token_bytes(NONCE_SIZE) if nonce is None else nonce
        if len(self.nonce) != NONCE_SIZE:
            raise ValueError(f"a nonce is {NONCE_SIZE} bytes")
        self._out = bytearray(record(HELLO_LABEL, self.nonce))
        self._in = bytearray()
        self._eof = False
        self.peer_nonce: bytes | None = None
        self.keys: SessionKeys | None = None
        self._error: Exception | None = None
        self.bytes_in = 0
        self.bytes_out = 0

    def __repr__(self) -> str:
        return f"<Handshake {self.side} {'done' if self.keys else 'pending'}>"

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        self.bytes_out += len(out)
        return out

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` means it closed."""
        if not data:
            self._eof = True
        self._in += data

    def trailing(self) -> bytes:
        """Bytes received after the handshake: the peer's first frames."""
        rest = bytes(self._in)
        self._in.clear()
        return rest

    @property
    def wanted(self) -> int:
        """Bytes still missing from the record (or refusal frame) under way."""
        have = len(self._in)
        if have < HEADER_SIZE:
            return max(RECORD_SIZE - have, 1)
        if self._in[4] & FLAG_REFUSAL:
            length = int.from_bytes(self._in[6:10], "big")
            return max(HEADER_SIZE + length - have, 1)
        return max(RECORD_SIZE - have, 1)

    def next_event(self) -> Any:
        """``NEED_DATA`` or the :class:`SessionKeys`; raises the (sticky) typed error."""
        if self._error is not None:
            raise self._error
        try:
            return self._step()
        except Exception as exc:
            self._error = exc
            raise

    def _step(self) -> Any:
        while self.keys is None:
            body = self._take_record()
            if body is None:
                return NEED_DATA
            if self.peer_nonce is None:
                self._on_hello(body)
            else:
                self._on_proof(body, self.peer_nonce)
        return self.keys

    def _take_record(self) -> bytes | None:
        """The next record's 40-byte body, None until it is all here."""
        buf = self._in
        if len(buf) >= HEADER_SIZE and bytes(buf[:HEADER_SIZE]) != RECORD_HEADER:
            self._not_a_record()  # raises, unless a refusal frame is still arriving
            if self._eof:
                raise Truncated("connection closed inside the peer's refusal frame")
            return None
        if len(buf) < RECORD_SIZE:
            if self._eof:
                raise Truncated(
                    f"connection closed during the keyed handshake ({len(buf)} bytes of a record)"
                )
            return None
        body = bytes(buf[HEADER_SIZE:RECORD_SIZE])
        del buf[:RECORD_SIZE]
        self.bytes_in += RECORD_SIZE
        return body

    def _not_a_record(self) -> None:
        """The peer sent something else: its refusal (raise it), or a frame (it has no key)."""
        head = bytes(self._in[:HEADER_SIZE])
        if head[:2] == MAGIC and head[4] & FLAG_REFUSAL:
            probe = FrameDecoder()
            probe.receive_data(bytes(self._in))
            if self._eof:
                probe.receive_data(b"")
            if probe.next_event() is NEED_DATA:  # raises Refused once it is all here
                return
        raise HandshakeMissing(
            "this peer requires the keyed handshake (a shared key); it received a frame without one"
        )

    def _on_hello(self, body: bytes) -> None:
        label, nonce = body[:LABEL_SIZE], body[LABEL_SIZE:]
        if label != HELLO_LABEL:
            raise HandshakeMalformed(f"expected a handshake HELLO, got label {label!r}")
        if hmac.compare_digest(nonce, self.nonce):
            raise HandshakeReflected("our own handshake HELLO came back: a mirror, not a peer")
        self.peer_nonce = nonce
        if self.side == "client":  # the server proves only once the client has
            self._out += record(PROOF_LABEL, proof(self._key, self.side, *self._nonces(nonce)))

    def _on_proof(self, body: bytes, peer_nonce: bytes) -> None:
        label, mac = body[:LABEL_SIZE], body[LABEL_SIZE:]
        if label != PROOF_LABEL:
            raise HandshakeMalformed(f"expected a handshake PROOF, got label {label!r}")
        client_nonce, server_nonce = self._nonces(peer_nonce)
        expected = proof(self._key, _OTHER[self.side], client_nonce, server_nonce)
        if not hmac.compare_digest(mac, expected):
            raise HandshakeFailed(
                "the peer's handshake proof does not verify: the two ends do not share the "
                "key (or a recorded handshake was replayed)"
            )
        if self.side == "server":
            self._out += record(PROOF_LABEL, proof(self._key, "server", client_nonce, server_nonce))
        self.keys = session_keys(self._key, self.side, client_nonce, server_nonce)

    def _nonces(self, peer_nonce: bytes) -> tuple[bytes, bytes]:
        """(client's nonce, server's nonce): the order every MAC and key uses."""
        if self.side == "client":
            return self.nonce, peer_nonce
        return peer_nonce, self.nonce


def handshake_timeout(read_timeout: float | None) -> float:
    """The handshake's deadline: HANDSHAKE_TIMEOUT, or the read timeout when shorter."""
    if read_timeout is None:
        return HANDSHAKE_TIMEOUT
    return min(HANDSHAKE_TIMEOUT, read_timeout)


def run_blocking(sock: Any, hs: Handshake, timeout: float) -> SessionKeys:
    """Drive ``hs`` over a blocking socket (or :class:`protocol.tls.TlsSocket`) by a deadline.

    Reads exactly what each record needs, so the frames after it stay in the socket for
    the connection's decoder. Raises the handshake's typed error, or :class:`Timeout`.
    """
    deadline = time.monotonic() + timeout
    readable = select.poll()
    readable.register(sock, select.POLLIN)
    writable = select.poll()
    writable.register(sock, select.POLLOUT)
    buf = bytearray(HEADER_SIZE + 512)
    while True:
        event = hs.next_event()
        _send_all(sock, hs.data_to_send(), writable, deadline)
        if event is not NEED_DATA:
            return event
        with memoryview(buf) as view:
            n = _recv_some(sock, view[: min(hs.wanted, len(buf))], readable, deadline)
        hs.receive_data(bytes(buf[:n]))


def _wait(poller: select.poll, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0 or not poller.poll(math.ceil(left * 1000)):
        raise Timeout("the keyed handshake did not complete in time")


def _send_all(sock: Any, data: bytes, writable: select.poll, deadline: float) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = sock.sendmsg([view], (), socket.MSG_DONTWAIT)
        except BlockingIOError:
            _wait(writable, deadline)
            continue
        view = view[sent:]


def _recv_some(sock: Any, view: memoryview, readable: select.poll, deadline: float) -> int:
    while True:
        pending = getattr(sock, "pending", None)
        if pending is None or not pending():
            _wait(readable, deadline)
        try:
            return sock.recv_into(view, 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return 0
