"""A refusal behind unread answers reaches the blocking client as a typed error.

A server that refuses a peer (here: a message over its ``max_message``) first sends the
answers it owed, then its refusal frame, then closes, often with a reset because the
client is still sending. The client's failed send used to fail the whole connection: the
answers in its receive buffer were lost and the reader saw a bare close. Now the reader
gets the answers, then :class:`~protocol.errors.Refused`; the failed send raises it too
when it can see it. Real sockets on loopback; the last test against a real eco process.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from protocol import codecs
from protocol.encoder import encode_message
from protocol.errors import ConnectionClosed, Refused
from protocol.framing import encode_refusal
from protocol.transport import Connection, find_refusal
from roles.eco import Eco
from roles.wire import WireSettings
from tests.procs import running
from tests.test_tls import files

pytestmark = pytest.mark.timeout(60)

TOO_LARGE = 2  # REFUSAL_CODES
BIG = b"x" * (32 << 20)  # more than loopback's buffers take: the send meets the close


@contextlib.contextmanager
def refusing_server(key: bytes | None, answers: int) -> Iterator[tuple[Connection, Any]]:
    """A client connected to a server thread that reads ``answers`` questions, answers each,
    sends a too_large refusal and resets the connection (SO_LINGER 0: unread bytes dropped)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    done = threading.Event()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            sock, _ = listener.accept()
            server = Connection(sock, key=key, side="server", read_timeout=10, idle_timeout=10)
            try:
                for _ in range(answers):
                    server.send({"answer": server.recv()["n"]})
                sock.sendall(encode_refusal(TOO_LARGE, "your message is too large"))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            finally:
                server.close()
        except BaseException as exc:  # the test reports it
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    host, port = listener.getsockname()[:2]
    client = Connection.connect(
        host, port, key=key, read_timeout=10, idle_timeout=10, send_timeout=10
    )
    try:
        yield client, done
    finally:
        client.close()
        listener.close()
        thread.join(10)
    assert not errors, errors


@pytest.mark.parametrize("key", [None, b"clave"], ids=["plain", "signed"])
def test_a_failed_send_leaves_the_answers_then_the_refusal_to_read(key: bytes | None) -> None:
    with refusing_server(key, answers=3) as (client, done):
        for n in range(3):
            client.send({"n": n})
        assert done.wait(10)  # answered, refused and reset
        with pytest.raises(Refused) as on_send:  # found behind the three unread answers
            client.send_payload(0, BIG)
        assert on_send.value.reason == "too_large"
        assert [client.recv() for _ in range(3)] == [{"answer": n} for n in range(3)]
        with pytest.raises(Refused) as on_recv:
            client.recv()
        assert on_recv.value.reason == "too_large" and on_recv.value.permanent
        with pytest.raises(ConnectionClosed):  # nothing more leaves on it
            client.send({"n": 99})


def test_a_reader_thread_gets_the_answers_then_the_refusal_while_a_send_fails() -> None:
    """The Estudiante's shape: one thread sends, another reads (and keeps reading while the
    send fails: failing the sending side must not cut the reader short)."""
    with refusing_server(None, answers=2) as (client, _done):
        got: list[Any] = []

        def read() -> None:
            try:
                while True:
                    got.append(client.recv())
            except Exception as exc:
                got.append(exc)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        client.send({"n": 0})
        client.send({"n": 1})
        # The reader holds the receive side, so the send may not see the refusal itself.
        with pytest.raises((Refused, ConnectionClosed)):
            client.send_payload(0, BIG)
        reader.join(20)
        assert not reader.is_alive()
        assert got[:2] == [{"answer": 0}, {"answer": 1}]
        assert isinstance(got[2], Refused) and got[2].reason == "too_large", got


def test_find_refusal_steps_over_whole_frames_only() -> None:
    answer = encode_message(codecs.get("json").id, b'{"a": 1}')
    refusal = encode_refusal(TOO_LARGE, "no")
    found = find_refusal(answer * 3 + refusal)
    assert found is not None and found.reason == "too_large" and found.text == "no"
    assert find_refusal(answer * 3) is None
    assert find_refusal(answer[:-1] + refusal) is None  # out of step: not a frame header
    assert find_refusal(answer + refusal[:5]) is None


def test_the_eco_answers_then_refuses_and_the_client_reads_both() -> None:
    with (
        running("eco", "--port", "0", "--max-message", "64K", "--log-level", "ERROR") as eco,
        Connection.connect(eco.host, eco.port, read_timeout=10, idle_timeout=10) as c,
    ):
        for n in range(3):
            c.send({"n": n})
        with pytest.raises((Refused, ConnectionClosed)):
            c.send_payload(0, BIG)
        assert [c.recv() for _ in range(3)] == [{"n": n} for n in range(3)]
        with pytest.raises(Refused) as refused:
            c.recv()
        assert refused.value.reason == "too_large"


def test_over_tls_the_failed_send_finds_the_refusal_behind_the_answers(tmp_path) -> None:
    """Over TLS each answer is its own record and one SSL read returns one record, so the
    peek saw the first answer only and the failed send raised a bare close; it looks at
    every record that has arrived now. In-process TLS eco, real sockets."""
    ca = trustme.CA()
    server, client = files(tmp_path, ca, "server", "127.0.0.1"), files(tmp_path, ca, "c", "e")
    wire = WireSettings(tls=server, max_message=64 * 1024)
    with (
        Eco("127.0.0.1", 0, wire=wire) as eco,
        WireSettings(tls=client, read_timeout=10).connect(*eco.address) as c,
    ):
        for n in range(3):
            c.send({"n": n})
        with pytest.raises(Refused) as on_send:
            c.send_payload(0, BIG)
        assert on_send.value.reason == "too_large"
        assert [c.recv() for _ in range(3)] == [{"n": n} for n in range(3)]
        with pytest.raises(Refused):
            c.recv()
