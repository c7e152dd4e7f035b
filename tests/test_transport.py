"""Connection over real sockets: socketpair for most tests, loopback TCP for a few."""

from __future__ import annotations

import contextlib
import io
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol import codecs
from protocol.codecs import DEFAULT_ACCEPT, Codec, Registry
from protocol.errors import (
    ConnectionClosed,
    ContentDisallowed,
    MessageTooLarge,
    Timeout,
    Truncated,
)
from protocol.framing import HEADER_SIZE, encode_message, frame_count, pack_header
from protocol.transport import Connection


class Worker:
    """A thread whose result or exception the test collects with :meth:`result`."""

    def __init__(self, target: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(target, args, kwargs), daemon=True)
        self.thread.start()

    def _run(self, target: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        try:
            self._value = target(*args, **kwargs)
        except BaseException as exc:
            self._error = exc

    def result(self, timeout: float = 30.0) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker thread did not finish"
        if self._error is not None:
            raise self._error
        return self._value


class Harness:
    """Makes connections and threads, and closes every one of them, pass or fail."""

    def __init__(self) -> None:
        self._closers: list[Callable[[], None]] = []
        self._workers: list[Worker] = []

    def pair(self, a: dict | None = None, b: dict | None = None) -> tuple[Connection, Connection]:
        s1, s2 = socket.socketpair()
        self._closers += [s1.close, s2.close]
        return self._wrap(s1, a), self._wrap(s2, b)

    def raw_pair(self, b: dict | None = None) -> tuple[socket.socket, Connection]:
        """A bare socket to write arbitrary bytes with, and the Connection that reads them."""
        s1, s2 = socket.socketpair()
        self._closers += [s1.close, s2.close]
        return s1, self._wrap(s2, b)

    def tcp_pair(
        self, a: dict | None = None, b: dict | None = None
    ) -> tuple[Connection, Connection]:
        listener = socket.create_server(("127.0.0.1", 0))
        self._closers.append(listener.close)
        listener.settimeout(10)
        host, port = listener.getsockname()[:2]
        client = Connection.connect(host, port, **(a or {}))
        self._closers.append(client.close)
        server_sock, _ = listener.accept()
        self._closers.append(server_sock.close)
        return client, self._wrap(server_sock, b)

    def _wrap(self, sock: socket.socket, kwargs: dict | None) -> Connection:
        conn = Connection(sock, **(kwargs or {}))
        self._closers.append(conn.close)
        return conn

    def spawn(self, target: Callable[..., Any], *args: Any, **kwargs: Any) -> Worker:
        worker = Worker(target, *args, **kwargs)
        self._workers.append(worker)
        return worker

    def close(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(OSError):
                close()
        for worker in self._workers:
            worker.thread.join(10)


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    try:
        yield h
    finally:
        h.close()


def object_for(codec: str, message: dict) -> Any:
    return message["Texto"].encode("utf-8") if codec == "raw" else message


# --- whole messages --------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [0, 1, 7, 50, 4096])
@pytest.mark.parametrize("codec", ["raw", "json", "msgpack", "pickle"])
def test_send_recv_per_codec(
    harness: Harness, codec: str, chunk: int, notebook_message: dict
) -> None:
    accept = DEFAULT_ACCEPT | {"pickle"} if codec == "pickle" else None
    a, b = harness.pair({"codec": codec, "chunk_size": chunk}, {"accept": accept})
    obj = object_for(codec, notebook_message)
    payload_size = len(codecs.get(codec).encode(obj))
    frames = frame_count(payload_size, chunk)

    sent = a.send(obj)
    assert sent.frames == frames
    assert sent.wire_bytes == frames * HEADER_SIZE + payload_size
    got = b.recv_message()
    assert got.obj == obj
    assert got.codec.name == codec
    assert got.frames == frames
    assert got.chunk_size == (chunk if frames > 1 else 0)
    assert got.wire_bytes == sent.wire_bytes
    assert bytes(got.payload) == codecs.get(codec).encode(obj)
    assert a.bytes_sent == b.bytes_received == sent.wire_bytes
    assert b.messages_received == 1


def test_per_call_codec_and_chunk_override(harness: Harness, notebook_message: dict) -> None:
    a, b = harness.pair({"codec": "json"})
    a.send(notebook_message, codec="msgpack", chunk_size=9)
    a.send(notebook_message)
    a.send_payload(0, b"crudo", chunk_size=2)
    first, second, third = b.recv_message(), b.recv_message(), b.recv_message()
    assert (first.codec.name, first.frames, first.obj) == ("msgpack", 13, notebook_message)
    assert (second.codec.name, second.frames, second.obj) == ("json", 1, notebook_message)
    assert (third.codec.name, third.frames, third.obj) == ("raw", 3, b"crudo")


def test_large_message_both_ways(harness: Harness) -> None:
    a, b = harness.pair({"codec": "msgpack", "chunk_size": 65536}, {"codec": "msgpack"})
    big = {"data": random.Random(1).randbytes(3_000_000), "n": list(range(1000))}
    sender = harness.spawn(a.send, big)
    assert b.recv() == big
    sender.result()
    sender = harness.spawn(b.send, big)
    assert a.recv() == big
    sender.result()


def test_plugin_codec_over_a_connection(harness: Harness) -> None:
    registry = Registry()
    upper = registry.register(
        Codec(
            "upper",
            100,
            "text/x-upper",
            True,
            lambda s: s.upper().encode(),
            lambda b, _m: bytes(b).decode(),
        )
    )
    a, b = harness.pair(
        {"codec": upper, "registry": registry}, {"codec": "upper", "registry": registry}
    )
    assert "upper" in b.accept
    a.send("dulcinea")
    got = b.recv_message()
    assert (got.obj, got.codec.id) == ("DULCINEA", 100)


# --- streams ---------------------------------------------------------------------------

STREAM_DATA = random.Random(7).randbytes(300_001)


def _collect_stream(conn: Connection) -> list[bytes]:
    return [bytes(chunk) for chunk in conn.recv_stream()]


@pytest.mark.parametrize("chunk", [1000, 4096, 65536])
def test_send_stream_from_a_file(harness: Harness, tmp_path: Path, chunk: int) -> None:
    path = tmp_path / "libro.bin"
    path.write_bytes(STREAM_DATA)
    a, b = harness.pair()
    with path.open("rb") as source:
        sender = harness.spawn(a.send_stream, source, chunk_size=chunk)
        chunks = _collect_stream(b)
        sent = sender.result()
    assert b"".join(chunks) == STREAM_DATA
    assert all(len(c) <= chunk for c in chunks)
    assert len(chunks) == sent.frames >= -(-len(STREAM_DATA) // chunk)
    assert b.messages_received == 1


def test_send_stream_from_bytesio_uses_connection_chunk_size(harness: Harness) -> None:
    a, b = harness.pair({"chunk_size": 5000})
    sender = harness.spawn(a.send_stream, io.BytesIO(STREAM_DATA))
    chunks = _collect_stream(b)
    sender.result()
    assert b"".join(chunks) == STREAM_DATA
    assert max(len(c) for c in chunks) == 5000


def test_send_stream_from_an_iterable(harness: Harness) -> None:
    rng = random.Random(3)
    pieces = [rng.randbytes(rng.choice([0, 1, 10, 999, 5000, 20000])) for _ in range(60)]
    pieces.append(b"")
    a, b = harness.pair()
    sender = harness.spawn(a.send_stream, iter(pieces), chunk_size=4096)
    chunks = list(b.recv_chunks())
    sender.result()
    assert b"".join(c.data for c in chunks) == b"".join(pieces)
    assert all(len(c.data) <= 4096 for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert all(c.codec_id == 0 for c in chunks)


@pytest.mark.parametrize("source", [[], [b""], io.BytesIO(b"")])
def test_empty_stream(harness: Harness, source: Any) -> None:
    a, b = harness.pair()
    a.send_stream(source)
    assert _collect_stream(b) == [b""]


def test_stream_then_message_then_whole_read_of_a_stream(harness: Harness) -> None:
    a, b = harness.pair()
    sender = harness.spawn(
        lambda: (
            a.send_stream([STREAM_DATA], chunk_size=10000),
            a.send({"after": True}),
            a.send_stream([STREAM_DATA[:25000]], chunk_size=10000),
        )
    )
    assert b"".join(_collect_stream(b)) == STREAM_DATA
    assert b.recv() == {"after": True}
    whole = b.recv_message()  # a streamed raw message can also be read whole
    assert (whole.obj, whole.frames, whole.chunk_size) == (STREAM_DATA[:25000], 3, 10000)
    sender.result()


def test_recv_any_streams_raw_and_decodes_the_rest(harness: Harness) -> None:
    a, b = harness.pair()
    a.send_payload(0, b"abcdefghij", chunk_size=4)
    a.send([1, 2, 3])
    first = b.recv_any()
    assert not hasattr(first, "obj")
    assert [bytes(c.data) for c in first] == [b"abcd", b"efgh", b"ij"]
    second = b.recv_any()
    assert second.obj == [1, 2, 3]


# --- concurrency -----------------------------------------------------------------------


def test_two_threads_never_interleave(harness: Harness) -> None:
    # Small chunks: a long message needs more than one sendmsg (at most 512 buffers each),
    # so without the send lock the other thread's frames would land in between.
    a, b = harness.pair({"chunk_size": 100})
    n = 200
    sizes = random.Random(11).choices(range(0, 60_000), k=n)

    def send_many(name: str, codec: str) -> None:
        for i, size in enumerate(sizes):
            a.send({"from": name, "i": i, "pad": name * size}, codec=codec)

    senders = [harness.spawn(send_many, "a", "json"), harness.spawn(send_many, "b", "msgpack")]
    seen = {"a": [], "b": []}
    for _ in range(2 * n):
        got = b.recv_message()
        obj = got.obj
        assert got.codec.name == ("json" if obj["from"] == "a" else "msgpack")
        assert obj["pad"] == obj["from"] * sizes[obj["i"]]
        seen[obj["from"]].append(obj["i"])
    for s in senders:
        s.result()
    assert seen == {"a": list(range(n)), "b": list(range(n))}


# --- close, truncation, timeouts -------------------------------------------------------


def test_peer_close_between_messages(harness: Harness) -> None:
    a, b = harness.pair()
    a.send({"last": "words"})
    a.close()
    assert b.recv() == {"last": "words"}
    with pytest.raises(ConnectionClosed):
        b.recv()
    with pytest.raises(ConnectionClosed):
        b.recv()


def test_close_before_any_message(harness: Harness) -> None:
    a, b = harness.pair()
    a.close()
    with pytest.raises(ConnectionClosed):
        b.recv()


def test_recv_on_a_closed_connection(harness: Harness) -> None:
    _a, b = harness.pair()
    b.close()
    assert b.closed
    with pytest.raises(ConnectionClosed):
        b.recv()


def test_send_to_a_closed_peer(harness: Harness) -> None:
    a, b = harness.pair()
    b.close()
    with pytest.raises(ConnectionClosed):
        for _ in range(100):  # the first sends may still land in the kernel buffer
            a.send({"x": "y" * 10000})


def test_close_wakes_a_blocked_receiver(harness: Harness) -> None:
    _a, b = harness.pair()
    receiver = harness.spawn(b.recv)
    time.sleep(0.05)
    b.shutdown()
    with pytest.raises(ConnectionClosed):
        receiver.result(5)


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda w: w[:5], id="mid-header"),
        pytest.param(lambda w: w[:30], id="mid-payload"),
        pytest.param(lambda w: w[: HEADER_SIZE + 10], id="between-frames"),
    ],
)
def test_peer_close_mid_message(harness: Harness, cut: Callable[[bytes], bytes]) -> None:
    raw, b = harness.raw_pair({"read_timeout": 10})
    wire = encode_message(1, b'{"texto":"En un lugar de la Mancha"}', 10)
    raw.sendall(encode_message(1, b"{}") + cut(wire))
    raw.close()
    assert b.recv() == {}
    with pytest.raises(Truncated):
        b.recv()
    with pytest.raises(Truncated):  # sticky
        b.recv()


def test_read_timeout_mid_message(harness: Harness) -> None:
    raw, b = harness.raw_pair({"read_timeout": 0.2, "idle_timeout": 30})
    raw.sendall(pack_header(1, 100)[:5])
    start = time.monotonic()
    with pytest.raises(Timeout) as info:
        b.recv()
    assert 0.15 < time.monotonic() - start < 5
    assert "middle of a message" in str(info.value)


def test_read_timeout_mid_payload(harness: Harness) -> None:
    raw, b = harness.raw_pair({"read_timeout": 0.2, "idle_timeout": 30})
    raw.sendall(pack_header(1, 100) + b"[1,")
    with pytest.raises(Timeout):
        b.recv()


def test_idle_timeout(harness: Harness) -> None:
    a, b = harness.pair(b={"idle_timeout": 0.2, "read_timeout": 30})
    start = time.monotonic()
    with pytest.raises(Timeout) as info:
        b.recv()
    assert 0.15 < time.monotonic() - start < 5
    assert "waiting for a message" in str(info.value)
    # nothing was lost: the connection still works after an idle timeout
    a.send({"late": True})
    assert b.recv() == {"late": True}


# --- refusals --------------------------------------------------------------------------


def test_pickle_refused_by_a_default_connection(harness: Harness) -> None:
    a, b = harness.pair({"codec": "pickle"}, {"read_timeout": 10})
    assert "pickle" not in b.accept
    a.send({"a": {1, 2}})
    with pytest.raises(ContentDisallowed) as info:
        b.recv()
    assert info.value.codec == "pickle"
    with pytest.raises(ContentDisallowed):  # sticky
        b.recv()


def test_pickle_refused_before_its_payload(harness: Harness) -> None:
    raw, b = harness.raw_pair({"read_timeout": 10})
    raw.sendall(pack_header(2, 1_000_000))  # the header alone: waiting would time out
    start = time.monotonic()
    with pytest.raises(ContentDisallowed):
        b.recv()
    assert time.monotonic() - start < 5


def test_pickle_accepted_on_opt_in(harness: Harness) -> None:
    a, b = harness.pair({"codec": "pickle"}, {"accept": codecs.accept_for("pickle", warn=False)})
    a.send({"a": {1, 2}})
    assert b.recv() == {"a": {1, 2}}


def test_pickle_connection_does_not_accept_pickle_implicitly(harness: Harness) -> None:
    a, b = harness.pair({"codec": "json"}, {"codec": "pickle"})
    assert "pickle" not in b.accept
    b.send({"x": 1}, codec="json")
    assert a.recv() == {"x": 1}
    a.send_payload(2, codecs.get("pickle").encode({"x": 1}))
    with pytest.raises(ContentDisallowed):
        b.recv()


# --- real TCP --------------------------------------------------------------------------


def test_tcp_round_trip(harness: Harness, notebook_message: dict) -> None:
    client, server = harness.tcp_pair({"codec": "msgpack", "chunk_size": 16}, {"codec": "json"})
    for conn in (client, server):
        assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    client.send(notebook_message)
    got = server.recv_message()
    assert (got.obj, got.codec.name, got.chunk_size) == (notebook_message, "msgpack", 16)
    server.send(got.obj)
    assert client.recv() == notebook_message
    assert "codec=msgpack" in repr(client)
    client.close()
    with pytest.raises(ConnectionClosed):
        server.recv()


def test_tcp_huge_header_is_refused(harness: Harness) -> None:
    client, server = harness.tcp_pair(b={"read_timeout": 10})
    client.sock.sendall(pack_header(1, 0xFFFFFFFF))
    with pytest.raises(MessageTooLarge) as info:
        server.recv()
    assert info.value.size == 0xFFFFFFFF


def test_tcp_running_total_over_max_message(harness: Harness) -> None:
    client, server = harness.tcp_pair(b={"max_message": 1000, "read_timeout": 10})
    sender = harness.spawn(client.send_payload, 0, b"x" * 5000, chunk_size=300)
    with pytest.raises(MessageTooLarge) as info:
        server.recv()
    assert (info.value.size, info.value.limit) == (1200, 1000)
    server.close()
    with contextlib.suppress(ConnectionClosed):
        sender.result()


def test_connect_refused() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(OSError):
        Connection.connect("127.0.0.1", port, connect_timeout=2)
