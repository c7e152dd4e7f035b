"""``Connection``: the wire format over a real socket, one layer above the sans-IO decoder.

What the notebook's sketch got wrong is each a rule here:

* never ``recv(n)`` with ``n`` taken from the peer: bytes go into buffers the decoder sized
  after checking the header against ``max_message``;
* receive into preallocated memory (``recv_into`` on a memoryview), never ``bytes +=``;
* a header and its payload leave in one system call (``sendmsg`` scatter-gather), and
  TCP_NODELAY is on: two small writes meet Nagle plus delayed ACK (tens of ms per round trip);
* a send lock, so two threads never interleave the frames of their messages;
* a socket timeout is a typed :class:`Timeout`; a peer that leaves is a typed
  :class:`ConnectionClosed` (or :class:`Truncated` mid-message), never a loop on ``b""``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Final

from protocol import codecs
from protocol.codecs import DEFAULT_ACCEPT, Codec, Registry
from protocol.errors import ConnectionClosed, Timeout, TransportError
from protocol.framing import (
    CLOSED,
    DEFAULT_MAX_MESSAGE,
    NEED_DATA,
    Chunk,
    FrameDecoder,
    Message,
    frame_count,
    iter_frame_buffers,
    pack_header,
    signed_frame_buffers,
)
from protocol.signing import Signer, check_key

_IOV_MAX: Final = 512  # buffers per sendmsg call; Linux allows 1024
# ...and bytes per call: a stream's frames are batched into few system calls, while the
# memory they pin stays bounded whatever the chunk size.
_BATCH_BYTES: Final = 1024 * 1024
# The default chunk of a stream, from the benchmark curve (docs/benchmarks.md, "Default
# chunk size"): the smallest chunk within 10% of the best streamed throughput.
DEFAULT_STREAM_CHUNK: Final = 256 * 1024


@dataclass(frozen=True, slots=True)
class Sent:
    """What one send put on the wire."""

    frames: int
    wire_bytes: int


@dataclass(frozen=True, slots=True)
class Received:
    """A decoded message and how it travelled."""

    codec: Codec
    obj: Any
    payload: bytearray
    frames: int
    chunk_size: int
    wire_bytes: int


class Connection:
    """Whole messages (``send``/``recv``) and raw byte streams over one socket.

    ``codec`` and ``chunk_size`` (0 = one frame per message) shape what this side sends;
    ``accept`` is the set of codec names it will decode (default: json, msgpack, raw and
    its own codec when that is safe; pickle only when passed explicitly, see
    :func:`protocol.codecs.accept_for`). ``idle_timeout`` bounds the wait for a message to
    start and ``read_timeout`` the wait for each read once one has started, so a peer that
    sends half a header and stalls is dropped without holding a thread forever;
    ``message_timeout`` bounds a whole message from its first byte, so a peer that drips one
    byte per ``read_timeout`` cannot either. With a ``key`` every frame sent is signed and
    every frame received must be (HMAC-SHA256, see :mod:`protocol.signing`).
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        codec: str | Codec = "json",
        chunk_size: int = 0,
        max_message: int = DEFAULT_MAX_MESSAGE,
        accept: Iterable[str] | None = None,
        registry: Registry | None = None,
        idle_timeout: float | None = None,
        read_timeout: float | None = None,
        key: bytes | str | None = None,
        message_timeout: float | None = None,
    ) -> None:
        self._registry = registry or codecs.REGISTRY
        self.codec = codec if isinstance(codec, Codec) else self._registry.get(codec)
        if chunk_size < 0:
            raise ValueError("chunk_size must be >= 0 (0 = unchunked)")
        self.chunk_size = chunk_size
        self.max_message = max_message
        if accept is None:
            accept = DEFAULT_ACCEPT | ({self.codec.name} if self.codec.safe else set())
        self.accept = frozenset(accept)
        self._check = self._registry.accept_checker(self.accept)
        raw_key = check_key(key) if key is not None else None
        self._signer = Signer(raw_key) if raw_key is not None else None
        self.signed = raw_key is not None
        self._decoder = FrameDecoder(max_message=max_message, check_codec=self._check, key=raw_key)
        self.sock = sock
        self.idle_timeout = idle_timeout
        self.read_timeout = read_timeout
        self.message_timeout = message_timeout
        self._deadline: float | None = None
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._current_timeout: float | None = sock.gettimeout()
        self._streaming = False
        self._closed = False
        self.bytes_sent = 0
        self.bytes_received = 0
        self.frames_sent = 0
        self.messages_received = 0
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @classmethod
    def connect(
        cls, host: str, port: int, *, connect_timeout: float | None = 10.0, **kwargs: Any
    ) -> Connection:
        """Open a TCP connection and wrap it."""
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except TimeoutError as exc:
            raise Timeout(f"connecting to {host}:{port} timed out") from exc
        sock.settimeout(None)
        return cls(sock, **kwargs)

    # -- sending -------------------------------------------------------------------------

    def send(
        self, obj: Any, *, codec: str | Codec | None = None, chunk_size: int | None = None
    ) -> Sent:
        """Encode ``obj`` and send it as one message, chunked at ``chunk_size``."""
        use = (
            self.codec
            if codec is None
            else (codec if isinstance(codec, Codec) else self._registry.get(codec))
        )
        return self.send_payload(use.id, use.encode(obj), chunk_size=chunk_size)

    def send_payload(
        self,
        codec_id: int,
        payload: bytes | bytearray | memoryview,
        *,
        chunk_size: int | None = None,
    ) -> Sent:
        """Send already-encoded bytes as one message under ``codec_id``."""
        size = self.chunk_size if chunk_size is None else chunk_size
        if isinstance(payload, memoryview) and payload.format != "B":
            payload = payload.cast("B")
        length = len(payload)
        if self._signer is None and (size <= 0 or length <= size):
            # The common case, one unsigned frame: header and payload in one sendmsg.
            buffers = (
                [pack_header(codec_id, length), payload] if length else [pack_header(codec_id, 0)]
            )
            with self._send_lock:
                return self._write(buffers, 1)
        frames = frame_count(length, size)
        with self._send_lock:
            return self._write(
                iter_frame_buffers(codec_id, payload, size, signer=self._signer), frames
            )

    def send_stream(
        self, source: Iterable[bytes] | IO[bytes], *, chunk_size: int | None = None
    ) -> Sent:
        """Send a raw byte stream as one chunked message, one frame per chunk.

        ``source`` is a binary file (read ``chunk_size`` at a time) or an iterable of bytes
        (each item split at ``chunk_size``). Memory is bounded by the chunk, not the stream.
        The send lock is held throughout, so no other message interleaves.
        """
        size = self.chunk_size if chunk_size is None else chunk_size
        size = size or DEFAULT_STREAM_CHUNK
        pieces = _file_chunks(source, size) if hasattr(source, "read") else _split(source, size)
        raw_id = codecs.get("raw").id
        frames = 0

        def buffers() -> Iterator[bytes | memoryview]:
            nonlocal frames
            pending: bytes | memoryview | None = None
            for piece in pieces:  # one piece of look-ahead: the last frame clears MORE
                if pending is not None:
                    frames += 1
                    yield from self._frame_buffers(raw_id, pending, more=True)
                pending = piece
            frames += 1
            yield from self._frame_buffers(raw_id, b"" if pending is None else pending, more=False)

        with self._send_lock:
            wire = self._write(buffers(), 0).wire_bytes
        self.frames_sent += frames
        return Sent(frames, wire)

    def _frame_buffers(
        self, codec_id: int, data: bytes | bytearray | memoryview, *, more: bool
    ) -> list[bytes | memoryview]:
        """One frame's buffers: header and data, plus the tag when this side signs."""
        if self._signer is not None:
            return signed_frame_buffers(codec_id, data, self._signer, more=more)
        header = pack_header(codec_id, len(data), more=more)
        return [header, data] if len(data) else [header]

    @contextlib.contextmanager
    def open_stream(self, codec_id: int) -> Iterator[StreamWriter]:
        """Hold the send lock and write one message frame by frame (see :class:`StreamWriter`)."""
        with self._send_lock:
            writer = StreamWriter(self, codec_id)
            yield writer
            if not writer.done:
                writer.write(b"", last=True)

    def _write(self, buffers: Iterable[bytes | memoryview], frames: int) -> Sent:
        wire = 0
        batch: list[bytes | memoryview] = []
        batch_bytes = 0
        for buf in buffers:
            batch.append(buf)
            batch_bytes += len(buf)
            if len(batch) >= _IOV_MAX or batch_bytes >= _BATCH_BYTES:
                wire += self._sendmsg_all(batch)
                batch = []
                batch_bytes = 0
        if batch:
            wire += self._sendmsg_all(batch)
        self.frames_sent += frames
        return Sent(frames, wire)

    def _sendmsg_all(self, buffers: list[bytes | memoryview]) -> int:
        """sendmsg until every buffer is out, resuming after partial writes."""
        total = sum(len(b) for b in buffers)
        try:
            sent = self.sock.sendmsg(buffers)
            if sent == total:  # the usual case: the kernel took it all at once
                self.bytes_sent += total
                return total
            views = [memoryview(b) for b in buffers]
            first = _advance(views, 0, sent)
            while first < len(views):
                first = _advance(views, first, self.sock.sendmsg(views[first:]))
        except TimeoutError as exc:
            self._fail()
            raise Timeout("send timed out; the connection is no longer usable") from exc
        except OSError as exc:
            self._fail()
            raise ConnectionClosed(f"send failed: {exc}") from exc
        self.bytes_sent += total
        return total

    # -- receiving -----------------------------------------------------------------------

    def recv(self) -> Any:
        """The next message, decoded. Raises ConnectionClosed when the peer has left cleanly."""
        return self.recv_message().obj

    def recv_message(self) -> Received:
        """The next message with its codec and how it travelled."""
        event = self._next_event(stream=False)
        assert isinstance(event, Message)
        return self._decoded(event)

    def _decoded(self, event: Message) -> Received:
        codec = self._registry.get(event.codec_id)
        obj = codec.decode(event.payload, max_message=self.max_message)
        return Received(codec, obj, event.payload, event.frames, event.chunk_size, event.wire_bytes)

    def recv_stream(self) -> Iterator[bytes]:
        """The next message, chunk by chunk as its frames arrive (memory bounded by a frame)."""
        for chunk in self.recv_chunks():
            yield chunk.data

    def recv_chunks(self) -> Iterator[Chunk]:
        """Like :meth:`recv_stream` but yielding the decoder's :class:`Chunk` events."""
        self._streaming = True
        try:
            while True:
                event = self._next_event(stream=True)
                assert isinstance(event, Chunk)
                yield event
                if event.last:
                    return
        finally:
            self._streaming = False

    def recv_any(self, *, stream_raw: bool = True) -> Received | Iterator[Chunk]:
        """The next message: decoded whole, or, when it is raw and ``stream_raw``, as chunks.

        This is what an echo server wants: it learns the codec at the first header, and
        passes a raw stream on frame by frame instead of buffering it.
        """
        raw_id = 0
        event = self._next_event(stream=(lambda cid: cid == raw_id) if stream_raw else False)
        if isinstance(event, Message):
            return self._decoded(event)
        return self._continue_chunks(event)

    def _continue_chunks(self, first: Chunk) -> Iterator[Chunk]:
        self._streaming = True
        try:
            yield first
            event = first
            while not event.last:
                nxt = self._next_event(stream=True)
                assert isinstance(nxt, Chunk)
                event = nxt
                yield event
        finally:
            self._streaming = False

    def _next_event(self, *, stream: Any) -> Message | Chunk:
        if self._closed:
            raise ConnectionClosed("connection is closed")
        with self._recv_lock:
            decoder = self._decoder
            while True:
                event = decoder.next_event(stream=stream)
                if event is NEED_DATA:
                    self._set_timeout(self._wait_limit(decoder.in_message))
                    self.bytes_received += decoder.read_from(self._recv_into)
                    continue
                if event is CLOSED:
                    raise ConnectionClosed("peer closed the connection")
                if isinstance(event, Message) or (isinstance(event, Chunk) and event.last):
                    self.messages_received += 1
                    self._deadline = None
                return event  # type: ignore[return-value]

    def _wait_limit(self, in_message: bool) -> float | None:
        """The socket timeout for the next read: idle, per read, and the message deadline."""
        if not in_message:
            self._deadline = None
            return self.idle_timeout
        if self.message_timeout is None:
            return self.read_timeout
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self.message_timeout
        left = self._deadline - now
        if left <= 0:
            raise Timeout(f"message not complete within message_timeout={self.message_timeout:g}s")
        return left if self.read_timeout is None else min(self.read_timeout, left)

    def _recv_into(self, view: memoryview) -> int:
        try:
            return self.sock.recv_into(view)
        except TimeoutError as exc:
            what = (
                "in the middle of a message"
                if self._decoder.in_message
                else "waiting for a message"
            )
            raise Timeout(f"receive timed out {what}") from exc
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            return 0  # an abrupt close is still a close; the decoder tells clean from truncated
        except OSError as exc:
            if self._closed:
                return 0
            raise TransportError(f"receive failed: {exc}") from exc

    def _set_timeout(self, value: float | None) -> None:
        if value != self._current_timeout:
            self.sock.settimeout(value)
            self._current_timeout = value

    # -- lifetime ------------------------------------------------------------------------

    def _fail(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def shutdown(self) -> None:
        """Wake any thread blocked in recv (it sees a close) without freeing the socket yet."""
        self._fail()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fail()
        self.sock.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        return self.sock.fileno()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        try:
            peer = "{}:{}".format(*self.sock.getpeername()[:2])
        except OSError:
            peer = "?"
        return f"<Connection {peer} codec={self.codec.name} chunk={self.chunk_size}>"


class StreamWriter:
    """Writes one message frame by frame; :meth:`write` with ``last=True`` ends it."""

    def __init__(self, conn: Connection, codec_id: int) -> None:
        self._conn = conn
        self._codec_id = codec_id
        self.done = False
        self.frames = 0
        self.wire_bytes = 0

    def write(self, data: bytes | bytearray | memoryview, *, last: bool = False) -> None:
        if self.done:
            raise RuntimeError("stream already ended")
        sent = self._conn._write(self._conn._frame_buffers(self._codec_id, data, more=not last), 1)
        self.frames += sent.frames
        self.wire_bytes += sent.wire_bytes
        self.done = last

    @property
    def sent(self) -> Sent:
        return Sent(self.frames, self.wire_bytes)


def _advance(views: list[memoryview], first: int, sent: int) -> int:
    """Drop ``sent`` bytes from the front of ``views[first:]``; returns the new first index."""
    while sent:
        head = len(views[first])
        if sent < head:
            views[first] = views[first][sent:]
            break
        sent -= head
        first += 1
    return first


def _split(pieces: Iterable[bytes], size: int) -> Iterator[bytes | memoryview]:
    for piece in pieces:
        view = memoryview(piece)
        if len(view) <= size:
            if len(view):
                yield view
            continue
        for offset in range(0, len(view), size):
            yield view[offset : offset + size]


def _file_chunks(source: IO[bytes], size: int) -> Iterator[bytes]:
    while True:
        block = source.read(size)
        if not block:
            return
        yield block
