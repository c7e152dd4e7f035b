"""The receiving ends of the transport benchmarks, each in its own process.

Every server binds 127.0.0.1 on a free port, answers each received message with a one-byte
acknowledgement, and runs in a spawned process so sender and receiver each have their own
interpreter lock and core, as two programs on one machine would. A round trip is therefore
"send the message, the peer receives (and decodes) all of it, the sender gets the ack".

Kinds:

* ``baseline``: a plain socket doing the work ayudantia's raw receive does and no more: per
  message the client sends an 8-byte size and the bytes in one ``sendmsg``, and the server
  reads the size, allocates a fresh buffer of that size and ``recv_into`` it.
* ``ayudantia``: :class:`protocol.transport.Connection`. The client's first message is a
  JSON control ``{"mode": ...}``: ``whole`` (``recv_message``, decoded), ``stream``
  (``recv_stream``, chunks dropped as they come), or ``mem-whole``/``mem-stream``, which
  measure the receiver's peak memory and send it back as JSON instead of the ack.
* ``mpconn``: ``multiprocessing.connection`` ``recv_bytes``/``send_bytes``.
* ``zmq``: a pyzmq REP socket.
"""

from __future__ import annotations

import contextlib
import gc
import json
import multiprocessing
import multiprocessing.connection
import os
import socket
import struct
import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

ACK = b"k"
SIZE = struct.Struct(">Q")


# --- memory probes -----------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def measure_peak() -> Iterator[dict[str, Any]]:
    """Peak extra memory of the block: tracemalloc's and the RSS high-water mark's."""
    result: dict[str, Any] = {}
    gc.collect()
    can_rss = _reset_peak_rss()
    rss_before = _status_kib("VmRSS") if can_rss else None
    tracemalloc.start()
    tracemalloc.reset_peak()
    traced_before = tracemalloc.get_traced_memory()[0]
    try:
        yield result
    finally:
        # The caller keeps what it received alive until here, so it counts in the peak.
        result["peak_bytes"] = tracemalloc.get_traced_memory()[1] - traced_before
        tracemalloc.stop()
        hwm = _status_kib("VmHWM") if can_rss else None
        result["rss_peak_bytes"] = (
            hwm - rss_before if hwm is not None and rss_before is not None else None
        )


# --- handlers ----------------------------------------------------------------------------------


def _recv_exact_into(sock: socket.socket, view: memoryview) -> bool:
    got, size = 0, len(view)
    while got < size:
        n = sock.recv_into(view[got:])
        if not n:
            return False
        got += n
    return True


def _handle_baseline(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head = bytearray(SIZE.size)
    while _recv_exact_into(sock, memoryview(head)):
        (size,) = SIZE.unpack(head)
        message = bytearray(size)  # a fresh buffer per message, as ayudantia's receiver
        if not _recv_exact_into(sock, memoryview(message)):
            return
        sock.sendall(ACK)


def _handle_ayudantia(sock: socket.socket) -> None:
    from protocol import codecs
    from protocol.errors import ConnectionClosed
    from protocol.transport import Connection

    conn = Connection(sock, codec="json", accept=codecs.available())
    try:
        mode = conn.recv()["mode"]
        raw_id = codecs.get("raw").id
        while True:
            if mode == "whole":
                conn.recv_message()
                conn.send_payload(raw_id, ACK)
            elif mode == "stream":
                for _chunk in conn.recv_stream():
                    pass
                conn.send_payload(raw_id, ACK)
            elif mode == "mem-whole":
                with measure_peak() as peak:
                    received = conn.recv_message()
                    peak["payload_bytes"] = len(received.payload)
                del received
                conn.send(peak, codec="json")
            elif mode == "mem-stream":
                with measure_peak() as peak:
                    total = 0
                    for chunk in conn.recv_stream():
                        total += len(chunk)
                    peak["payload_bytes"] = total
                conn.send(peak, codec="json")
            else:
                raise ValueError(f"unknown mode {mode!r}")
    except ConnectionClosed:
        pass
    finally:
        conn.close()


def _handle_mpconn(conn: multiprocessing.connection.Connection) -> None:
    try:
        while True:
            conn.recv_bytes()
            conn.send_bytes(ACK)
    except (EOFError, OSError):
        pass
    finally:
        conn.close()


def _serve_socket(kind: str, ready: Any) -> None:
    handler = {"baseline": _handle_baseline, "ayudantia": _handle_ayudantia}[kind]
    with socket.create_server(("127.0.0.1", 0)) as server:
        ready.send(server.getsockname()[1])
        while True:
            sock, _ = server.accept()
            threading.Thread(target=_guarded, args=(handler, sock), daemon=True).start()


def _guarded(handler: Any, sock: socket.socket) -> None:
    with contextlib.suppress(OSError), sock:
        handler(sock)


def _serve_mpconn(ready: Any) -> None:
    with multiprocessing.connection.Listener(("127.0.0.1", 0)) as listener:
        ready.send(listener.address[1])
        while True:
            conn = listener.accept()
            threading.Thread(target=_handle_mpconn, args=(conn,), daemon=True).start()


def _serve_zmq(ready: Any) -> None:
    import zmq

    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    ready.send(port)
    while True:
        rep.recv(copy=False)
        rep.send(ACK)


def _duo_round_baseline(sock: socket.socket, head: bytearray) -> bool:
    if not _recv_exact_into(sock, memoryview(head)):
        return False
    (size,) = SIZE.unpack(head)
    if not _recv_exact_into(sock, memoryview(bytearray(size))):
        return False
    sock.sendall(ACK)
    return True


def _serve_duo(other: str, ready: Any) -> None:
    """ayudantia and ``other`` (baseline or mpconn) served by ONE thread of one process,
    one round at a time, whichever connection asks: both sides of a paired figure then
    share every placement the scheduler makes. With two peer processes each was placed on
    its own, and an unpinned small round trip read 1.1x or 3x by where each one woke (65 us
    across cores against 21 us on the client's), not by what either protocol costs."""
    import selectors

    from protocol import codecs
    from protocol.errors import ConnectionClosed
    from protocol.header import HEADER
    from protocol.transport import Connection

    ours = socket.create_server(("127.0.0.1", 0))
    if other == "mpconn":
        theirs: Any = multiprocessing.connection.Listener(("127.0.0.1", 0))
        their_port = theirs.address[1]
    else:
        theirs = socket.create_server(("127.0.0.1", 0))
        their_port = theirs.getsockname()[1]
    ready.send([ours.getsockname()[1], their_port])
    head = bytearray(SIZE.size)
    while True:  # one pair of connections per session, the client opens ours first
        sock, _ = ours.accept()
        if other == "mpconn":
            peer: Any = theirs.accept()
        else:
            peer, _ = theirs.accept()
            peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ, "ours")
            sel.register(peer.fileno(), selectors.EVENT_READ, "theirs")
            try:
                # The mode frame read byte-exact, before any Connection: a Connection's
                # read could take the first request with it into its buffer, where the
                # selector would never see it. Afterwards the client sends one message
                # and waits for its ack, so nothing is ever left buffered between rounds.
                head_bytes = bytearray(HEADER.size)
                if not _recv_exact_into(sock, memoryview(head_bytes)):
                    raise EOFError
                mode = bytearray(HEADER.unpack(head_bytes)[-1])
                if not _recv_exact_into(sock, memoryview(mode)) or json.loads(mode) != {
                    "mode": "whole"
                }:
                    raise EOFError
                conn = Connection(sock, codec="json", accept=codecs.available())
                # Each side's round is written out here, its names looked up once, as a
                # server would: a per-round ``from protocol import codecs`` and registry
                # lookup (in a helper) cost ayudantia's side 6k instructions a round that
                # multiprocessing's inline ``recv_bytes``/``send_bytes`` did not pay.
                raw_id = codecs.get("raw").id
                while True:
                    for key, _events in sel.select():
                        if key.data == "ours":
                            conn.recv_message()
                            conn.send_payload(raw_id, ACK)
                        elif other == "mpconn":
                            peer.recv_bytes()
                            peer.send_bytes(ACK)
                        elif not _duo_round_baseline(peer, head):
                            raise EOFError
            except (ConnectionClosed, EOFError, OSError):
                pass
            finally:
                sock.close()
                peer.close()


def serve(kind: str, ready: Any) -> None:
    """Process entry point: start the server and send its port through ``ready`` (a list of
    ports for a ``duo-*`` peer: ayudantia's, then the other's)."""
    try:
        if kind == "mpconn":
            _serve_mpconn(ready)
        elif kind == "zmq":
            _serve_zmq(ready)
        elif kind.startswith("duo-"):
            _serve_duo(kind.removeprefix("duo-"), ready)
        else:
            _serve_socket(kind, ready)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            ready.send(f"{type(exc).__name__}: {exc}")
        raise


@contextlib.contextmanager
def _environment(extra: dict[str, str]) -> Iterator[None]:
    """``extra`` in os.environ for the duration (a spawned child inherits it)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Server:
    """A peer process; use as a context manager. ``port`` is where it listens; ``env`` is
    added to its environment (for glibc's malloc settings, say)."""

    def __init__(self, kind: str, env: dict[str, str] | None = None) -> None:
        self.kind = kind
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=serve, args=(kind, child), daemon=True)
        with _environment(env or {}):
            self.process.start()
        child.close()
        if not parent.poll(60):
            self.close()
            raise RuntimeError(f"{kind} server did not start within 60 s")
        answer = parent.recv()
        parent.close()
        ports = answer if isinstance(answer, list) else [answer]
        if not all(isinstance(p, int) for p in ports):
            self.close()
            raise RuntimeError(f"{kind} server failed: {answer}")
        self.ports: list[int] = ports
        self.port: int = ports[0]

    def close(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- clients -----------------------------------------------------------------------------------


def _sendmsg_all(sock: socket.socket, parts: list[bytes]) -> None:
    views = [memoryview(p) for p in parts]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views.pop(0))
        if sent:
            views[0] = views[0][sent:]


class BaselineClient:
    """A size and the bytes in one sendmsg, then a one-byte ack, over a plain TCP socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._ack = bytearray(1)

    def round_trip(self, payload: bytes) -> None:
        _sendmsg_all(self.sock, [SIZE.pack(len(payload)), payload])
        if not self.sock.recv_into(self._ack):
            raise ConnectionError("baseline server closed")

    def close(self) -> None:
        self.sock.close()


class MpConnClient:
    def __init__(self, port: int) -> None:
        self.conn = multiprocessing.connection.Client(("127.0.0.1", port))

    def round_trip(self, payload: bytes) -> None:
        self.conn.send_bytes(payload)
        self.conn.recv_bytes()

    def close(self) -> None:
        self.conn.close()


class ZmqClient:
    def __init__(self, port: int) -> None:
        import zmq

        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def round_trip(self, payload: bytes) -> None:
        self.sock.send(payload, copy=False)
        self.sock.recv(copy=False)

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def ayudantia_client(port: int, mode: str, **kwargs: Any) -> Any:
    """A Connection to the ayudantia server, already told its ``mode``."""
    from protocol.transport import Connection

    conn = Connection.connect("127.0.0.1", port, **kwargs)
    conn.send({"mode": mode}, codec="json")
    return conn


def mem_result(conn: Any) -> dict[str, Any]:
    return json.loads(bytes(conn.recv_message().payload))


def peer_client(kind: str, port: int) -> Any:
    """The client of a peer ``kind`` (baseline, mpconn or zmq): ``round_trip(payload)``."""
    clients = {"baseline": BaselineClient, "mpconn": MpConnClient, "zmq": ZmqClient}
    return clients[kind](port)


class AyudantiaClient:
    """A Connection in ``whole`` mode with a ``round_trip(obj)`` like the peers' clients."""

    def __init__(self, port: int, codec: str = "raw", chunk_size: int = 0) -> None:
        self.conn = ayudantia_client(port, "whole", codec=codec)
        self.chunk_size = chunk_size

    def round_trip(self, obj: Any) -> Any:
        sent = self.conn.send(obj, chunk_size=self.chunk_size)
        self.conn.recv_message()
        return sent

    def close(self) -> None:
        self.conn.close()
