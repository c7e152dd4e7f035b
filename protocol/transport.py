"""``Connection``: the wire format over a real socket, one layer above the sans-IO decoder.

What the notebook's sketch got wrong is each a rule here:

* never ``recv(n)`` with ``n`` taken from the peer: bytes go into buffers the decoder sized
  after checking the header against ``max_message``;
* receive into preallocated memory (``recv_into`` on a memoryview), never ``bytes +=``;
* a header and its payload leave in one system call (``sendmsg`` scatter-gather), and
  TCP_NODELAY is on: two small writes meet Nagle plus delayed ACK (tens of ms per round trip);
* a send lock, so two threads never interleave the frames of their messages;
* each direction waits on its own deadline (``poll``), never on one shared socket
  timeout: a reader idling between messages neither lifts nor shortens a sender's limit,
  and no ``settimeout`` can race a ``close``;
* an expired wait is a typed :class:`Timeout`; a peer that leaves is a typed
  :class:`ConnectionClosed` (or :class:`Truncated` mid-message), never a loop on ``b""``;
* a message that cannot be finished (its source failed, its reader gave up, its send
  timed out) fails the connection (:class:`ConnectionFailed`), so it never splices into
  the next one.
"""

from __future__ import annotations

import contextlib
import functools
import math
import select
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from types import EllipsisType
from typing import IO, Any, Final

from protocol import codecs
from protocol.codecs import DEFAULT_ACCEPT, RAW, Codec, Registry
from protocol.encoder import plan_message
from protocol.encodings import Compression
from protocol.errors import (
    AyudantiaError,
    ConnectionClosed,
    ConnectionFailed,
    Refused,
    Timeout,
    TransportError,
)
from protocol.framing import (
    CLOSED,
    DEFAULT_MAX_MESSAGE,
    HEADER_SIZE,
    MAX_FRAME_PAYLOAD,
    NEED_DATA,
    VERSION,
    Chunk,
    FrameDecoder,
    Message,
    check_chunk_size,
    frame_buffers,
    frame_count,
    iter_frame_buffers,
    pack_header,
    refusal_frame,
)
from protocol.handshake import Handshake, handshake_timeout, run_blocking
from protocol.header import FLAG_REFUSAL, HEADER, MAGIC
from protocol.messages import Received, Sent
from protocol.signing import Side, Signer, check_key, check_side, signer_for
from protocol.streams import (
    DEFAULT_STREAM_CHUNK as DEFAULT_STREAM_CHUNK,  # re-exported: its old home
)
from protocol.streams import (
    StreamWriter,
    stream_chunk_size,
    stream_frames,
    stream_pieces,
)

_IOV_MAX: Final = 512  # buffers per sendmsg call; Linux allows 1024
# ...and bytes per call: a stream's frames are batched into few system calls, while the
# memory they pin stays bounded whatever the chunk size.
_BATCH_BYTES: Final = 1024 * 1024
# A refusal is a courtesy: it never holds a server for long.
REFUSAL_SEND_TIMEOUT: Final = 1.0
_REFUSAL_DRAIN_SECONDS: Final = 0.25  # read what the peer was still sending, so close sends FIN
_REFUSAL_DRAIN_BYTES: Final = 256 * 1024
_DONTWAIT: Final = socket.MSG_DONTWAIT
_new: Final = tuple.__new__
# How far past unread answers a failed send looks for the peer's refusal frame.
_PEEK_BYTES: Final = 256 * 1024


def _setting(name: str, doc: str) -> property:
    """A public setting of :class:`Connection` that the fast paths depend on: assigning it
    (as users and tests do, between calls) re-decides them (``_settings_changed``)."""
    attr = "_" + name

    def get(self: Connection) -> Any:
        return getattr(self, attr)

    def set(self: Connection, value: Any) -> None:
        setattr(self, attr, value)
        self._settings_changed()

    return property(get, set, doc=doc)


class Connection:
    """Whole messages (``send``/``recv``) and raw byte streams over one socket.

    ``codec`` and ``chunk_size`` (0 = one frame per message) shape what this side sends;
    ``accept`` is the set of codec names it will decode (default: json, msgpack, raw and
    its own codec when that is safe; pickle only when passed explicitly, see
    :func:`protocol.codecs.accept_for`). ``idle_timeout`` bounds the wait for a message to
    start and ``read_timeout`` the wait for each read once one has started, so a peer that
    sends half a header and stalls is dropped without holding a thread forever;
    ``message_timeout`` bounds a whole message from its first byte, so a peer that drips one
    byte per ``read_timeout`` cannot either. ``send_timeout`` bounds each whole send call
    (lock wait included), independently of the receive timeouts, so a peer that never reads
    cannot hold a sender forever; a send that times out fails the connection. ``None``
    means no limit for each of them.

    With a ``key`` every frame sent is signed and every frame received must be
    (HMAC-SHA256, see :mod:`protocol.signing`), and ``side`` is required: "client" for the
    end that connected (:meth:`connect` passes it), "server" for the end that accepted.
    Each tag is bound to its direction, so a frame reflected back to its sender does not
    verify (:class:`ReflectedFrame`, which also names two ends that claim the same side).

    The socket is the Connection's: it is put in blocking mode and never given a timeout
    again; every wait is a ``poll`` on this connection's own per-direction deadline.
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
        send_timeout: float | None = None,
        side: Side | None = None,
        compression: Compression | None = None,
    ) -> None:
        self._registry = registry or codecs.REGISTRY
        self._compression = compression  # what every frame sent is compressed with (property)
        self.codec = codec if isinstance(codec, Codec) else self._registry.get(codec)
        self.chunk_size = check_chunk_size(chunk_size)
        self.max_message = max_message
        if accept is None:
            accept = DEFAULT_ACCEPT | ({self.codec.name} if self.codec.safe else set())
        self.accept = frozenset(accept)
        self._check = self._registry.accept_checker(self.accept)
        self._accepted: dict[int, Codec] = {}  # ids the decoder accepted, by _accept
        raw_key = check_key(key) if key is not None else None
        self.side: Side | None = None if side is None else check_side(side)
        self._signer = signer_for(raw_key, self.side)
        self.signed = raw_key is not None
        self._decoder = FrameDecoder(
            max_message=max_message, check_codec=self._check, key=raw_key, side=side or "server"
        )
        # With a key, the keyed handshake runs before the first frame either way (see
        # :meth:`handshake`): frames are signed with that connection's own keys.
        self._handshake = None if raw_key is None else Handshake(raw_key, self.side)  # type: ignore[arg-type]
        self._hs_lock = threading.Lock()
        self._tls_pending = getattr(sock, "pending", None)
        self.sock = sock
        # Bound once: the fast paths call them for every small message.
        self._sendmsg = sock.sendmsg
        self._sock_recv_into = sock.recv_into
        self._idle_timeout = idle_timeout
        self._read_timeout = read_timeout
        self._message_timeout = message_timeout
        self._send_timeout = send_timeout
        self._deadline: float | None = None  # the current incoming message's
        self._send_deadline: float | None = None  # the current send call's (under the lock)
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._closed = False
        self._failure: str | None = None
        # The peer closed while we sent: nothing more can leave, but what it sent before
        # (answers, then perhaps the refusal that says why) is still ours to read.
        self._send_failure: str | None = None
        self._wire_out = 0  # bytes the kernel took in _write's calls, to tell a message broke off
        self.bytes_sent = 0
        self.bytes_received = 0
        self.frames_sent = 0
        self.messages_received = 0
        sock.settimeout(None)
        # One poll object per direction: a reader and a sender wait at the same time.
        self._readable = select.poll()
        self._readable.register(sock, select.POLLIN)
        self._writable = select.poll()
        self._writable.register(sock, select.POLLOUT)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._plain_send = self._plain_recv = False
        self._unlimited = True
        self._settings_changed()

    def _settings_changed(self) -> None:
        """Decide again which fast paths this connection's settings allow.

        A small message goes the short way only when nothing about the connection asks for
        more: no handshake to run, no signer, and no compression for a send; its deadlines
        (the send timeout, the receive limits) it keeps, and without any receive limit it
        reads with the socket's own ``recv_into``. These change only when a setting is
        assigned (the properties below) or the handshake ends, so they are decided then, not
        tested one by one per message. Failure and close are still tested per message.
        """
        configured = self._handshake is None and self._signer is None
        self._plain_send = configured and self._compression is None
        self._plain_recv = configured
        # ...and with no receive limit, a read may block in the socket's own recv_into.
        self._unlimited = (
            self._idle_timeout is None
            and self._read_timeout is None
            and self._message_timeout is None
        )

    compression = _setting(
        "compression", "what every frame sent is compressed with (None: identity)"
    )
    idle_timeout = _setting(
        "idle_timeout", "the longest wait for a message to start (None: no limit)"
    )
    read_timeout = _setting("read_timeout", "the longest wait for each read within a message")
    message_timeout = _setting(
        "message_timeout", "the longest a whole message may take from its first byte"
    )
    send_timeout = _setting(
        "send_timeout", "the longest a whole send call may take, lock wait included"
    )

    @classmethod
    def connect(
        cls, host: str, port: int, *, connect_timeout: float | None = 10.0, **kwargs: Any
    ) -> Connection:
        """Open a TCP connection and wrap it (as the client side, unless ``side`` says)."""
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except TimeoutError as exc:
            raise Timeout(f"connecting to {host}:{port} timed out") from exc
        kwargs.setdefault("side", "client")
        return cls(sock, **kwargs)

    # -- the keyed handshake -------------------------------------------------------------

    def handshake(self) -> None:
        """Run the keyed handshake now; it otherwise runs at the first send or receive.

        A no-op without a key or once done. Both ends must run it at once (a peer in
        another thread or process). Its failure is typed (see :mod:`protocol.handshake`)
        and fails the connection.
        """
        if self._handshake is None:
            return
        with self._hs_lock:
            hs = self._handshake
            if hs is None:
                return
            self._check_usable()
            try:
                keys = run_blocking(self.sock, hs, handshake_timeout(self._read_timeout))
            except AyudantiaError as exc:
                self._fail(f"keyed handshake: {exc}")
                raise
            finally:
                self.bytes_sent += hs.bytes_out
                self.bytes_received += hs.bytes_in
            self._signer = Signer(keys.send, side=hs.side)
            self._decoder = FrameDecoder(
                max_message=self.max_message, check_codec=self._check, key=keys.recv, side=hs.side
            )
            self._handshake = None
            self._settings_changed()

    # -- sending -------------------------------------------------------------------------

    def send(
        self, obj: Any, *, codec: str | Codec | None = None, chunk_size: int | None = None
    ) -> Sent:
        """Encode ``obj`` and send it as one message, chunked at ``chunk_size``.

        Raw ``bytes`` are their own encoding (raw's encode hands them back as they are), so
        for them the two calls of an encode are skipped: a small round trip felt them.
        """
        use = (
            self.codec
            if codec is None
            else (codec if isinstance(codec, Codec) else self._registry.get(codec))
        )
        payload = obj if use is RAW and type(obj) is bytes else use.encode(obj)
        return self.send_payload(use.id, payload, chunk_size=chunk_size)

    def send_payload(
        self,
        codec_id: int,
        payload: bytes | bytearray | memoryview,
        *,
        chunk_size: int | None = None,
        compression: Compression | EllipsisType | None = ...,
    ) -> Sent:
        """Send already-encoded bytes as one message under ``codec_id``.

        ``compression`` overrides the connection's for this message (None: identity).
        """
        kind = type(payload)
        if (
            (kind is bytes or kind is bytearray)
            and self._plain_send
            and (compression is ... or compression is None)
            and self._failure is None
            and not self._closed
            and self._send_failure is None
        ):
            # The common case, one plain frame: resolved here without plan_message (what it
            # would conclude for bytes, without compression or a signer), and sent as
            # _send_frame would, written out: small messages are dominated by per-call work.
            length = len(payload)
            size = self.chunk_size if chunk_size is None else chunk_size
            if (size == 0 or length <= size) and length <= MAX_FRAME_PAYLOAD:
                header = HEADER.pack(MAGIC, VERSION, codec_id, 0, 0, length)
                buffers = [header, payload] if length else [header]
                total = HEADER_SIZE + length
                lock = self._send_lock
                if self._send_timeout is None:
                    lock.acquire()
                    self._send_deadline = None
                else:
                    self._begin_send()  # the lock within send_timeout, and the deadline
                try:
                    try:
                        if self._send_deadline is None:
                            sent = self._sendmsg(buffers)
                        else:  # never block past the deadline: _send_rest waits for it
                            sent = self._sendmsg(buffers, (), _DONTWAIT)
                    except BlockingIOError:
                        sent = 0
                    except OSError as exc:
                        raise self._send_failed(exc) from exc
                    if sent != total:  # (_wire_out counts for _write, which is not in this)
                        self._send_rest(buffers, sent)
                    self.bytes_sent += total
                finally:
                    lock.release()
                self.frames_sent += 1
                done = _ONE_FRAME.get(total)
                return done if done is not None else _one_frame(total)
        if self._handshake is not None:
            self.handshake()
        if isinstance(payload, memoryview) and payload.format != "B":
            payload = payload.cast("B")
        length = len(payload)
        size, compress, single = plan_message(
            length,
            chunk_size=chunk_size,
            default_chunk=self.chunk_size,
            compression=compression,
            default_compression=self._compression,
            signer=self._signer,
        )
        if single:
            header = pack_header(codec_id, length)
            return self._send_frame([header, payload] if length else [header], HEADER_SIZE + length)
        frames = frame_count(length, size)
        with self._sending():
            buffers = iter_frame_buffers(
                codec_id, payload, size, signer=self._signer, compression=compress
            )
            return self._write(buffers, frames)

    def send_stream(
        self, source: Iterable[bytes] | IO[bytes], *, chunk_size: int | None = None
    ) -> Sent:
        """Send a raw byte stream as one chunked message, one frame per chunk.

        ``source`` is a binary file (read ``chunk_size`` at a time) or an iterable of bytes
        (each item split at ``chunk_size``). Memory is bounded by the chunk, not the stream.
        The send lock is held throughout, so no other message interleaves; ``send_timeout``
        bounds the whole stream. If the source raises once a frame has left, the message
        can never be finished: the connection is failed (the peer sees it end mid-message,
        :class:`Truncated`; every later call here raises :class:`ConnectionFailed`) and the
        source's exception propagates. Its frames never join the next message.
        """
        if self._handshake is not None:
            self.handshake()
        size = stream_chunk_size(chunk_size, self.chunk_size)
        raw_id = codecs.get("raw").id
        frames = [0]

        def frame(data: bytes | memoryview, more: bool) -> list[bytes | memoryview]:
            return self._frame_buffers(raw_id, data, more=more)

        with self._sending():
            buffers = stream_frames(stream_pieces(source, size), frame, frames)
            wire = self._write(buffers, 0).wire_bytes
        self.frames_sent += frames[0]
        return Sent(frames[0], wire)

    def _frame_buffers(
        self, codec_id: int, data: bytes | bytearray | memoryview, *, more: bool
    ) -> list[bytes | memoryview]:
        """One frame's buffers: header and data (compressed), plus the tag when this side signs."""
        return frame_buffers(
            codec_id, data, more=more, signer=self._signer, compression=self._compression
        )

    @contextlib.contextmanager
    def open_stream(self, codec_id: int) -> Iterator[StreamWriter]:
        """Hold the send lock and write one message frame by frame (see :class:`StreamWriter`).

        Leaving the block normally ends the message (an empty last frame if needed).
        Leaving it with an exception after a frame has left fails the connection, as
        :meth:`send_stream` does: half a message never splices into the next one.
        """
        if self._handshake is not None:
            self.handshake()
        with self._sending():
            writer = StreamWriter(functools.partial(self._stream_frame, codec_id))
            try:
                yield writer
            except BaseException:
                if writer.frames and not writer.done:
                    self._fail(f"a stream was abandoned after {writer.frames} frames")
                raise
            if not writer.done:
                writer.write(b"", last=True)

    def _stream_frame(
        self, codec_id: int, data: bytes | bytearray | memoryview, more: bool
    ) -> Sent:
        """One frame of an open stream, bounded by ``send_timeout`` on its own."""
        if self._send_timeout is not None:
            self._send_deadline = time.monotonic() + self._send_timeout
        return self._write(self._frame_buffers(codec_id, data, more=more), 1)

    def _send_frame(self, buffers: list[bytes | bytearray | memoryview], total: int) -> Sent:
        """One unsigned frame's buffers in one ``sendmsg``, under the send lock.

        Small messages are dominated by per-call overhead, so without a ``send_timeout``
        this is the lock, one system call and the counters, with no generator, batching,
        context manager or deadline in between; a partial write resumes as any other.
        """
        if (
            self._send_timeout is not None
            or self._failure is not None
            or self._closed
            or self._send_failure is not None
        ):
            self._begin_send()  # a deadline to set, or the error to raise
        else:
            self._send_lock.acquire()
            self._send_deadline = None
        try:
            flags = 0 if self._send_deadline is None else _DONTWAIT
            try:
                sent = self.sock.sendmsg(buffers, (), flags)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise self._send_failed(exc) from exc
            self._wire_out += sent
            if sent != total:
                self._send_rest(buffers, sent)
            self.bytes_sent += total
        finally:
            self._send_lock.release()
        self.frames_sent += 1
        return _new(Sent, (1, total))  # Sent(1, total), without the generated __new__

    def _begin_send(self) -> None:
        """Take the send lock within ``send_timeout`` and set this call's send deadline."""
        if self._failure is not None or self._closed or self._send_failure is not None:
            self._check_sendable()
        timeout = self._send_timeout
        if timeout is None:
            self._send_lock.acquire()
            self._send_deadline = None
            return
        deadline = time.monotonic() + timeout
        if not self._send_lock.acquire(timeout=timeout):
            raise Timeout(
                f"send not started within send_timeout={timeout:g}s: "
                "another send on this connection is stuck"
            )
        self._send_deadline = deadline

    @contextlib.contextmanager
    def _sending(self) -> Iterator[None]:
        """:meth:`_begin_send` as a context: the lock is released however the send ends."""
        self._begin_send()
        try:
            yield
        finally:
            self._send_lock.release()

    def _write(self, buffers: Iterable[bytes | memoryview], frames: int) -> Sent:
        """Send ``buffers`` in batches; anything that stops it after a byte left fails the link."""
        self._check_sendable()
        out_before = self._wire_out
        seq_before = self._signer.seq if self._signer is not None else 0
        wire = 0
        batch: list[bytes | memoryview] = []
        batch_bytes = 0
        try:
            for buf in buffers:
                batch.append(buf)
                batch_bytes += len(buf)
                if len(batch) >= _IOV_MAX or batch_bytes >= _BATCH_BYTES:
                    wire += self._sendmsg_all(batch)
                    batch = []
                    batch_bytes = 0
            if batch:
                wire += self._sendmsg_all(batch)
        except BaseException as exc:
            if self._wire_out != out_before:
                self._fail(f"a message broke off after {self._wire_out - out_before} bytes: {exc}")
            elif self._signer is not None:
                self._signer.seq = seq_before  # nothing left: the tags built were never seen
            raise
        self.frames_sent += frames
        return Sent(frames, wire)

    def _sendmsg_all(self, buffers: list[bytes | memoryview]) -> int:
        """sendmsg until every buffer is out, resuming after partial writes, by the deadline."""
        total = sum(map(len, buffers))
        try:  # without a deadline the kernel may block: one call for any size, as it should
            sent = self.sock.sendmsg(buffers, (), 0 if self._send_deadline is None else _DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise self._send_failed(exc) from exc
        self._wire_out += sent
        if sent != total:  # the usual case is one call: the kernel took it all at once
            self._send_rest(buffers, sent)
        self.bytes_sent += total
        return total

    def _send_rest(self, buffers: list[bytes | memoryview], sent: int) -> None:
        """Resume a partial write: wait until writable (by the send deadline), send more."""
        views = [memoryview(b) for b in buffers]
        first = _advance(views, 0, sent)
        deadline = self._send_deadline
        try:
            while first < len(views):
                if deadline is None:  # no limit: let the kernel block (close still wakes it)
                    sent = self.sock.sendmsg(views[first:])
                else:
                    self._wait(self._writable, deadline, "send")
                    try:
                        sent = self.sock.sendmsg(views[first:], (), _DONTWAIT)
                    except BlockingIOError:
                        continue
                self._wire_out += sent
                first = _advance(views, first, sent)
        except Timeout:
            self._fail(f"send timed out (send_timeout={self._send_timeout:g}s)")
            raise
        except OSError as exc:
            raise self._send_failed(exc) from exc
        except BaseException:
            self._fail("a send was interrupted in the middle of a message")
            raise

    def _send_failed(self, exc: OSError) -> AyudantiaError:
        """The error for a socket that refused our bytes: the peer's refusal when it sent one.

        A peer that closed (a broken pipe, a reset) fails the sending side only: what it
        sent before closing stays readable, so a reader still gets the answers it was owed
        and then the peer's :class:`Refused` (the reason), not a bare close. Any other
        socket error fails the whole connection.
        """
        reason = f"send failed: {exc}"
        if isinstance(exc, BrokenPipeError | ConnectionResetError) and self._failure is None:
            if self._send_failure is None:
                self._send_failure = f"connection failed: {reason}"
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
        else:
            self._fail(reason)
        refused = self._peek_refusal()
        if refused is not None:  # the peer said why before it closed: that is the news
            return refused
        return ConnectionClosed(reason)

    def _peek_refusal(self) -> Refused | None:
        """A refusal frame waiting in the receive buffer, read without consuming anything.

        A server that refuses a large message closes while the client is still sending,
        so the client learns of it as a failed send; the refusal is already here, perhaps
        behind answers nobody has read yet: whole frames are stepped over (by their
        headers, up to ``_PEEK_BYTES``) to find it.
        """
        decoder = self._decoder
        if decoder.in_message or not self._recv_lock.acquire(blocking=False):
            return None
        try:
            peeked = self.sock.recv(_PEEK_BYTES, socket.MSG_PEEK | _DONTWAIT)
        except OSError:
            return None
        finally:
            self._recv_lock.release()
        return find_refusal(peeked)

    def _wait(self, poller: select.poll, deadline: float | None, what: str) -> None:
        """Block until ``poller`` reports the socket ready, or raise Timeout at ``deadline``."""
        if deadline is None:
            poller.poll()
            return
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(math.ceil(left * 1000)):
            raise Timeout(f"{what} timed out")

    # -- refusing ------------------------------------------------------------------------

    def refuse(self, exc: AyudantiaError) -> bool:
        """Tell the peer why it is refused (one refusal frame), then close; True if sent.

        Sent only for the header errors :func:`protocol.framing.refusal_for` maps, and only
        when this side is not in the middle of sending a message; within
        ``REFUSAL_SEND_TIMEOUT``. The frame carries our own words, never the peer's bytes.
        """
        frame = refusal_frame(exc)
        sent = False
        try:
            if frame is not None and not self._closed and self._failure is None:
                sent = self._send_refusal(frame)
        finally:
            self.close()
        return sent

    def _send_refusal(self, frame: bytes) -> bool:
        if not self._send_lock.acquire(blocking=False):  # mid-message: no refusal fits
            return False
        try:
            limit = REFUSAL_SEND_TIMEOUT
            if self._send_timeout is not None:
                limit = min(limit, self._send_timeout)
            self._send_deadline = time.monotonic() + limit
            self._sendmsg_all([frame])
        except AyudantiaError:
            return False
        finally:
            self._send_lock.release()
        self._drain_after_refusal()
        return True

    def _drain_after_refusal(self) -> None:
        """Half-close, then read what the peer was still sending, for a moment.

        Closing a socket with unread data sends a reset, and a reset can destroy the
        refusal in the peer's receive buffer before it reads it. Bounded in time and bytes;
        a Timeout (an OSError) or any socket error only ends the courtesy early.
        """
        deadline = time.monotonic() + _REFUSAL_DRAIN_SECONDS
        scratch = bytearray(65536)
        drained = 0
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
            while drained < _REFUSAL_DRAIN_BYTES:
                self._wait(self._readable, deadline, "drain")
                n = self.sock.recv_into(scratch, 0, _DONTWAIT)
                if not n:
                    break
                drained += n

    # -- receiving -----------------------------------------------------------------------

    def recv(self) -> Any:
        """The next message, decoded. Raises ConnectionClosed when the peer has left cleanly."""
        return self.recv_message().obj

    def recv_message(self) -> Received:
        """The next message with its codec and how it travelled."""
        if self._plain_recv and self._failure is None and not self._closed:
            # A small message's usual case in one step: one read (by the idle limit, or in
            # the socket's own recv_into without one), one whole frame (see
            # FrameDecoder.read_message).
            lock = self._recv_lock
            lock.acquire()
            try:
                decoder = self._decoder
                try:
                    n, codec, payload = decoder.read_message(
                        self._sock_recv_into if self._unlimited else self._recv_into
                    )
                except Timeout:  # _recv_into's: typed already
                    raise
                except OSError as exc:  # what _recv_into makes of it: a close, or raised
                    n, codec, payload = self._recv_failed(exc), None, None
                    decoder.eof_received()
                self.bytes_received += n
                if payload is not None:
                    self.messages_received += 1
            finally:
                lock.release()
            if payload is not None:  # codec: what self._check, the decoder's, answered
                # What Received.decoded makes of a one-frame message without encoding,
                # built here rather than in a call: a raw payload is its own object (raw's
                # decode hands a bytearray over as it is), anything else is decoded.
                obj = (
                    payload if codec is RAW else codec.decode(payload, max_message=self.max_message)
                )
                return _new(Received, (codec, obj, payload, 1, 0, HEADER_SIZE + len(payload), 0))
        event = self._next_event(stream=False)
        if type(event) is not Message:
            raise self._fail("recv() while a streamed message was still being read")
        return self._decoded(event)

    def _decoded(self, event: Message) -> Received:
        codec = self._accepted.get(event.codec_id) or self._accept(event.codec_id)
        return Received.decoded(codec, event, self.max_message)

    def _accept(self, codec_id: int) -> Codec:
        """The codec of an id the decoder has accepted, remembered: one dict lookup a message."""
        codec = self._accepted[codec_id] = self._check(codec_id)
        return codec

    def recv_stream(self) -> Iterator[bytes]:
        """The next message, chunk by chunk as its frames arrive (memory bounded by a frame)."""
        for chunk in self.recv_chunks():
            yield chunk.data

    def recv_chunks(self) -> Iterator[Chunk]:
        """Like :meth:`recv_stream` but yielding the decoder's :class:`Chunk` events.

        A stream must be read to its last chunk: closing the generator early, or a Timeout
        in the middle, fails the connection (:class:`ConnectionFailed` from then on),
        since the rest of that message would otherwise be read as the next one.
        """
        return self._chunks(None)

    def recv_any(self, *, stream_raw: bool = True) -> Received | Iterator[Chunk]:
        """The next message: decoded whole, or, when it is raw and ``stream_raw``, as chunks.

        This is what an echo server wants: it learns the codec at the first header, and
        passes a raw stream on frame by frame instead of buffering it. The chunks follow
        the rule of :meth:`recv_chunks`.
        """
        raw_id = 0
        event = self._next_event(stream=(lambda cid: cid == raw_id) if stream_raw else False)
        if isinstance(event, Message):
            return self._decoded(event)
        return self._chunks(event)

    def _chunks(self, first: Chunk | None) -> Iterator[Chunk]:
        finished = False
        try:
            event = first
            while event is None or not event.last:
                if event is not None:
                    yield event
                event = self._next_event(stream=True)
                if not isinstance(event, Chunk):
                    raise self._fail("a stream read was interleaved with a whole-message read")
            finished = True
            yield event
        finally:
            # A decoder error is sticky already (and leaves the link free for a refusal);
            # anything else, a closed generator or a Timeout, would leave half a message.
            decoder = self._decoder
            if not finished and decoder.in_message and decoder.error is None:
                self._fail("a streamed message was abandoned before its last frame")

    def _next_event(self, *, stream: Any) -> Message | Chunk:
        if self._handshake is not None:
            self.handshake()
        if self._failure is not None or self._closed:
            self._check_usable()
        with self._recv_lock:
            decoder = self._decoder
            event = decoder.next_event(stream=stream)
            if event is NEED_DATA and self._unlimited:
                # No limit on any wait, so every read may block in the kernel (a close still
                # wakes it): the socket's own recv_into, with no Python frame around each
                # read; its errors mean what they mean in _recv_into.
                recv = self._sock_recv_into
                while event is NEED_DATA:
                    try:
                        n = decoder.read_from(recv)
                    except OSError as exc:
                        n = self._recv_failed(exc)
                        decoder.eof_received()
                    self.bytes_received += n
                    event = decoder.next_event(stream=stream)
            while event is NEED_DATA:
                self.bytes_received += decoder.read_from(self._recv_into)
                event = decoder.next_event(stream=stream)
            if event is CLOSED:
                raise ConnectionClosed("peer closed the connection")
            if type(event) is Message or event.last:  # type: ignore[union-attr]  # else a Chunk
                self.messages_received += 1
                self._deadline = None
            return event  # type: ignore[return-value]

    def _wait_limit(self, in_message: bool) -> float | None:
        """How long the next read may wait: idle, per read, and the message deadline."""
        if not in_message:
            self._deadline = None
            return self._idle_timeout
        if self._message_timeout is None:
            return self._read_timeout
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self._message_timeout
        left = self._deadline - now
        if left <= 0:
            raise Timeout(f"message not complete within message_timeout={self._message_timeout:g}s")
        return left if self._read_timeout is None else min(self._read_timeout, left)

    def _recv_failed(self, exc: OSError) -> int:
        """A socket error on a read: 0 (a close) for an abrupt close, else TransportError."""
        if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
            return 0  # an abrupt close is still a close; the decoder tells clean from truncated
        if self._closed:
            return 0
        raise TransportError(f"receive failed: {exc}") from exc

    def _recv_into(self, view: bytearray | memoryview) -> int:
        in_message = self._decoder.in_message
        limit = self._wait_limit(in_message)
        try:
            if limit is None:
                return self.sock.recv_into(view)
            deadline = time.monotonic() + limit
            # Between messages the next one is rarely here yet: wait first (unless TLS holds
            # decrypted bytes the socket's poll cannot see: protocol.tls.TlsSocket.pending).
            if not in_message and not (self._tls_pending and self._tls_pending()):
                self._wait(self._readable, deadline, "receive")
            while True:
                try:
                    return self.sock.recv_into(view, 0, _DONTWAIT)
                except BlockingIOError:
                    self._wait(self._readable, deadline, "receive")
        except Timeout as exc:
            what = "in the middle of a message" if in_message else "waiting for a message"
            raise Timeout(f"receive timed out {what}") from exc
        except OSError as exc:
            return self._recv_failed(exc)

    # -- lifetime ------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise ConnectionFailed(self._failure)
        if self._closed:
            raise ConnectionClosed("connection is closed")

    def _check_sendable(self) -> None:
        """:meth:`_check_usable`, and the peer has not closed on one of our sends."""
        self._check_usable()
        if self._send_failure is not None:
            raise ConnectionFailed(self._send_failure)

    def _fail(self, reason: str) -> ConnectionFailed:
        """Make the connection unusable (the first reason sticks) and wake its users."""
        if self._failure is None:
            self._failure = f"connection failed: {reason}"
        self._shutdown_socket()
        return ConnectionFailed(self._failure)

    def _shutdown_socket(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def shutdown(self) -> None:
        """Wake any thread blocked in recv (it sees a close) without freeing the socket yet."""
        self._shutdown_socket()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._shutdown_socket()
        self.sock.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def failed(self) -> str | None:
        """Why this side failed the connection (or its sending side), or None."""
        return self._failure or self._send_failure

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
        side = self.side or "-"
        return f"<Connection {peer} {side} codec={self.codec.name} chunk={self.chunk_size}>"


def find_refusal(data: bytes | bytearray | memoryview) -> Refused | None:
    """The refusal frame among whole frames at the start of ``data`` (peeked bytes), or None.

    Steps over each frame by its header's length (a signed frame's tag included), so a
    refusal behind unread answers is found without decoding them; stops at anything that
    is not a frame header or at the end of ``data``.
    """
    view = memoryview(data)
    at = 0
    while len(view) - at >= HEADER_SIZE:
        magic, _version, _codec, flags, _enc, length = HEADER.unpack_from(view, at)
        if magic != MAGIC:
            return None
        if flags & FLAG_REFUSAL:
            probe = FrameDecoder()
            try:
                probe.receive_data(bytes(view[at : at + HEADER_SIZE + length]))
                probe.next_event()
            except Refused as refused:
                return refused
            except AyudantiaError:
                pass
            return None
        at += HEADER_SIZE + length
    return None


# Sent(1, n) for the small sizes sent, shared by every connection: a Sent is an immutable
# value, so equal ones are interchangeable, and one per small send was measurable.
_ONE_FRAME: Final[dict[int, Sent]] = {}
_ONE_FRAME_MAX: Final = HEADER_SIZE + 1024  # at most this many entries, ~100 KB


def _one_frame(total: int) -> Sent:
    """``Sent(1, total)``, remembered in :data:`_ONE_FRAME` when ``total`` is small."""
    sent = _new(Sent, (1, total))
    if total <= _ONE_FRAME_MAX:
        _ONE_FRAME[total] = sent
    return sent


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
