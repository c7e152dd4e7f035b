"""The wire format, sans-IO: bytes in, messages and chunks out. No socket in here.

Every frame is a 10-byte header and a payload::

    offset size field
    0      2    magic b"AY"
    2      1    version = 1
    3      1    codec id (0 raw, 1 json, 2 pickle, 3 msgpack, 64-255 plug-ins)
    4      1    flags: bit 0 MORE (another frame of this message follows); bit 1 SIGNED
                (the payload ends with a 32-byte HMAC-SHA256 tag, see protocol/signing.py;
                accepted only by a decoder that has a key); other bits 0
    5      1    reserved = 0
    6      4    payload length, unsigned big-endian
    10     n    payload

A message is one frame, or several frames of one codec where all but the last set MORE.

:class:`FrameDecoder` is a state machine in the style of h11: feed it bytes with
:meth:`~FrameDecoder.receive_data` (or let it fill its own buffer through
:meth:`~FrameDecoder.read_from`, which takes any ``recv_into``-like callable) and pull
events with :meth:`~FrameDecoder.next_event`. Because it never sees a socket, any split of
the input, down to one byte at a time, can be tested, and it gives the same events.

Why ``read_from`` exists: copying every received byte through ``bytes +=`` or an
intermediate buffer caps Python near 200 MB/s. Once a header has declared a payload, the
decoder hands the caller a view into the message's own buffer, so the kernel copies the
payload straight to where it will be decoded.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from protocol.errors import (
    AyudantiaError,
    BadFlags,
    BadMagic,
    BadSignature,
    CodecChanged,
    MessageTooLarge,
    SignatureMissing,
    Truncated,
    UnsupportedVersion,
)
from protocol.signing import TAG_SIZE, Signer, Verifier

MAGIC: Final = b"AY"
VERSION: Final = 1
HEADER: Final = struct.Struct(">2sBBBBI")
HEADER_SIZE: Final = HEADER.size  # 10
FLAG_MORE: Final = 0x01
FLAG_SIGNED: Final = 0x02  # signed frame; refused (BadFlags) by a decoder without a key
KNOWN_FLAGS: Final = FLAG_MORE
MAX_FRAME_PAYLOAD: Final = 0xFFFFFFFF
DEFAULT_MAX_MESSAGE: Final = 64 * 1024 * 1024

# The decoder allocates for what arrives, not for what a header claims: a peer declaring
# 64 MiB and sending ten bytes costs at most this much until more bytes really come. Large
# enough that the whole Quijote (2.1 MB) lands in one allocation, with no regrowth.
_INITIAL_ALLOCATION: Final = 4 * 1024 * 1024
_STAGE_SIZE: Final = 64 * 1024
_ZEROS: Final = memoryview(bytes(_INITIAL_ALLOCATION))


# --- encoding -------------------------------------------------------------------------------


def pack_header(codec_id: int, length: int, *, more: bool = False, signed: bool = False) -> bytes:
    """The 10 header bytes of one frame (``length`` counts a signed frame's tag)."""
    if not 0 <= length <= MAX_FRAME_PAYLOAD:
        raise MessageTooLarge(length, MAX_FRAME_PAYLOAD)
    flags = (FLAG_MORE if more else 0) | (FLAG_SIGNED if signed else 0)
    return HEADER.pack(MAGIC, VERSION, codec_id, flags, 0, length)


def frame_count(length: int, chunk_size: int) -> int:
    """How many frames a payload of ``length`` bytes takes at ``chunk_size`` (0 = unchunked)."""
    if chunk_size <= 0 or length <= chunk_size:
        return 1
    return -(-length // chunk_size)


def iter_frame_buffers(
    codec_id: int,
    payload: bytes | bytearray | memoryview,
    chunk_size: int = 0,
    *,
    signer: Signer | None = None,
) -> Iterator[bytes | memoryview]:
    """Header, payload, header, payload...: the buffers of one message, without copying.

    Meant for scatter-gather writes (``socket.sendmsg``), so a header and its payload leave
    in one system call: two small writes would meet Nagle's algorithm and delayed ACKs.
    With a ``signer`` every frame is signed: header, data, tag (see :mod:`protocol.signing`).
    """
    view = memoryview(payload).cast("B") if not isinstance(payload, bytes) else memoryview(payload)
    if signer is not None:
        yield from _iter_signed(codec_id, view, chunk_size, signer)
        return
    total = len(view)
    if chunk_size <= 0 or total <= chunk_size:
        yield pack_header(codec_id, total)
        if total:
            yield view
        return
    for offset in range(0, total, chunk_size):
        part = view[offset : offset + chunk_size]
        yield pack_header(codec_id, len(part), more=offset + chunk_size < total)
        yield part


def signed_frame_buffers(
    codec_id: int, data: bytes | bytearray | memoryview, signer: Signer, *, more: bool = False
) -> list[bytes | memoryview]:
    """One signed frame: its header (flag bit 1, length counting the tag), data and tag."""
    header = pack_header(codec_id, len(data) + TAG_SIZE, more=more, signed=True)
    tag = signer.tag(header, data)
    return [header, data, tag] if len(data) else [header, tag]


def _iter_signed(
    codec_id: int, view: memoryview, chunk_size: int, signer: Signer
) -> Iterator[bytes | memoryview]:
    total = len(view)
    if chunk_size <= 0 or total <= chunk_size:
        yield from signed_frame_buffers(codec_id, view, signer)
        return
    for offset in range(0, total, chunk_size):
        part = view[offset : offset + chunk_size]
        yield from signed_frame_buffers(codec_id, part, signer, more=offset + chunk_size < total)


def encode_message(
    codec_id: int,
    payload: bytes | bytearray | memoryview,
    chunk_size: int = 0,
    *,
    signer: Signer | None = None,
) -> bytes:
    """One message's frames as a single bytes object (signed when given a ``signer``)."""
    return b"".join(iter_frame_buffers(codec_id, payload, chunk_size, signer=signer))


# --- events ------------------------------------------------------------------------------


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA: Final = _Sentinel("NEED_DATA")
"""No complete event yet: give the decoder more bytes."""

CLOSED: Final = _Sentinel("CLOSED")
"""The peer closed cleanly between messages. Not an error."""


@dataclass(eq=False, slots=True)
class Message:
    """A whole message: its frames' payloads concatenated, not yet decoded."""

    codec_id: int
    payload: bytearray
    frames: int
    chunk_size: int  # payload size of the first frame when chunked, else 0
    wire_bytes: int


@dataclass(eq=False, slots=True)
class Chunk:
    """One frame of a streamed message (see ``stream=`` in :meth:`FrameDecoder.next_event`)."""

    codec_id: int
    data: bytearray
    index: int
    last: bool


Event = Message | Chunk | _Sentinel


# --- decoding ----------------------------------------------------------------------------


class FrameDecoder:
    """Turns a byte stream into :class:`Message` / :class:`Chunk` events.

    ``check_codec(codec_id)`` is called as soon as a message's first header is in, before
    a single payload byte is buffered; it raises to refuse the message (unknown codec, or
    a codec outside the accept-list). Errors are sticky: once one is raised, every later
    call raises it again, because a byte stream that broke framing cannot be resynchronized.

    With a ``key`` every frame must be signed (flag bit 1; otherwise
    :class:`SignatureMissing`) and its tag must verify (otherwise :class:`BadSignature`)
    before its data joins a message or leaves as a chunk; the tag is stripped. Without a
    key a signed frame is refused with :class:`BadFlags`, as before signing existed.
    """

    def __init__(
        self,
        *,
        max_message: int = DEFAULT_MAX_MESSAGE,
        check_codec: Callable[[int], Any] | None = None,
        key: bytes | None = None,
    ) -> None:
        if max_message <= 0:
            raise ValueError("max_message must be positive")
        self.max_message = max_message
        self._check_codec = check_codec
        self._verifier = Verifier(key) if key is not None else None
        self._header = b""  # the current frame's header, kept only when verifying
        self._frame_off = 0  # where the current frame's data starts in self._buf
        self._stage = bytearray(_STAGE_SIZE)
        self._start = 0  # unparsed bytes are self._stage[_start:_end]
        self._end = 0
        self._eof = False
        self._error: AyudantiaError | None = None
        # the message being received
        self._in_message = False
        self._stream = False
        self._codec_id = 0
        self._frames = 0
        self._total = 0  # payload bytes declared so far in this message
        self._first_len = 0
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
            self._eof = True
            return
        if self._eof:
            raise RuntimeError("data received after EOF")
        self._compact()
        need = self._end + len(data)
        if need > len(self._stage):
            self._stage.extend(bytes(need - len(self._stage)))
        self._stage[self._end : need] = data
        self._end = need

    def read_from(self, recv_into: Callable[[memoryview], int]) -> int:
        """Let ``recv_into`` write straight into the decoder's buffers; returns bytes read.

        Call it after :meth:`next_event` returned :data:`NEED_DATA`. While a payload is
        pending and nothing is staged, the view handed out is the message buffer itself.
        A return of 0 records EOF.
        """
        if self._error is not None:
            raise self._error
        if self._eof:
            return 0
        if self._remaining and self._start == self._end:
            self._reserve(self._filled + 1)
            with memoryview(self._buf) as whole, whole[self._filled : self._target] as part:
                n = recv_into(part)
            self._filled += n
            self._remaining -= n
        else:
            self._compact()
            if self._end == len(self._stage):
                self._stage.extend(bytes(_STAGE_SIZE))
            with memoryview(self._stage) as whole, whole[self._end :] as part:
                n = recv_into(part)
            self._end += n
        if n == 0:
            self._eof = True
        return n

    @property
    def in_message(self) -> bool:
        """True between a message's first header and its last payload byte."""
        return self._in_message or self._start != self._end

    @property
    def eof(self) -> bool:
        return self._eof

    # -- output ---------------------------------------------------------------------------

    def next_event(self, *, stream: bool | Callable[[int], bool] = False) -> Event:
        """The next event, :data:`NEED_DATA` or :data:`CLOSED`.

        ``stream`` decides, at each message's first header, whether that message comes out
        whole (one :class:`Message`) or frame by frame (:class:`Chunk` events, memory bounded
        by the frame, not the message). It may be a predicate on the codec id.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_event(stream)
        except AyudantiaError as exc:
            self._error = exc
            raise

    def _next_event(self, stream: bool | Callable[[int], bool]) -> Event:
        if stream is False and self._remaining is None and not self._in_message:
            whole = self._staged_single_frame()
            if whole is not None:
                return whole
        while True:
            if self._remaining is None:
                if self._end - self._start < HEADER_SIZE:
                    if not self._eof:
                        return NEED_DATA
                    if self._start == self._end and not self._in_message:
                        return CLOSED
                    raise Truncated(self._truncation_detail())
                self._start_frame(stream)
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

    def _staged_single_frame(self) -> Message | None:
        """The common case in one step: a valid one-frame message already wholly staged.

        Small messages are dominated by per-call overhead, so this path does in one function
        what the general one spreads over four. Anything else (a partial frame, MORE, a
        signed frame, any invalid field) returns None and takes the general path, which
        also raises the errors: there is one place that decides what is wrong.
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
        return Message(codec_id, payload, 1, 0, HEADER_SIZE + length)

    def _start_frame(self, stream: bool | Callable[[int], bool]) -> None:
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
        known = KNOWN_FLAGS if self._verifier is None else KNOWN_FLAGS | FLAG_SIGNED
        if flags & ~known:
            raise BadFlags(f"unsupported flag bits 0x{flags & ~known:02x}")
        if reserved:
            raise BadFlags(f"reserved byte is 0x{reserved:02x}, must be 0")
        if self._verifier is not None:
            if not flags & FLAG_SIGNED:
                raise SignatureMissing("this receiver has a key; an unsigned frame arrived")
            if length < TAG_SIZE:
                raise BadSignature(f"signed frame of {length} bytes is shorter than its tag")
            self._header = bytes(self._stage[self._start : self._start + HEADER_SIZE])
        if not self._in_message:
            if self._check_codec is not None:
                self._check_codec(codec_id)
            self._in_message = True
            self._stream = stream(codec_id) if callable(stream) else bool(stream)
            self._codec_id = codec_id
            self._frames = 0
            self._total = 0
            self._first_len = length
            self._buf = bytearray()
            self._filled = 0
        elif codec_id != self._codec_id:
            raise CodecChanged(
                f"codec id changed from {self._codec_id} to {codec_id} inside a message"
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

    def _reserve(self, needed: int) -> None:
        """Grow the payload buffer to hold ``needed`` bytes.

        Growth doubles, so a chunked message costs a few reallocations, not one per frame
        (glibc grows large blocks with mremap, without copying). It never passes what the
        headers so far declared, except inside a message that announced more frames, and
        there only by what has really arrived: a buffer is at most twice the bytes received,
        or the first ``_INITIAL_ALLOCATION`` of a declared frame. New space is zeroed from
        one shared zero block rather than from a temporary as large as the growth.
        """
        size = len(self._buf)
        if size >= needed:
            return
        limit = self.max_message if self._more and not self._stream else self._target
        floor = min(self._target, _INITIAL_ALLOCATION)
        grow = min(limit, max(needed, 2 * size, floor)) - size
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
            self._verify_and_strip()
        if self._stream:
            chunk = Chunk(self._codec_id, self._buf, self._frames - 1, last=not self._more)
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
            chunk_size=(self._first_len - (TAG_SIZE if self._verifier else 0))
            if self._frames > 1
            else 0,
            wire_bytes=self._frames * HEADER_SIZE + self._total,
        )

    def _verify_and_strip(self) -> None:
        """Check the frame just completed against its tag, then drop the tag from the data."""
        assert self._verifier is not None
        end = self._filled - TAG_SIZE
        with memoryview(self._buf) as whole, whole[self._frame_off : end] as data:
            tag = bytes(whole[end : self._filled])
            self._verifier.verify(self._header, data, tag)
        del self._buf[end:]
        self._filled = end

    def _compact(self) -> None:
        if self._start == self._end:
            self._start = self._end = 0
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
