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
    CodecChanged,
    ConnectionClosed,
    ConnectionFailed,
    ContentDisallowed,
    MessageTooLarge,
    Refused,
    Timeout,
    Truncated,
)
from protocol.framing import (
    HEADER_SIZE,
    encode_message,
    frame_count,
    iter_frame_buffers,
    pack_header,
)
from protocol.transport import Connection, Received


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
        first, second = self._wrap(s1, a), self._wrap(s2, b)
        if first.signed:  # the keyed handshake needs both ends at once, as two processes
            peer = threading.Thread(target=second.handshake)
            peer.start()
            first.handshake()
            peer.join(10)
        return first, second

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


# --- issue 15, defect 5: a broken-off stream never splices into the next message ---------


def _broken_source(*pieces: bytes) -> Iterator[bytes]:
    yield from pieces
    raise RuntimeError("the source broke")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("key", [None, b"clave"], ids=["plain", "signed"])
def test_defect_5_failed_send_stream_fails_the_connection(harness: Harness, key: Any) -> None:
    """Defect 5: frames already sent with MORE never become the head of the next message."""
    sides = ({"key": key, "side": "client"}, {"key": key, "side": "server", "read_timeout": 10})
    a, b = harness.pair(*sides) if key else harness.pair(None, {"read_timeout": 10})
    block = b"a" * (1 << 20)  # a whole batch, so frames really leave before the source breaks
    sender = harness.spawn(a.send_stream, _broken_source(block, block, block), chunk_size=1 << 20)
    with pytest.raises(Truncated):  # the peer sees the message end in the middle
        b.recv_message()
    with pytest.raises(RuntimeError, match="the source broke"):
        sender.result()
    assert a.failed and "broke off" in a.failed
    with pytest.raises(ConnectionFailed):  # ...and nothing more is ever sent on it
        a.send_payload(0, b"XYZ")
    with pytest.raises(ConnectionFailed):
        a.recv()


@pytest.mark.parametrize("key", [None, b"clave"], ids=["plain", "signed"])
def test_defect_5_source_failing_before_any_frame_leaves_keeps_the_link(
    harness: Harness, key: Any
) -> None:
    """Defect 5: nothing left, nothing to splice; a signer's counter is put back."""
    sides = ({"key": key, "side": "client"}, {"key": key, "side": "server", "read_timeout": 5})
    a, b = harness.pair(*sides) if key else harness.pair(None, {"read_timeout": 5})
    with pytest.raises(RuntimeError):
        a.send_stream(_broken_source(b"abc", b"def"), chunk_size=2)
    assert a.failed is None
    a.send({"despues": True})
    assert b.recv() == {"despues": True}  # verifies: the frame counter did not drift


@pytest.mark.timeout(30)
def test_defect_5_open_stream_left_by_an_exception_fails_the_connection(harness: Harness) -> None:
    """Defect 5: the same for a message written frame by frame with open_stream."""
    a, b = harness.pair(None, {"read_timeout": 10})
    with pytest.raises(RuntimeError), a.open_stream(0) as out:
        out.write(b"primera parte")
        raise RuntimeError("the handler broke")
    with pytest.raises(Truncated):
        b.recv()
    with pytest.raises(ConnectionFailed):
        a.send_payload(0, b"XYZ")


def test_open_stream_left_before_any_frame_keeps_the_link(harness: Harness) -> None:
    a, b = harness.pair(None, {"read_timeout": 5})
    with pytest.raises(RuntimeError), a.open_stream(0):
        raise RuntimeError("nothing written yet")
    a.send([1])
    assert b.recv() == [1]


# --- issue 15, defect 6: a negative chunk size is an error, not an empty frame -----------


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c: c.send_stream([b"hello world"], chunk_size=-1), id="send_stream"),
        pytest.param(lambda c: c.send({"a": 1}, chunk_size=-1), id="send"),
        pytest.param(lambda c: c.send_payload(0, b"hello", chunk_size=-5), id="send_payload"),
    ],
)
def test_defect_6_negative_chunk_size_is_refused(
    harness: Harness, call: Callable[[Connection], Any]
) -> None:
    """Defect 6: ValueError, and not a byte on the wire."""
    a, b = harness.pair(None, {"read_timeout": 5})
    with pytest.raises(ValueError, match="chunk_size"):
        call(a)
    a.send_payload(0, b"only this")
    got = b.recv_message()
    assert (bytes(got.payload), got.frames) == (b"only this", 1)


def test_defect_6_negative_chunk_size_in_the_sans_io_encoder() -> None:
    """Defect 6: the framing functions refuse it too, at the call, not lazily."""
    with pytest.raises(ValueError):
        encode_message(0, b"hello world", -1)
    with pytest.raises(ValueError):
        iter_frame_buffers(0, b"hello world", -1)
    with pytest.raises(ValueError):
        frame_count(11, -1)
    with pytest.raises(ValueError):
        Connection(socket.socketpair()[0], chunk_size=-1)


# --- issue 15, defect 10: an abandoned stream fails the connection -----------------------


def test_defect_10_closed_stream_generator_fails_the_connection(harness: Harness) -> None:
    """Defect 10: the next recv raises a typed error, not AssertionError."""
    a, b = harness.pair(None, {"read_timeout": 5})
    a.send_payload(0, b"x" * 100, chunk_size=10)
    a.send({"next": 1})
    chunks = b.recv_chunks()
    assert bytes(next(chunks).data) == b"x" * 10
    chunks.close()  # the reader gives up after one frame
    with pytest.raises(ConnectionFailed, match="abandoned"):
        b.recv()


def test_defect_10_unfinished_recv_any_then_recv(harness: Harness) -> None:
    """Defect 10: reading whole while a streamed message is half read is a typed error."""
    a, b = harness.pair(None, {"read_timeout": 5})
    a.send_payload(0, b"y" * 30, chunk_size=10)
    pending = b.recv_any()  # a raw message: chunks, not started
    assert not isinstance(pending, Received)
    with pytest.raises(ConnectionFailed):
        b.recv()


@pytest.mark.timeout(30)
def test_defect_10_timeout_mid_stream_fails_the_connection(harness: Harness) -> None:
    """Defect 10: a Timeout in the middle of a stream leaves no half-read message behind."""
    raw, b = harness.raw_pair({"read_timeout": 0.2})
    raw.sendall(encode_message(0, b"z" * 20, 10)[: HEADER_SIZE + 10])  # frame 1 of 2
    chunks = b.recv_chunks()
    assert bytes(next(chunks).data) == b"z" * 10
    with pytest.raises(Timeout):
        next(chunks)
    with contextlib.suppress(OSError):  # the failed side has shut its socket
        raw.sendall(
            encode_message(0, b"z" * 20, 10)[HEADER_SIZE + 10 :] + encode_message(1, b"[1]")
        )
    with pytest.raises(ConnectionFailed):
        b.recv()


def test_defect_10_no_assert_statements_in_the_protocol() -> None:
    """Defect 10: under ``python -O`` an assert vanishes; control flow must not rely on one."""
    import ast

    for module in ("framing", "transport", "signing", "codecs", "safepickle", "handshake", "tls"):
        source = Path(__file__).resolve().parents[1] / "protocol" / f"{module}.py"
        tree = ast.parse(source.read_text(encoding="utf-8"))
        assert not [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assert)], module


# --- send deadline (issue 15 "also check", issue 16 item 3) ------------------------------


@pytest.mark.timeout(30)
def test_send_timeout_bounds_a_peer_that_never_reads(harness: Harness) -> None:
    """A peer that never reads cannot hold a sender: Timeout, then the link is failed."""
    raw, a = harness.raw_pair({"send_timeout": 0.3})
    reader = harness.spawn(a.recv)  # a reader waiting with no limit, as a client's would
    start = time.monotonic()
    with pytest.raises(Timeout):
        a.send_payload(0, b"x" * (16 << 20))  # far beyond any socket buffer
    assert time.monotonic() - start < 10
    with pytest.raises(ConnectionFailed, match="send timed out"):
        a.send_payload(0, b"more")
    a.close()
    with contextlib.suppress(ConnectionClosed):
        reader.result(5)
    raw.close()


@pytest.mark.timeout(30)
def test_send_timeout_is_independent_of_the_receive_timeouts(harness: Harness) -> None:
    """A reader waiting with no limit does not lift the send deadline, nor the reverse."""
    a, b = harness.pair({"send_timeout": 5, "idle_timeout": None}, {"idle_timeout": 0.2})
    reader = harness.spawn(a.recv)  # blocks with no limit while we send
    a.send({"hola": 1})
    assert b.recv() == {"hola": 1}
    with pytest.raises(Timeout):
        b.recv()  # b's idle limit still applies
    b.send({"ok": True})
    assert reader.result(5) == {"ok": True}


@pytest.mark.timeout(60)
def test_close_racing_a_receiver_with_timeouts_is_always_typed(harness: Harness) -> None:
    """Close while another thread loops on timed receives: only ConnectionClosed, no OSError."""
    for _ in range(30):
        _a, b = harness.pair(None, {"idle_timeout": 0.001})

        def spin(conn: Connection = b) -> None:
            while True:
                with contextlib.suppress(Timeout):
                    conn.recv()

        receiver = harness.spawn(spin)
        time.sleep(0.005)
        b.close()
        with pytest.raises(ConnectionClosed):
            receiver.result(5)


# --- refusal frames (issue 16, "Refusals travel") --------------------------------------


def test_refused_codec_reaches_the_client(harness: Harness) -> None:
    client, server = harness.pair({"codec": "pickle"}, {"read_timeout": 5})
    client.send({"a": 1})
    with pytest.raises(ContentDisallowed) as info:
        server.recv()
    assert server.refuse(info.value) is True
    assert server.closed
    with pytest.raises(Refused) as refused:
        client.recv()
    assert (refused.value.reason, refused.value.permanent) == ("codec", True)
    assert refused.value.text == "this server accepts json, msgpack, raw; not pickle"


@pytest.mark.timeout(30)
def test_refused_too_large_reaches_a_client_still_sending(harness: Harness) -> None:
    """The server refuses at the header and closes while the client is mid-send."""
    client, server = harness.tcp_pair(None, {"max_message": 1 << 20, "read_timeout": 5})

    def serve() -> bool:
        try:
            server.recv()
        except MessageTooLarge as exc:
            return server.refuse(exc)
        return False

    refuser = harness.spawn(serve)
    with pytest.raises(Refused) as info:
        try:
            client.send_payload(0, b"x" * (32 << 20))
        except Refused:
            raise
        else:
            client.recv()
    assert refuser.result(10) is True
    assert info.value.reason == "too_large"
    assert f"exceeds max_message={1 << 20}" in info.value.text


def test_refuse_sends_nothing_for_errors_without_a_refusal(harness: Harness) -> None:
    client, server = harness.pair(None, {"read_timeout": 5})
    assert server.refuse(Truncated("gone")) is False
    with pytest.raises(ConnectionClosed) as info:
        client.recv()
    assert not isinstance(info.value, Refused)


def test_refuse_never_interrupts_a_message_being_sent(harness: Harness) -> None:
    a, b = harness.pair(None, {"read_timeout": 5})
    with pytest.raises(ConnectionClosed), a.open_stream(0) as out:
        out.write(b"half")
        assert a.refuse(MessageTooLarge(10, 5)) is False  # mid-message: close without it
    with pytest.raises(Truncated):
        b.recv()


def test_protocol_error_mid_stream_still_allows_a_refusal(harness: Harness) -> None:
    """A decoder error in a stream is sticky on its own: the link stays free for a refusal."""
    client, server = harness.pair(None, {"read_timeout": 5})
    # a raw frame announcing more, then a json frame: the codec changes inside the message
    client.sock.sendall(pack_header(0, 3, more=True) + b"abc" + pack_header(1, 2) + b"{}")
    with pytest.raises(CodecChanged) as info:
        for _ in server.recv_chunks():
            pass
    with pytest.raises(CodecChanged):  # sticky, not ConnectionFailed
        server.recv()
    assert server.refuse(info.value) is True
    with pytest.raises(Refused) as refused:
        client.recv()
    assert refused.value.reason == "malformed"
