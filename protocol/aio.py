"""The wire format on an asyncio event loop: the same sans-IO decoder, driven by a Protocol.

:mod:`protocol.transport` is the blocking front-end (clients, scripts, tests); this is the
event-loop one (the servers). Both feed the same :class:`~protocol.framing.FrameDecoder`
with the same codecs, accept-lists, limits, signing and typed errors, as h11 sits under
both sync and async HTTP servers.

A :class:`FrameConnection` is an :class:`asyncio.Protocol`. Bytes in go to the decoder;
each whole message (decoded) or streamed chunk goes to its :class:`Handler`'s callbacks,
on the loop's thread, in order. Messages out are written whole, so frames of two messages
never interleave. What a connection decides alone lives in its own module:

* :mod:`protocol.flow`: when to read this peer (its pending work, its unread answers,
  its turn), in the shape of uvicorn's ``FlowControl``;
* :mod:`protocol.deadlines`: the idle, per-read, per-message and send deadlines, on one
  timer re-armed lazily;
* :mod:`protocol.receipts`: delivery receipts (an answer counts once it left the process);
* :mod:`protocol.options`, :mod:`protocol.handler`: the settings and the owner's callbacks.

A peer that never reads can grow this process by about one message plus ``write_high``,
never more: it is not read while its buffer is full, and dropped after ``send_timeout``.

Coroutines (:meth:`FrameConnection.recv`, :meth:`FrameConnection.send`, :func:`connect`)
serve scripts and tests; servers use the callbacks, which cost no task per message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Iterable
from ssl import SSLContext, SSLError
from types import EllipsisType
from typing import Any, Final

from protocol import codecs
from protocol.budget import REFUSALS
from protocol.codecs import Codec
from protocol.deadlines import Deadlines
from protocol.decoder import FrameDecoder
from protocol.encoder import frame_buffers, iter_frame_buffers, plan_message
from protocol.encodings import Compression
from protocol.errors import (
    REFUSAL_CODES,
    AyudantiaError,
    CodecError,
    ConnectionClosed,
    DecodeError,
    ProtocolError,
    Timeout,
)
from protocol.events import CLOSED, NEED_DATA, Chunk, Message
from protocol.flow import FlowControl
from protocol.handler import Handler, Inbox
from protocol.handshake import Handshake, SessionKeys, handshake_timeout
from protocol.header import HEADER_SIZE, check_chunk_size, frame_count, pack_header
from protocol.messages import Received, Sent
from protocol.options import DEFAULT_MAX_HELD, DEFAULT_WRITE_HIGH, Limits, Speech
from protocol.receipts import Receipts
from protocol.refusals import encode_refusal, refusal_frame
from protocol.signing import Side, Signer, check_key, check_side, signer_for
from protocol.tls import failure as tls_failure

__all__ = [
    "DEFAULT_MAX_HELD",
    "DEFAULT_WRITE_HIGH",
    "FrameConnection",
    "Handler",
    "Inbox",
    "Limits",
    "Speech",
    "connect",
    "is_peer_fault",
]

log = logging.getLogger("ayudantia.aio")

# Below this a header and its payload are joined into one write (one system call, and the
# copy costs less than the call); above it they go as two writes without copying.
_JOIN_BELOW: Final = 64 * 1024
_TURN: Final = 64  # messages a peer may have handled before it yields the loop to others
_REFUSAL_DRAIN: Final = 256 * 1024  # bytes a refused peer may still send before a reset
_REFUSAL_LINGER: Final = 0.25  # seconds a refused peer's bytes are drained before the close
_CLOSE_GRACE: Final = 5.0  # seconds a closing connection may take to flush, with no deadline


REFUSAL_BUSY: Final = next(code for code, name in REFUSAL_CODES.items() if name == "busy")


class FrameConnection(asyncio.Protocol):
    """One peer on the loop: framed messages in and out, with flow control and deadlines."""

    # Slots: 5,000 students are 5,000 of these; an instance dict of ~40 attributes costs
    # about 1.3 KB more per connection than slots do (tracemalloc, issue 23).
    __slots__ = (
        "__weakref__",
        "_aborted",
        "_closing",
        "_deadlines",
        "_decoder",
        "_drained",
        "_eof",
        "_flow",
        "_handshake",
        "_hs_error",
        "_hs_timer",
        "_inbox",
        "_loop",
        "_out_open",
        "_ready",
        "_receipts",
        "_refusing",
        "_registry",
        "_signer",
        "_stream_pred",
        "_turn",
        "_waiter",
        "_writable",
        "accept",
        "bytes_received",
        "bytes_sent",
        "chunk_size",
        "closed",
        "codec",
        "compression",
        "error",
        "frames_sent",
        "handler",
        "limits",
        "messages_received",
        "name",
        "peer",
        "side",
        "transport",
        "undelivered",
    )

    def __init__(
        self,
        handler: Handler,
        *,
        speech: Speech | None = None,
        limits: Limits | None = None,
        name: str = "peer",
        side: Side | None = None,
    ) -> None:
        speech = speech or Speech()
        self.limits = limits or Limits()
        self.handler = handler
        self.name = name
        self._registry = speech.registry or codecs.REGISTRY
        self.codec: Codec = self._registry.get(speech.codec)
        self.chunk_size = check_chunk_size(speech.chunk_size)
        self.compression = speech.compression
        self.accept = frozenset(speech.accept)
        key = check_key(speech.key) if speech.key is not None else None
        # With a key, ``side`` is required ("server" for accepted peers, "client" for
        # connections this process opened): each tag is bound to its direction.
        self.side: Side | None = None if side is None else check_side(side)
        self._signer = signer_for(key, self.side)
        self._decoder = FrameDecoder(
            max_message=self.limits.max_message,
            check_codec=self._registry.accept_checker(self.accept),
            key=key,
            side=self.side or "server",
        )
        # With a key, the keyed handshake comes first (protocol/handshake.py): no frame is
        # decoded or sent before it, and frames are signed with this connection's keys.
        self._handshake = None if key is None else Handshake(key, self.side)  # type: ignore[arg-type]
        self._hs_timer: asyncio.TimerHandle | None = None
        self._hs_error: BaseException | None = None
        self._ready: asyncio.Future[None] | None = None
        self._stream_pred = handler.stream
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.peer = "?"
        self._flow = FlowControl(self.limits)
        self._deadlines = Deadlines(self.limits, self._flow, self._deadline_passed)
        self._turn = 0  # messages handled in this peer's current turn
        self._writable: asyncio.Future[None] | None = None
        # lifetime
        self._closing = False
        self._out_open = False  # a streamed message of ours is half sent
        self._aborted = False  # closed without flushing: what was queued never left
        self._refusing = False  # a refusal is out; the peer's bytes are drained and dropped
        self._drained = 0
        self._receipts: Receipts | None = None  # made at the first send that asks for one
        self.undelivered = 0  # messages with a receipt dropped with the connection
        self._eof = False
        self.closed: asyncio.Future[BaseException | None] | None = None
        self.error: BaseException | None = None
        # for the coroutine API: messages waiting for recv()
        self._inbox: collections.deque[Received | BaseException] | None = None
        self._waiter: asyncio.Future[None] | None = None
        # counters
        self.bytes_sent = 0
        self.bytes_received = 0
        self.frames_sent = 0
        self.messages_received = 0

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self._loop = asyncio.get_running_loop()
        self.closed = self._loop.create_future()
        transport.set_write_buffer_limits(high=self.limits.write_high)
        # TCP_NODELAY is on already: both loops set it on every TCP transport they make
        # (asyncio's selector transport, uvloop's TCPTransport; tests/test_aio.py checks).
        # Setting it again here cost each connection a getsockname() and a setsockopt().
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple):
            self.peer = f"{peername[0]}:{peername[1]}"
        self._deadlines.start(self._loop)
        if self._handshake is not None:
            self._start_handshake()
        try:
            self.handler.connection_made(self)
        except Exception as exc:  # a handler bug drops this peer only
            self._abort(exc)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            if self._refusing:  # draining after a refusal: bounded in bytes as in time
                self._drained += len(data)
                if self._drained > _REFUSAL_DRAIN and self.transport is not None:
                    self._aborted = True
                    self.transport.abort()
            return
        self.bytes_received += len(data)
        assert self._loop is not None
        self._deadlines.last_rx = self._loop.time()
        if self._handshake is not None:
            data = self._handshake_data(data)
            if not data:
                return
        flow = self._flow
        if not flow.blocked and not flow.yielding and self._turn < _TURN:
            # One whole small message in one read, the usual case: handled as _process
            # would, without staging it in the decoder and asking it twice.
            try:
                event = self._decoder.take_frame(data, self._stream_pred)
            except AyudantiaError as exc:
                self._abort(exc)
                return
            if event is not None:
                self._turn += 1
                if self._handle(event) and not self._closing:
                    self._deadlines.message_started(False)
                return
        try:
            self._decoder.receive_data(data)
        except AyudantiaError as exc:
            self._abort(exc)
            return
        self._process()

    def eof_received(self) -> bool:
        if self._handshake is not None:
            self._handshake_data(b"")  # closed midway: Truncated (or the peer's refusal)
            return False
        self._eof = True
        with contextlib.suppress(AyudantiaError):
            self._decoder.receive_data(b"")
        self._process()
        # Keep the transport open while work for this peer is pending: its answers still go
        # out on the half that is open; _maybe_finish closes once nothing is left. Settled
        # now (a serial student reads its answer, then closes): close now, not a loop
        # iteration later (this is no release(), see _maybe_finish).
        self._finish_if_done()
        # Over TLS asyncio's transport (aio.connect's) closes after EOF whatever we return
        # and warns when we return True; the servers' (protocol/tls_server.py) closes on
        # False alike. So ask for the half-open transport only on plain TCP.
        assert self.transport is not None
        return self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._handshake is not None:
            self._handshake_over(self.error or exc or ConnectionClosed("closed in the handshake"))
        if self._receipts is not None:
            self.undelivered += self._receipts.settle(flushed=exc is None and not self._aborted)
        self._deadlines.cancel()
        error = self.error or exc
        self.error = error
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(ConnectionClosed(f"{self.name} connection lost"))
        if self._inbox is not None:
            self._inbox.append(ConnectionClosed("peer closed the connection"))
            self._wake()
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(error)
        try:
            self.handler.connection_lost(self, error)
        except Exception:
            log.exception("%s: error in connection_lost", self.name)

    def pause_writing(self) -> None:
        assert self._loop is not None
        self._flow.write_paused = True
        now = self._deadlines.write_paused_at = self._loop.time()
        self._update_reading()
        self._deadlines.arm(now)

    def resume_writing(self) -> None:
        self._flow.write_paused = False
        self._deadlines.write_paused_at = None
        if self._receipts is not None:
            self._receipts.check()
            if self._receipts.idle:
                self._receipts = None
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None
        self._update_reading()
        self._maybe_finish()

    # -- receiving ----------------------------------------------------------------------

    def _process(self) -> None:
        """Hand complete events to the handler, until backpressure, a turn's end or no data.

        A peer gets at most ``_TURN`` messages per turn; past that it yields the loop to the
        others: its socket is not read, and what it already sent waits in the decoder, until
        a later loop iteration has handled that too. Without turns, a peer that sends as fast
        as it reads its answers takes the whole loop (uvloop reads a ready socket up to 32
        times in one go); without keeping the socket unread while staged bytes wait, such a
        peer would grow the decoder's staging area without bound.
        """
        decoder = self._decoder
        while not self._closing and not self._flow.blocked:
            if self._turn >= _TURN:
                self._yield_turn()
                return
            try:
                event = decoder.next_event(stream=self._stream_pred)
            except AyudantiaError as exc:
                self._abort(exc)
                return
            if event is NEED_DATA or event is CLOSED:
                if self._flow.yielding:  # everything staged is handled: read this peer again
                    self._flow.yielding = False
                    self._update_reading()
                if self._eof:
                    self._maybe_finish()
                break
            self._turn += 1
            if not self._handle(event):  # type: ignore[arg-type]
                return
        if not self._closing:
            self._deadlines.message_started(decoder.in_message)

    def _handle(self, event: Message | Chunk) -> bool:
        """Dispatch ``event``; False when that failed and this peer was dropped."""
        try:
            self._dispatch(event)
        except AyudantiaError as exc:
            self._abort(exc)
            return False
        except Exception as exc:  # a bug in a handler: drop this peer, keep serving
            log.exception("%s: handler failed on %s", self.name, self.peer)
            self._abort(exc)
            return False
        return True

    def _dispatch(self, event: Message | Chunk) -> None:
        if isinstance(event, Chunk):
            if event.last:
                self.messages_received += 1
            self.handler.chunk_received(self, event)
            return
        self.messages_received += 1
        codec = self._registry.get(event.codec_id)
        try:
            received = Received.decoded(codec, event, self.limits.max_message)
        except DecodeError as exc:
            self.handler.decode_failed(self, exc)
            return
        self.handler.message_received(self, received)

    def _yield_turn(self) -> None:
        """Stop reading this peer; its next turn comes after the other ready peers'."""
        assert self._loop is not None
        if not self._flow.yielding:
            self._flow.yielding = True
            self._update_reading()
        self._loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn = 0
        self._process()

    # -- flow control -------------------------------------------------------------------

    def hold(self) -> None:
        """This peer has one more piece of work pending (an answer it will get later)."""
        if self._flow.hold():
            self._update_reading()

    def release(self) -> None:
        """One piece of this peer's pending work is done."""
        if self._flow.release():
            self._update_reading()
        if self._eof:
            self._maybe_finish()

    @property
    def held(self) -> int:
        return self._flow.held

    @property
    def reading_paused(self) -> bool:
        return self._flow.read_paused

    @property
    def writing_paused(self) -> bool:
        """The peer is not draining what we send it (its buffer is past ``write_high``)."""
        return self._flow.write_paused

    def _update_reading(self) -> None:
        """Pause or resume reading this peer (protocol/flow.py decides which)."""
        if self.transport is None or self._closing:
            return
        change = self._flow.update(self.transport)
        assert self._loop is not None
        if change.resumed:
            self._deadlines.last_rx = self._loop.time()  # paused time is not the peer's silence
        if change.unblocked:
            self._loop.call_soon(self._process)  # events already staged in the decoder

    # -- sending ------------------------------------------------------------------------

    def encode(self, obj: Any, codec: Codec | None = None) -> bytes:
        """``obj`` in this connection's codec; :class:`EncodeError` is the caller's to answer."""
        return (codec or self.codec).encode(obj)

    def send_obj(
        self,
        obj: Any,
        *,
        chunk_size: int | None = None,
        on_delivered: Callable[[], None] | None = None,
    ) -> Sent:
        """Encode and queue ``obj`` as one message (never blocks; flow control pauses reads).

        ``on_delivered`` is called once the message's last byte has left this process (been
        taken by the kernel), and never if the connection is dropped first: queued is not
        delivered. A peer that stops reading is cut off after ``send_timeout`` with its
        queue, and what was in it must not count as delivered.
        """
        sent = self.send_payload(self.codec.id, self.encode(obj), chunk_size=chunk_size)
        if on_delivered is not None:
            if self._receipts is None and self._flushed() == self.bytes_sent:
                # Out at once (the usual case), nothing pending before it: the receipt now,
                # without a Receipts made and dropped per answer.
                try:
                    on_delivered()
                except Exception:
                    log.exception("%s: delivery receipt failed", self.name)
                return sent
            if self._receipts is None:
                assert self._loop is not None
                self._receipts = Receipts(self._loop, self._flushed, self.name)
            self._receipts.add(self.bytes_sent, on_delivered)
            if self._receipts.idle:  # delivered at once (the usual case): keep nothing
                self._receipts = None
        return sent

    def _flushed(self) -> int | None:
        """Bytes that have left this process so far (None once closing: nothing more will)."""
        if self.transport is None or self._closing:
            return None
        return self.bytes_sent - self.transport.get_write_buffer_size()

    def send_payload(
        self,
        codec_id: int,
        payload: bytes | bytearray | memoryview,
        *,
        chunk_size: int | None = None,
        compression: Compression | EllipsisType | None = ...,
    ) -> Sent:
        """Queue already-encoded bytes as one message; :class:`ConnectionClosed` if gone.

        ``compression`` overrides the connection's for this message (None: identity).
        """
        transport = self._live_transport()
        length = len(payload)
        size, compress, single = plan_message(
            length,
            chunk_size=chunk_size,
            default_chunk=self.chunk_size,
            compression=compression,
            default_compression=self.compression,
            signer=self._signer,
        )
        if single:
            header = pack_header(codec_id, length)
            if length < _JOIN_BELOW:
                transport.write(header + bytes(payload))
            else:
                transport.write(header)
                transport.write(payload)
            frames = 1
            wire = len(header) + length
        else:
            frames = frame_count(length, size)
            buffers = iter_frame_buffers(
                codec_id, payload, size, signer=self._signer, compression=compress
            )
            wire = self._write_all(transport, buffers)
        self.frames_sent += frames
        self.bytes_sent += wire
        return Sent(frames, wire)

    def send_frame(
        self,
        codec_id: int,
        data: bytes | bytearray | memoryview,
        *,
        more: bool,
        compression: Compression | EllipsisType | None = ...,
    ) -> int:
        """Queue one frame of a streamed message (the caller keeps messages from interleaving)."""
        transport = self._live_transport()
        compress = self.compression if compression is ... else compression
        length = len(data)
        if compress is None and self._signer is None and length < _JOIN_BELOW:
            # A plain small frame, what frame_buffers and _write_all would make of it written
            # out: one header, one joined write (an echo's small message is mostly this).
            transport.write(pack_header(codec_id, length, more=more) + data)
            self._out_open = more
            self.frames_sent += 1
            wire = HEADER_SIZE + length
            self.bytes_sent += wire
            return wire
        buffers = frame_buffers(
            codec_id, data, more=more, signer=self._signer, compression=compress
        )
        wire = self._write_all(transport, buffers)
        self._out_open = more  # a refusal must never land inside our own message
        self.frames_sent += 1
        self.bytes_sent += wire
        return wire

    def _write_all(
        self, transport: asyncio.Transport, buffers: Iterable[bytes | bytearray | memoryview]
    ) -> int:
        """Write a message's buffers: small runs joined into one write (one system call)."""
        wire = 0
        run: list[bytes | bytearray | memoryview] = []
        run_bytes = 0
        for buf in buffers:
            size = len(buf)
            if not size:
                continue
            wire += size
            if size >= _JOIN_BELOW:
                if run:
                    transport.write(b"".join(run))
                    run, run_bytes = [], 0
                transport.write(buf)
                continue
            run.append(buf)
            run_bytes += size
            if run_bytes >= _JOIN_BELOW:
                transport.write(b"".join(run))
                run, run_bytes = [], 0
        if run:
            transport.write(b"".join(run))
        return wire

    def _live_transport(self) -> asyncio.Transport:
        if self.transport is None or self._closing or self.transport.is_closing():
            raise ConnectionClosed(f"{self.name}: connection is closed")
        if self._handshake is not None:
            raise ConnectionClosed(f"{self.name}: the keyed handshake is not complete yet")
        return self.transport

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark (or the send deadline)."""
        if not self._flow.write_paused:
            if self._closing:
                raise ConnectionClosed(f"{self.name}: connection is closed")
            return
        assert self._loop is not None
        if self._writable is None:
            self._writable = self._loop.create_future()
        await asyncio.shield(self._writable)

    async def send(self, obj: Any, *, chunk_size: int | None = None) -> Sent:
        """Encode, queue and wait for room: the coroutine form of :meth:`send_obj`."""
        sent = self.send_obj(obj, chunk_size=chunk_size)
        await self.drain()
        return sent

    # -- the coroutine API for receiving ------------------------------------------------

    async def recv_received(self) -> Received:
        """The next message with how it travelled (for connections made by :func:`connect`)."""
        if self._inbox is None:
            raise RuntimeError("recv() needs a connection whose handler is an Inbox")
        while not self._inbox:
            assert self._loop is not None
            self._waiter = self._loop.create_future()
            await self._waiter
        item = self._inbox.popleft()
        if isinstance(item, BaseException):
            self._inbox.appendleft(item)  # sticky: every later recv raises it too
            raise item
        self.release()
        return item

    async def recv(self) -> Any:
        return (await self.recv_received()).obj

    def _deliver_to_inbox(self, item: Received | BaseException) -> None:
        assert self._inbox is not None
        if not isinstance(item, BaseException):
            self.hold()  # an unread message is pending work: reading pauses at max_held
        self._inbox.append(item)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- the keyed handshake ------------------------------------------------------------

    def _start_handshake(self) -> None:
        """Send our HELLO and give the peer a bounded time to complete the handshake."""
        assert self._handshake is not None and self._loop is not None
        hello = self._handshake.data_to_send()
        self.transport.write(hello)  # type: ignore[union-attr]
        self.bytes_sent += len(hello)
        timeout = handshake_timeout(self.limits.read_timeout)
        self._hs_timer = self._loop.call_later(timeout, self._handshake_expired, timeout)

    def _handshake_expired(self, timeout: float) -> None:
        self._hs_timer = None
        if self._handshake is not None and not self._closing:
            self._abort(Timeout(f"no keyed handshake within {timeout:g} s"))

    def _handshake_data(self, data: bytes) -> bytes:
        """Feed the handshake; the bytes after it once it is done (the peer's first frames)."""
        hs = self._handshake
        assert hs is not None
        hs.receive_data(data)
        try:
            event = hs.next_event()
        except AyudantiaError as exc:
            self._handshake_over(exc)
            self._abort(exc)
            return b""
        out = hs.data_to_send()
        if out:
            self.transport.write(out)  # type: ignore[union-attr]
            self.bytes_sent += len(out)
        if not isinstance(event, SessionKeys):
            return b""
        self._signer = Signer(event.send, side=hs.side)
        self._decoder = FrameDecoder(
            max_message=self.limits.max_message,
            check_codec=self._registry.accept_checker(self.accept),
            key=event.recv,
            side=hs.side,
        )
        self._handshake_over(None)
        return hs.trailing()

    def _handshake_over(self, error: BaseException | None) -> None:
        """The handshake ended (``error`` None: it succeeded); wake :meth:`wait_ready`."""
        if error is None:
            self._handshake = None
        elif self._hs_error is None:
            self._hs_error = error
        if self._hs_timer is not None:
            self._hs_timer.cancel()
            self._hs_timer = None
        ready = self._ready
        if ready is not None and not ready.done():
            if error is None:
                ready.set_result(None)
            else:
                ready.set_exception(error)

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Return once the keyed handshake is done (at once without a key); raise its error."""
        if self._hs_error is not None:
            raise self._hs_error
        if self._handshake is None:
            return
        assert self._loop is not None
        if self._ready is None:
            self._ready = self._loop.create_future()
        try:
            await asyncio.wait_for(self._ready, timeout)
        except TimeoutError as exc:
            raise Timeout(f"{self.name}: the keyed handshake did not complete in time") from exc

    # -- deadlines (protocol/deadlines.py) ----------------------------------------------

    def _deadline_passed(self, reason: str) -> None:
        if not self._closing:
            self._abort(Timeout(reason))

    # -- lifetime -----------------------------------------------------------------------

    def _maybe_finish(self) -> None:
        """After the peer's EOF: close once its staged questions are handled, its pending
        work answered and its answers flushed. Looked at from the loop, never inside a
        ``release()``: the caller releasing is about to send the answer it owed."""
        if self._eof and not self._closing and self._loop is not None:
            self._loop.call_soon(self._finish_if_done)

    def _finish_if_done(self) -> None:
        if self._eof and not self._closing and self._flow.settled:
            self.close()

    def _abort(self, error: BaseException) -> None:
        """Drop this peer because of ``error`` (kept in :attr:`error` for the handler)."""
        if self._closing:
            return
        self.error = error
        if isinstance(error, Timeout) and self._flow.write_paused:
            self.abort()  # it does not read: what is queued for it will never leave
            return
        self.refuse_then_close(error)

    def refuse_then_close(self, error: BaseException) -> None:
        """Close after ``error``, first telling the peer why when it is a header error.

        The refusal frame (docs/protocol.md, "Refusal frames") is sent only between our own
        messages, within the process's refusal budget, and only for errors found at a header
        (it never echoes the peer's bytes): then the connection is half-closed and what the
        peer still sends is read and dropped for a moment, so that our close does not reset
        the refusal away before the peer reads it.
        """
        frame = refusal_frame(error) if isinstance(error, AyudantiaError) else None
        if frame is None:
            self.close()
            return
        self._refuse(frame)

    def refuse_busy(self, text: str) -> None:
        """Turn this peer away because the server is full (a ``busy`` refusal)."""
        self.error = ConnectionClosed(text)
        self._refuse(encode_refusal(REFUSAL_BUSY, text))

    def _refuse(self, frame: bytes) -> None:
        transport = self.transport
        host = self.peer.rpartition(":")[0]  # the budget is per address, not per connection
        if transport is None or self._out_open or not REFUSALS.take(host) or self._closing:
            self.close()
            return
        self._closing = True
        self._refusing = True
        self._deadlines.cancel()
        transport.write(frame)
        with contextlib.suppress(OSError, RuntimeError, NotImplementedError):
            if transport.can_write_eof():
                transport.write_eof()
            transport.resume_reading()  # drain (and drop) what the peer is still sending
        assert self._loop is not None
        self._loop.call_later(_REFUSAL_LINGER, self._close_after_refusal)

    def _close_after_refusal(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
            self._loop.call_later(_CLOSE_GRACE, self._abort_if_open)  # type: ignore[union-attr]

    def close(self) -> None:
        """Flush what is queued and close. Idempotent (and a no-op once closing).

        A peer that stops reading cannot hold the close open: after the send deadline (or
        a few seconds when there is none) what is still queued is dropped.
        """
        if self._closing:
            return
        self._closing = True
        self._deadlines.cancel()
        if self.transport is not None:
            self.transport.close()
            if self._loop is not None and self.transport.get_write_buffer_size():
                grace = self.limits.send_timeout or _CLOSE_GRACE
                self._loop.call_later(grace, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if self.closed is not None and not self.closed.done() and self.transport is not None:
            self._aborted = True
            self.transport.abort()

    def abort(self) -> None:
        """Close at once, dropping what is queued (a peer that will not read)."""
        self._closing = True
        self._aborted = True
        self._deadlines.cancel()
        if self.transport is not None:
            self.transport.abort()

    @property
    def is_closing(self) -> bool:
        return self._closing

    def __repr__(self) -> str:
        return f"<FrameConnection {self.name} {self.peer} codec={self.codec.name}>"


async def connect(
    host: str,
    port: int,
    *,
    speech: Speech | None = None,
    limits: Limits | None = None,
    connect_timeout: float | None = 10.0,
    ssl: SSLContext | None = None,
) -> FrameConnection:
    """A client connection with the coroutine API (``await conn.recv()``, ``await conn.send()``).

    With ``ssl``, TLS first (the server's name, ``host``, verified), then the keyed
    handshake when the speech has a key.
    """
    loop = asyncio.get_running_loop()

    def factory() -> FrameConnection:
        conn = FrameConnection(Inbox(), speech=speech, limits=limits, name="client", side="client")
        conn._inbox = collections.deque()
        return conn

    try:
        tls: dict[str, Any] = {} if ssl is None else {"ssl": ssl, "server_hostname": host}
        _, conn = await asyncio.wait_for(
            loop.create_connection(factory, host, port, **tls), connect_timeout
        )
    except TimeoutError as exc:
        raise Timeout(f"connecting to {host}:{port} timed out") from exc
    except SSLError as exc:
        raise tls_failure(exc, f"{host}:{port}") from None
    try:
        await conn.wait_ready(connect_timeout)
    except BaseException:
        conn.abort()
        raise
    return conn


def is_peer_fault(error: BaseException | None) -> bool:
    """Whether a connection ended because of what the peer sent (not a plain close)."""
    return isinstance(error, ProtocolError | CodecError)
