"""The frame decoder: bytes in, :mod:`protocol.events` out, allocations bounded.

A state machine in the style of h11 (see :mod:`protocol.framing` for the format and why
``get_buffer`` exists); it never sees a socket, so any split of the input can be tested.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

from protocol.encodings import IDENTITY_ID, Encoding
from protocol.encodings import REGISTRY as ENCODINGS
from protocol.errors import (
    AyudantiaError,
    BadFlags,
    BadMagic,
    BadSignature,
    CodecChanged,
    EncodingChanged,
    MessageTooLarge,
    Refused,
    SignatureMissing,
    SignatureUnexpected,
    Truncated,
    UnsupportedVersion,
)
from protocol.events import CLOSED, NEED_DATA, Chunk, Event, Message
from protocol.header import (
    DEFAULT_MAX_MESSAGE,
    FLAG_MORE,
    FLAG_REFUSAL,
    FLAG_SIGNED,
    HEADER,
    HEADER_SIZE,
    KNOWN_FLAGS,
    MAGIC,
    MAX_REFUSAL_PAYLOAD,
    VERSION,
)
from protocol.refusals import clean_text
from protocol.signing import TAG_SIZE, Side, Verifier

# The decoder allocates for what arrives, not for what a header claims. A payload buffer
# starts at min(declared, _FIRST_BLOCK) and grows _GROWTH-fold each time it fills, so it is
# never more than _GROWTH times the bytes received (or _FIRST_BLOCK), and the 2.1 MB book
# costs three reallocations (glibc moves large blocks with mremap, without copying). A
# larger factor means fewer, larger reads: each read is bounded by the room left.
_FIRST_BLOCK: Final = 64 * 1024
_GROWTH: Final = 4
_STAGE_SIZE: Final = 64 * 1024  # header staging area, allocated at the first read
_ZEROS: Final = memoryview(bytes(1024 * 1024))  # one shared source of zeros for growth
# The header read as a plain frame's fast path tests it: magic and version as one field,
# flags and encoding as another (both zero for a plain frame), codec id and length.
_PLAIN: Final = struct.Struct(">3sBHI")
_PLAIN_PREFIX: Final = MAGIC + bytes([VERSION])
# What FrameDecoder.allocated is bounded by (tests/test_decoder_memory.py checks it):
# allocated <= ALLOCATION_FACTOR * bytes received + ALLOCATION_SLACK.
ALLOCATION_FACTOR: Final = _GROWTH + 1  # the payload buffer, plus staged bytes
ALLOCATION_SLACK: Final = _FIRST_BLOCK + _STAGE_SIZE


class FrameDecoder:
    """Turns a byte stream into :class:`Message` / :class:`Chunk` events.

    ``check_codec(codec_id)`` is called as soon as a message's first header is in, before
    a single payload byte is buffered; it raises to refuse the message (unknown codec, or
    a codec outside the accept-list). Errors are sticky: once one is raised, every later
    call raises it again, because a byte stream that broke framing cannot be resynchronized.

    With a ``key`` every frame must be signed (flag bit 1; otherwise
    :class:`SignatureMissing`) and its tag must verify (otherwise :class:`BadSignature`)
    before its data joins a message or leaves as a chunk; the tag is stripped. ``side`` is
    the end of the connection this decoder belongs to: it verifies frames tagged by the
    other end (see :mod:`protocol.signing`). Without a key a signed frame is refused with
    :class:`SignatureUnexpected`. A refusal frame at a message boundary raises
    :class:`Refused` with the peer's reason.

    Bytes come in three equivalent ways: :meth:`receive_data` (copy them in),
    :meth:`get_buffer` / :meth:`buffer_updated` (the two halves of asyncio's
    ``BufferedProtocol``: the caller writes straight into the decoder's memory), and
    :meth:`read_from`, which is those two around any ``recv_into``-like callable.
    """

    def __init__(
        self,
        *,
        max_message: int = DEFAULT_MAX_MESSAGE,
        check_codec: Callable[[int], Any] | None = None,
        key: bytes | None = None,
        side: Side = "server",
        check_encoding: Callable[[int], Encoding] | None = None,
    ) -> None:
        if max_message <= 0:
            raise ValueError("max_message must be positive")
        self.max_message = max_message
        self._check_codec = check_codec
        # Receivers accept identity, zstd and lz4 unless told otherwise.
        self._check_encoding = check_encoding or _DEFAULT_ENCODINGS
        self._encoding: Encoding | None = None  # the current message's, None for identity
        self._encoding_id = 0
        self._first_data = 0  # the first frame's data size (inflated), for chunk_size
        self._verifier = Verifier(key, side=side) if key is not None else None
        self._header = b""  # the current frame's header, kept only when verifying
        self._frame_off = 0  # where the current frame's data starts in self._buf
        self._stage = bytearray()  # allocated at the first read, not at construction
        self._start = 0  # unparsed bytes are self._stage[_start:_end]
        self._end = 0
        self._eof = False
        self._error: AyudantiaError | None = None
        self._lent: tuple[memoryview, memoryview] | None = None  # the view get_buffer gave
        self._lent_payload = False  # ...and whether it points into the payload buffer
        # the message being received
        self._in_message = False
        self._stream = False
        self._codec_id = 0
        self._frames = 0
        self._total = 0  # payload bytes declared so far in this message
        self._frame_encoding: Encoding | None = None  # the frame being received's
        # the frame being received; _remaining is None while waiting for a header
        self._remaining: int | None = None
        self._more = False
        self._buf = bytearray()
        self._filled = 0
        self._target = 0

    # -- input ----------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes. ``b""`` means the peer closed its side (EOF)."""
        if self._error is not None:
            raise self._error
        if not data:
            self.eof_received()
            return
        self._check_open()
        self._release()
        self._compact()
        need = self._end + len(data)
        if need > len(self._stage):
            self._stage.extend(bytes(need - len(self._stage)))
        self._stage[self._end : need] = data
        self._end = need

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next bytes should land: a writable view (asyncio's ``get_buffer``).

        Once a header has declared a payload and nothing is staged, the view is the
        message's own buffer, so the bytes are copied once, by the kernel. Otherwise it is
        the staging area for headers. The view stays valid until :meth:`buffer_updated`
        (or the next call here); ``sizehint`` is accepted for the protocol and ignored.
        """
        if self._error is not None or self._eof:
            self._check_open()
        if self._lent is not None:
            self._release()
        if self._remaining and self._start == self._end:
            if len(self._buf) <= self._filled:
                self._reserve(self._filled + 1)
            whole = memoryview(self._buf)
            part = whole[self._filled : self._target]
            self._lent_payload = True
        else:
            self._compact()
            if len(self._stage) - self._end < HEADER_SIZE + MAX_REFUSAL_PAYLOAD:
                self._stage.extend(bytes(_STAGE_SIZE))
            whole = memoryview(self._stage)
            part = whole[self._end :]
            self._lent_payload = False
        self._lent = (whole, part)
        return part

    def buffer_updated(self, nbytes: int) -> None:
        """Record that ``nbytes`` (> 0) were written at the start of the last :meth:`get_buffer`."""
        lent = self._lent
        if lent is None:
            raise RuntimeError("buffer_updated without a get_buffer")
        whole, part = lent
        room = len(part)
        self._lent = None
        part.release()
        whole.release()
        if not 0 < nbytes <= room:
            raise ValueError(f"nbytes must be 1-{room}, not {nbytes} (EOF is eof_received())")
        if self._lent_payload:
            self._filled += nbytes
            self._remaining -= nbytes  # type: ignore[operator]  # a payload is pending
        else:
            self._end += nbytes

    def eof_received(self) -> None:
        """The peer closed its sending side; the next event is CLOSED, or Truncated mid-message."""
        self._release()
        self._eof = True

    def read_from(self, recv_into: Callable[[bytearray | memoryview], int]) -> int:
        """Let ``recv_into`` write straight into the decoder's buffers; returns bytes read.

        Call it after :meth:`next_event` returned :data:`NEED_DATA`. It is
        :meth:`get_buffer`, the call, then :meth:`buffer_updated`; a return of 0 records EOF.
        ``recv_into`` gets a writable buffer to fill from its start (a socket's
        ``recv_into`` takes either kind).

        Between frames with nothing staged (every small message's case) ``recv_into``
        gets the staging area itself (see :meth:`_read_into_stage`).
        """
        if (
            self._start == self._end
            and self._remaining is None
            and self._lent is None
            and self._error is None
            and not self._eof
        ):
            return self._read_into_stage(recv_into)
        if self._error is None and self._eof:
            return 0
        view = self.get_buffer()
        try:
            n = recv_into(view)
        except BaseException:
            self._release()
            raise
        if n:
            self.buffer_updated(n)
        else:
            self.eof_received()
        return n

    def read_message(
        self, recv_into: Callable[[bytearray | memoryview], int]
    ) -> tuple[int, Any, bytearray | None]:
        """:meth:`read_from` then :meth:`next_event`, in one step for a small message.

        For a blocking reader between messages: when nothing is staged (and frames are not
        signed), one read into the staging area, and the message if that read brought a
        whole plain frame (one frame, no flag, no encoding): ``(bytes read, codec,
        payload)``, all a :class:`Message` would say of it (one frame, identity,
        ``HEADER_SIZE + len(payload)`` on the wire), without building one. ``codec`` is
        what ``check_codec`` answered for its codec id (the id itself without a
        ``check_codec``), so the caller need not look it up again. Otherwise
        ``(bytes read, 0, None)``, having read nothing when not between messages, and the
        caller goes on with :meth:`next_event` and :meth:`read_from`, which take over from
        what is staged and raise whatever is wrong with it (0 bytes read between messages
        records EOF). A codec outside the accept-list is refused here, as it would be there.

        It is :meth:`_read_into_stage` and :meth:`_staged_single_frame` written out in one
        function: a small round trip is dominated by per-call work, and this is most of it.
        """
        if (
            self._start != self._end
            or self._in_message  # (``_remaining`` is None whenever this is False)
            or self._verifier is not None
            or self._error is not None
            or self._eof
            or self._lent is not None
        ):
            return 0, 0, None
        stage = self._stage
        room = len(stage)
        if room < HEADER_SIZE + MAX_REFUSAL_PAYLOAD or room > 4 * _STAGE_SIZE:
            return self._read_into_stage(recv_into), 0, None  # first read, or shrink
        self._start = 0
        self._end = 0
        n = recv_into(stage)
        if not HEADER_SIZE <= n <= room:  # EOF, part of a header, or a bogus count
            if 0 < n <= room:
                self._end = n
            elif n:
                raise ValueError(f"nbytes must be 1-{room}, not {n} (EOF is eof_received())")
            else:
                self._eof = True
            return n, 0, None
        self._end = n
        prefix, codec_id, flags_encoding, length = _PLAIN.unpack_from(stage)
        stop = HEADER_SIZE + length
        if prefix != _PLAIN_PREFIX or flags_encoding or length > self.max_message or stop > n:
            return n, 0, None  # not a whole plain frame: next_event decides what it is
        codec = codec_id
        if self._check_codec is not None:
            try:
                codec = self._check_codec(codec_id)
            except AyudantiaError as exc:
                self._error = exc
                raise
        self._start = stop
        return n, codec, stage[HEADER_SIZE:stop]

    def take_frame(
        self, data: bytes, stream: bool | Callable[[int], bool] = False
    ) -> Message | Chunk | None:
        """``data`` as the event it is when it is exactly one whole plain frame between
        messages (an event loop's read of one small message): what :meth:`receive_data`
        then :meth:`next_event` would return, without staging it. Otherwise None, having
        taken nothing, and the caller feeds ``data`` to :meth:`receive_data` as usual,
        which raises whatever is wrong with it. A codec outside the accept-list is refused
        here, as it would be there, and the decoder stays failed.
        """
        if (
            self._start != self._end
            or self._in_message
            or self._verifier is not None
            or self._error is not None
            or self._eof
            or self._lent is not None
            or len(data) < HEADER_SIZE
        ):
            return None
        magic, version, codec_id, flags, reserved, length = HEADER.unpack_from(data)
        if (
            magic != MAGIC
            or version != VERSION
            or flags
            or reserved
            or length > self.max_message
            or HEADER_SIZE + length != len(data)
        ):
            return None
        if self._check_codec is not None:
            try:
                self._check_codec(codec_id)
            except AyudantiaError as exc:
                self._error = exc
                raise
        payload = bytearray(data)  # a bytearray, as the staged path's payload is
        del payload[:HEADER_SIZE]  # (from the front: CPython moves the start, no copy)
        if stream is not False and (stream(codec_id) if callable(stream) else stream):
            return _new(Chunk, (codec_id, payload, 0, True, 0))
        return _new(Message, (codec_id, payload, 1, 0, HEADER_SIZE + length, 0))

    def _read_into_stage(self, recv_into: Callable[[bytearray | memoryview], int]) -> int:
        """With nothing staged, one read into the staging area's start; 0 records EOF.

        The same as lending the area (:meth:`get_buffer`) minus the lending: ``recv_into``
        gets the bytearray itself, with no memoryview made and released per read, since
        nothing else holds the area during the call.
        """
        stage = self._stage
        room = len(stage)
        if room < HEADER_SIZE + MAX_REFUSAL_PAYLOAD:  # the first read: as get_buffer
            stage.extend(bytes(_STAGE_SIZE))
            room = len(stage)
        elif room > 4 * _STAGE_SIZE:  # a large receive_data is not kept: as _compact
            del stage[_STAGE_SIZE:]
            room = _STAGE_SIZE
        self._start = self._end = 0
        n = recv_into(stage)
        if 0 < n <= room:
            self._end = n
        elif n:
            raise ValueError(f"nbytes must be 1-{room}, not {n} (EOF is eof_received())")
        else:
            self._eof = True
        return n

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error
        if self._eof:
            raise RuntimeError("data received after EOF")

    def _release(self) -> None:
        """Give back the view lent by get_buffer: a bytearray with a live view cannot resize."""
        if self._lent is not None:
            whole, part = self._lent
            self._lent = None
            part.release()
            whole.release()

    @property
    def in_message(self) -> bool:
        """True between a message's first header and its last payload byte."""
        return self._in_message or self._start != self._end

    @property
    def eof(self) -> bool:
        return self._eof

    @property
    def error(self) -> AyudantiaError | None:
        """The sticky error this decoder raised, if any: it will raise it again."""
        return self._error

    @property
    def allocated(self) -> int:
        """Bytes this decoder holds in its buffers now (staging area and payload buffer).

        Bounded by ``ALLOCATION_FACTOR * received + ALLOCATION_SLACK`` whatever the headers
        claim; messages already handed out are the caller's.
        """
        return len(self._stage) + len(self._buf)

    # -- output ---------------------------------------------------------------------------

    def next_event(self, *, stream: bool | Callable[[int], bool] = False) -> Event:
        """The next event, :data:`NEED_DATA` or :data:`CLOSED`.

        ``stream`` decides, at each message's first header, whether that message comes out
        whole (one :class:`Message`) or frame by frame (:class:`Chunk` events, memory bounded
        by the frame, not the message). It may be a predicate on the codec id.
        """
        if self._error is not None:
            raise self._error
        if self._remaining is None and self._end - self._start < HEADER_SIZE and not self._eof:
            return NEED_DATA  # waiting for a header: what the general path would conclude
        try:
            if self._remaining is None and not self._in_message:
                whole = self._staged_single_frame(stream)  # the common case, in one step
                if whole is not None:
                    return whole
            return self._next_event(stream)
        except AyudantiaError as exc:
            self._error = exc
            self._release()
            raise

    def _next_event(self, stream: bool | Callable[[int], bool]) -> Event:
        while True:
            if self._remaining is None:
                if self._end - self._start < HEADER_SIZE:
                    if not self._eof:
                        return NEED_DATA
                    if self._start == self._end and not self._in_message:
                        return CLOSED
                    raise Truncated(self._truncation_detail())
                if not self._start_frame(stream):
                    return NEED_DATA
            if self._remaining:
                self._take_staged()
                if self._remaining:
                    if self._eof:
                        raise Truncated(self._truncation_detail())
                    return NEED_DATA
            event = self._finish_frame()
            if event is not None:
                return event

    # -- internals ------------------------------------------------------------------------

    def _staged_single_frame(self, stream: bool | Callable[[int], bool]) -> Message | Chunk | None:
        """The common case in one step: a valid one-frame message already wholly staged.

        Small messages are dominated by per-call overhead, so this path does in one function
        what the general one spreads over four. Anything else (a partial frame, MORE, a
        signed frame, any invalid field) returns None and takes the general path, which
        also raises the errors: there is one place that decides what is wrong. A message
        its caller streams comes out as its one and last :class:`Chunk`.
        """
        start = self._start
        if self._verifier is not None or self._end - start < HEADER_SIZE:
            return None
        magic, version, codec_id, flags, reserved, length = HEADER.unpack_from(self._stage, start)
        stop = start + HEADER_SIZE + length
        if (
            magic != MAGIC
            or version != VERSION
            or flags
            or reserved
            or length > self.max_message
            or stop > self._end
        ):
            return None
        if self._check_codec is not None:
            self._check_codec(codec_id)
        payload = self._stage[start + HEADER_SIZE : stop]
        self._start = stop
        if stream is not False and (stream(codec_id) if callable(stream) else stream):
            return _new(Chunk, (codec_id, payload, 0, True, 0))
        return _new(Message, (codec_id, payload, 1, 0, HEADER_SIZE + length, 0))

    def _check_header(self) -> tuple[int, int, int]:
        """Magic, version, flags and reserved byte, in the documented order; (codec, flags, n)."""
        magic, version, codec_id, flags, reserved, length = HEADER.unpack_from(
            self._stage, self._start
        )
        if magic != MAGIC:
            raise BadMagic(
                f"bad magic {bytes(magic)!r}, expected {MAGIC!r}: not an ayudantia frame"
            )
        if version != VERSION:
            raise UnsupportedVersion(
                f"protocol version {version} is not supported (this is {VERSION})"
            )
        if flags & ~KNOWN_FLAGS:
            raise BadFlags(f"unsupported flag bits 0x{flags & ~KNOWN_FLAGS:02x}")
        if flags & FLAG_REFUSAL:
            if reserved:
                raise BadFlags(f"a refusal frame's encoding byte is 0x{reserved:02x}, must be 0")
            self._refusal(codec_id, flags, length)  # raises Refused, or returns for more data
            return -1, flags, length
        if reserved:  # before any payload byte: an unknown encoding costs ten bytes
            encoding = self._check_encoding(reserved)
            self._frame_encoding = None if encoding.id == IDENTITY_ID else encoding
        else:
            self._frame_encoding = None
        if self._verifier is None:
            if flags & FLAG_SIGNED:
                raise SignatureUnexpected("this frame is signed and this receiver has no key")
        else:
            if not flags & FLAG_SIGNED:
                raise SignatureMissing("this receiver has a key; an unsigned frame arrived")
            if length < TAG_SIZE:
                raise BadSignature(f"signed frame of {length} bytes is shorter than its tag")
            self._header = bytes(self._stage[self._start : self._start + HEADER_SIZE])
        return codec_id, flags, length

    def _refusal(self, codec_id: int, flags: int, length: int) -> None:
        """Raise the peer's :class:`Refused` once the whole refusal frame is staged."""
        if flags != FLAG_REFUSAL or codec_id != 0 or self._in_message:
            raise BadFlags(
                "a refusal frame (flag 0x04) must be alone at a message boundary, with "
                f"codec 0 and no other flag (flags 0x{flags:02x}, codec {codec_id})"
            )
        if not 1 <= length <= MAX_REFUSAL_PAYLOAD:
            raise BadFlags(f"refusal frame of {length} bytes (1-{MAX_REFUSAL_PAYLOAD} allowed)")
        start = self._start + HEADER_SIZE
        if self._end - start < length:
            if self._eof:
                raise Truncated("connection closed inside a refusal frame")
            return
        payload = bytes(self._stage[start : start + length])
        self._start = start + length
        raise Refused(payload[0], clean_text(payload[1:]))

    def _start_frame(self, stream: bool | Callable[[int], bool]) -> bool:
        """Consume a frame header; False when it is a refusal frame still arriving."""
        codec_id, flags, length = self._check_header()
        if codec_id < 0:
            return False
        if not self._in_message:
            if self._check_codec is not None:
                self._check_codec(codec_id)
            self._in_message = True
            self._stream = stream(codec_id) if callable(stream) else bool(stream)
            self._codec_id = codec_id
            self._encoding = self._frame_encoding
            self._encoding_id = self._encoding.id if self._encoding is not None else 0
            self._frames = 0
            self._total = 0
            self._buf = bytearray()
            self._filled = 0
        elif codec_id != self._codec_id:
            raise CodecChanged(
                f"codec id changed from {self._codec_id} to {codec_id} inside a message"
            )
        elif self._frame_encoding is not self._encoding:
            new = self._frame_encoding.id if self._frame_encoding is not None else 0
            raise EncodingChanged(
                f"content encoding changed from {self._encoding_id} to {new} inside a message"
            )
        # Checked before a byte of payload is buffered: a lying header costs ten bytes.
        if self._stream:
            if length > self.max_message:
                raise MessageTooLarge(length, self.max_message)
            self._buf = bytearray()
            self._filled = 0
            self._target = length
        else:
            if self._total + length > self.max_message:
                raise MessageTooLarge(self._total + length, self.max_message)
            self._target = self._filled + length  # == _total + length unless tags were stripped
        self._frame_off = self._filled
        self._total += length
        self._start += HEADER_SIZE
        self._remaining = length
        self._more = bool(flags & FLAG_MORE)
        return True

    def _reserve(self, needed: int) -> None:
        """Grow the payload buffer to hold ``needed`` bytes, following what has arrived.

        The first block is min(declared, 64 KiB); after that the buffer grows fourfold, so
        it is never more than four times the bytes received, and a large message costs a
        few reallocations, not one per read. It never passes what the headers so far
        declared, except inside a message that announced more frames (still at most four
        times what arrived). New space is zeroed from one shared zero block.
        """
        size = len(self._buf)
        if size >= needed:
            return
        limit = self.max_message if self._more and not self._stream else self._target
        floor = min(self._target, _FIRST_BLOCK)
        grow = min(limit, max(needed, _GROWTH * size, floor)) - size
        while grow > 0:
            step = min(grow, len(_ZEROS))
            self._buf += _ZEROS[:step]
            grow -= step

    def _take_staged(self) -> None:
        available = self._end - self._start
        if not available:
            return
        k = min(available, self._remaining or 0)
        with memoryview(self._stage) as stage:
            if not self._buf:  # a frame that arrived whole with its header: one copy, no zeroing
                self._buf = bytearray(stage[self._start : self._start + k])
            else:
                self._reserve(self._filled + k)
                self._buf[self._filled : self._filled + k] = stage[self._start : self._start + k]
        self._filled += k
        self._start += k
        self._remaining = (self._remaining or 0) - k

    def _finish_frame(self) -> Message | Chunk | None:
        self._frames += 1
        self._remaining = None
        if len(self._buf) != self._filled and (self._stream or not self._more):
            del self._buf[self._filled :]  # spare capacity stays while more frames come
        if self._verifier is not None:
            self._verify_and_strip(self._verifier)
        if self._encoding is not None:
            self._inflate(self._encoding)
        if self._frames == 1:
            self._first_data = self._filled - self._frame_off
        if self._stream:
            chunk = Chunk(
                self._codec_id, self._buf, self._frames - 1, not self._more, self._encoding_id
            )
            self._buf = bytearray()
            self._filled = 0
            if not self._more:
                self._in_message = False
            return chunk
        if self._more:
            return None
        self._in_message = False
        payload, self._buf, self._filled = self._buf, bytearray(), 0
        return Message(
            codec_id=self._codec_id,
            payload=payload,
            frames=self._frames,
            chunk_size=self._first_data if self._frames > 1 else 0,
            wire_bytes=self._frames * HEADER_SIZE + self._total,
            encoding_id=self._encoding_id,
        )

    def _inflate(self, encoding: Encoding) -> None:
        """Replace the frame just completed by its inflated data, checked before allocating.

        A streamed frame may inflate to ``max_message``; a whole message's frames together.
        """
        start = self._frame_off
        room = self.max_message - (0 if self._stream else start)
        with memoryview(self._buf) as whole, whole[start : self._filled] as data:
            out = encoding.decompress(data, room, self.max_message)
        if start == 0:
            self._buf = bytearray(out)
        else:
            del self._buf[start:]
            self._buf += out
        self._filled = len(self._buf)

    def _verify_and_strip(self, verifier: Verifier) -> None:
        """Check the frame just completed against its tag, then drop the tag from the data."""
        end = self._filled - TAG_SIZE
        with memoryview(self._buf) as whole, whole[self._frame_off : end] as data:
            tag = bytes(whole[end : self._filled])
            verifier.verify(self._header, data, tag)
        del self._buf[end:]
        self._filled = end

    def _compact(self) -> None:
        if self._start == self._end:
            self._start = self._end = 0
            if len(self._stage) > 4 * _STAGE_SIZE:  # a large receive_data is not kept forever
                del self._stage[_STAGE_SIZE:]
        elif self._start and len(self._stage) - self._end < 4096:
            live = self._end - self._start
            self._stage[:live] = self._stage[self._start : self._end]
            self._start, self._end = 0, live

    def _truncation_detail(self) -> str:
        if self._remaining is None:
            pending = self._end - self._start
            if pending:
                return f"connection closed after {pending} of {HEADER_SIZE} header bytes"
            return f"connection closed after frame {self._frames} of a message that announced more"
        return f"connection closed with {self._remaining} payload bytes of a frame missing"


_DEFAULT_ENCODINGS: Final = ENCODINGS.accept_checker()
_new: Final = tuple.__new__  # an event from all its fields, without the generated __new__
