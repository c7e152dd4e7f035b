"""The wire format, sans-IO: bytes in, messages and chunks out. No socket in here.

Every frame is a 10-byte header and a payload::

    offset size field
    0      2    magic b"AY"
    2      1    version = 1
    3      1    codec id (0 raw, 1 json, 2 pickle, 3 msgpack, 64-255 plug-ins)
    4      1    flags: bit 0 MORE (another frame of this message follows); bit 1 SIGNED
                (the payload ends with a 32-byte HMAC-SHA256 tag, see protocol/signing.py;
                accepted only by a decoder that has a key); bit 2 REFUSAL (a refusal frame:
                codec 0, no other flag, 1-512 bytes of reason code and text); other bits 0
    5      1    content encoding (0 identity, 1 zstd, 2 lz4 frame, 64-255 plug-ins; see
                protocol/encodings.py): every frame of a message carries the same one, and
                each frame's data is compressed on its own
    6      4    payload length, unsigned big-endian
    10     n    payload

A message is one frame, or several frames of one codec where all but the last set MORE.
With an encoding, a frame's payload is its data compressed (and then, when signed, the tag
over those compressed bytes as sent); the decoder verifies, then inflates, frame by frame.

:class:`FrameDecoder` is a state machine in the style of h11: feed it bytes with
:meth:`~FrameDecoder.receive_data`, or let the caller write into its buffers with
:meth:`~FrameDecoder.get_buffer` / :meth:`~FrameDecoder.buffer_updated` (asyncio's
``BufferedProtocol``) or :meth:`~FrameDecoder.read_from` (any ``recv_into``-like
callable, on top of those two), and pull events with :meth:`~FrameDecoder.next_event`.
Because it never sees a socket, any split of the input, down to one byte at a time, can
be tested, and it gives the same events.

Why ``get_buffer`` exists: copying every received byte through ``bytes +=`` or an
intermediate buffer caps Python near 200 MB/s. Once a header has declared a payload, the
decoder hands the caller a view into the message's own buffer, so the kernel copies the
payload straight to where it will be decoded.
"""

from __future__ import annotations

import struct
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from protocol.encodings import IDENTITY_ID, Compression, Encoding
from protocol.encodings import REGISTRY as ENCODINGS
from protocol.errors import (
    REFUSAL_CODES,
    AyudantiaError,
    BadFlags,
    BadMagic,
    BadSignature,
    CodecChanged,
    ContentDisallowed,
    EncodingChanged,
    EncodingDisallowed,
    MessageTooLarge,
    Refused,
    SignatureMissing,
    SignatureUnexpected,
    Truncated,
    UnknownCodec,
    UnknownEncoding,
    UnsupportedVersion,
)
from protocol.signing import TAG_SIZE, Side, Signer, Verifier

MAGIC: Final = b"AY"
VERSION: Final = 1
HEADER: Final = struct.Struct(">2sBBBBI")
HEADER_SIZE: Final = HEADER.size  # 10
FLAG_MORE: Final = 0x01
FLAG_SIGNED: Final = 0x02  # signed frame; refused (SignatureUnexpected) by a decoder without a key
FLAG_REFUSAL: Final = 0x04  # a refusal frame: the peer says why it is closing (never signed)
KNOWN_FLAGS: Final = FLAG_MORE | FLAG_SIGNED | FLAG_REFUSAL
MAX_FRAME_PAYLOAD: Final = 0xFFFFFFFF
MAX_REFUSAL_PAYLOAD: Final = 512  # reason byte + UTF-8 text
DEFAULT_MAX_MESSAGE: Final = 64 * 1024 * 1024

# The decoder allocates for what arrives, not for what a header claims. A payload buffer
# starts at min(declared, _FIRST_BLOCK) and grows _GROWTH-fold each time it fills, so it is
# never more than _GROWTH times the bytes received (or _FIRST_BLOCK), and the 2.1 MB book
# costs three reallocations (glibc moves large blocks with mremap, without copying). A
# larger factor means fewer, larger reads: each read is bounded by the room left.
_FIRST_BLOCK: Final = 64 * 1024
_GROWTH: Final = 4
_STAGE_SIZE: Final = 64 * 1024  # header staging area, allocated at the first read
_ZEROS: Final = memoryview(bytes(1024 * 1024))  # one shared source of zeros for growth
# What FrameDecoder.allocated is bounded by (tests/test_decoder_memory.py checks it):
# allocated <= ALLOCATION_FACTOR * bytes received + ALLOCATION_SLACK.
ALLOCATION_FACTOR: Final = _GROWTH + 1  # the payload buffer, plus staged bytes
ALLOCATION_SLACK: Final = _FIRST_BLOCK + _STAGE_SIZE


# --- encoding -------------------------------------------------------------------------------


def pack_header(
    codec_id: int, length: int, *, more: bool = False, signed: bool = False, encoding: int = 0
) -> bytes:
    """The 10 header bytes of one frame (``length`` counts a signed frame's tag)."""
    if not 0 <= length <= MAX_FRAME_PAYLOAD:
        raise MessageTooLarge(length, MAX_FRAME_PAYLOAD)
    flags = (FLAG_MORE if more else 0) | (FLAG_SIGNED if signed else 0)
    return HEADER.pack(MAGIC, VERSION, codec_id, flags, encoding, length)


def check_chunk_size(chunk_size: int) -> int:
    """``chunk_size`` itself, or ValueError when negative (0 means unchunked).

    A negative size once slipped through to ``range(0, n, -1)`` and sent an empty frame
    instead of the data (issue 15, defect 6); every sending entry point checks it now.
    """
    if chunk_size < 0:
        raise ValueError(f"chunk_size must be >= 0 (0 = unchunked), not {chunk_size}")
    return chunk_size


def frame_count(length: int, chunk_size: int) -> int:
    """How many frames a payload of ``length`` bytes takes at ``chunk_size`` (0 = unchunked)."""
    if check_chunk_size(chunk_size) == 0 or length <= chunk_size:
        return 1
    return -(-length // chunk_size)


def echo_chunk_size(length: int, frames: int, first: int) -> int:
    """A chunk size that sends ``length`` bytes again in at most ``frames`` frames.

    What a relay (the eco) needs to answer "in the same chunking" without amplifying:
    re-chunking at the first frame's size alone turned a 1-byte first frame and a 4 MiB
    second one into four million frames (issue 15, defect 8). ``first`` is the received
    message's ``chunk_size``; 0 (or one frame) means unchunked.
    """
    if frames <= 1 or length == 0:
        return 0
    return max(first, -(-length // frames))


def iter_frame_buffers(
    codec_id: int,
    payload: bytes | bytearray | memoryview,
    chunk_size: int = 0,
    *,
    signer: Signer | None = None,
    compression: Compression | None = None,
) -> Iterator[bytes | memoryview]:
    """Header, payload, header, payload...: the buffers of one message, without copying.

    Meant for scatter-gather writes (``socket.sendmsg``), so a header and its payload leave
    in one system call: two small writes would meet Nagle's algorithm and delayed ACKs.
    With a ``signer`` every frame is signed: header, data, tag (see :mod:`protocol.signing`).
    A negative ``chunk_size`` raises ValueError here, before any buffer is produced.
    With a ``compression`` each chunk is compressed on its own (``chunk_size`` counts the
    data before compression) and every header names the encoding.
    """
    check_chunk_size(chunk_size)
    view = memoryview(payload).cast("B") if not isinstance(payload, bytes) else memoryview(payload)
    if compression is not None:
        return _iter_compressed(codec_id, view, chunk_size, signer, compression)
    if signer is not None:
        return _iter_signed(codec_id, view, chunk_size, signer)
    return _iter_plain(codec_id, view, chunk_size)


def _iter_plain(codec_id: int, view: memoryview, chunk_size: int) -> Iterator[bytes | memoryview]:
    total = len(view)
    if chunk_size == 0 or total <= chunk_size:
        yield pack_header(codec_id, total)
        if total:
            yield view
        return
    for offset in range(0, total, chunk_size):
        part = view[offset : offset + chunk_size]
        yield pack_header(codec_id, len(part), more=offset + chunk_size < total)
        yield part


def _iter_compressed(
    codec_id: int,
    view: memoryview,
    chunk_size: int,
    signer: Signer | None,
    compression: Compression,
) -> Iterator[bytes | memoryview]:
    total = len(view)
    step = chunk_size if chunk_size and total > chunk_size else max(total, 1)
    for offset in range(0, max(total, 1), step):
        more = offset + step < total
        yield from frame_buffers(
            codec_id,
            view[offset : offset + step],
            more=more,
            signer=signer,
            compression=compression,
        )


def frame_buffers(
    codec_id: int,
    data: bytes | bytearray | memoryview,
    *,
    more: bool,
    signer: Signer | None = None,
    compression: Compression | None = None,
) -> list[bytes | memoryview]:
    """One frame's buffers: header and data (compressed when asked), plus a signer's tag."""
    encoding = 0
    if compression is not None:
        data, encoding = compression.apply(data), compression.id
    if signer is not None:
        return signed_frame_buffers(codec_id, data, signer, more=more, encoding=encoding)
    header = pack_header(codec_id, len(data), more=more, encoding=encoding)
    return [header, data] if len(data) else [header]


def signed_frame_buffers(
    codec_id: int,
    data: bytes | bytearray | memoryview,
    signer: Signer,
    *,
    more: bool = False,
    encoding: int = 0,
) -> list[bytes | memoryview]:
    """One signed frame: its header (flag bit 1, length counting the tag), data and tag.

    The tag covers the data as sent: compressed, when the header names an encoding.
    """
    header = pack_header(codec_id, len(data) + TAG_SIZE, more=more, signed=True, encoding=encoding)
    tag = signer.tag(header, data)
    return [header, data, tag] if len(data) else [header, tag]


def _iter_signed(
    codec_id: int, view: memoryview, chunk_size: int, signer: Signer
) -> Iterator[bytes | memoryview]:
    total = len(view)
    if chunk_size == 0 or total <= chunk_size:
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
    compression: Compression | None = None,
) -> bytes:
    """One message's frames as a single bytes object (signed when given a ``signer``)."""
    frames = iter_frame_buffers(
        codec_id, payload, chunk_size, signer=signer, compression=compression
    )
    return b"".join(frames)


# --- refusal frames ---------------------------------------------------------------------


def clean_text(raw: bytes | str, limit: int = MAX_REFUSAL_PAYLOAD) -> str:
    """Printable text only: undecodable bytes replaced, control characters dropped, capped.

    Used both ways: on the text we put in a refusal frame, and on the text a peer sent us,
    which reaches logs and terminals (an escape sequence there could rewrite the screen).
    """
    text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
    kept = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    return kept[:limit]


def encode_refusal(code: int, text: str) -> bytes:
    """One refusal frame: flags 0x04, codec 0, payload = reason byte + UTF-8 text (<= 512).

    ``text`` must be our own words, never bytes the peer sent: it is cleaned and truncated
    (at a character boundary) to fit.
    """
    if not 1 <= code <= 255:
        raise ValueError(f"refusal code must be 1-255, not {code}")
    data = clean_text(text).encode("utf-8")[: MAX_REFUSAL_PAYLOAD - 1]
    data = data.decode("utf-8", errors="ignore").encode("utf-8")  # no cut character
    payload = bytes([code]) + data
    return HEADER.pack(MAGIC, VERSION, 0, FLAG_REFUSAL, 0, len(payload)) + payload


_CODE: Final = {name: code for code, name in REFUSAL_CODES.items()}


def refusal_for(exc: AyudantiaError) -> tuple[int, str] | None:
    """The refusal (code, line in the user's terms) for a header error; None for the rest.

    Only errors a receiver detects at a header are refused on the wire: after them the
    stream is still at a frame boundary from the sender's point of view, and the sender
    learns something it can fix (its codec, its size, its key). Payload errors, truncation
    and timeouts get no refusal.
    """
    if isinstance(exc, ContentDisallowed):
        accepted = ", ".join(sorted(exc.accepted))
        return _CODE["codec"], f"this server accepts {accepted}; not {exc.codec}"
    if isinstance(exc, UnknownEncoding):
        known = ", ".join(exc.known)
        return _CODE["codec"], f"this server has no content encoding {exc.key}; it has {known}"
    if isinstance(exc, EncodingDisallowed):
        accepted = ", ".join(sorted(exc.accepted))
        return _CODE["codec"], f"this server accepts encodings {accepted}; not {exc.encoding}"
    if isinstance(exc, UnknownCodec):
        known = ", ".join(exc.known)
        return _CODE["codec"], f"this server has no codec with {_key_text(exc.key)}; it has {known}"
    if isinstance(exc, MessageTooLarge):
        return _CODE["too_large"], f"message of {exc.size} bytes exceeds max_message={exc.limit}"
    if isinstance(exc, SignatureUnexpected):
        return _CODE["signature"], "this frame is signed and this server has no key"
    if isinstance(exc, SignatureMissing):
        return _CODE["signature"], "this server requires signed frames (a shared key)"
    if isinstance(exc, BadSignature):
        return _CODE["signature"], "a frame's signature does not verify: not this server's key"
    if isinstance(exc, UnsupportedVersion):
        return _CODE["version"], f"this server speaks protocol version {VERSION} only"
    if isinstance(exc, BadMagic | BadFlags | CodecChanged):
        return _CODE["malformed"], f"not a valid ayudantia frame: {type(exc).__name__}"
    return None


def refusal_frame(exc: AyudantiaError) -> bytes | None:
    """The whole refusal frame for ``exc`` (see :func:`refusal_for`), or None."""
    mapped = refusal_for(exc)
    return None if mapped is None else encode_refusal(*mapped)


def _key_text(key: str | int) -> str:
    return f"id {key}" if isinstance(key, int) else "that name"


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
    """A whole message: its frames' payloads concatenated, not yet decoded.

    ``chunk_size`` is the first frame's data size when the message came in several frames,
    else 0: a description of how it travelled, not a promise about the other frames (the
    sender may cut them at any size). To send a payload back without more frames than
    came in, use :func:`echo_chunk_size`.
    """

    codec_id: int
    payload: bytearray
    frames: int
    chunk_size: int  # payload size of the first frame when chunked, else 0
    wire_bytes: int
    encoding_id: int = 0  # the content encoding it travelled in (payload is inflated)


@dataclass(eq=False, slots=True)
class Chunk:
    """One frame of a streamed message (see ``stream=`` in :meth:`FrameDecoder.next_event`)."""

    codec_id: int
    data: bytearray
    index: int
    last: bool
    encoding_id: int = 0  # the encoding this frame travelled in (data is inflated)


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

    def read_from(self, recv_into: Callable[[memoryview], int]) -> int:
        """Let ``recv_into`` write straight into the decoder's buffers; returns bytes read.

        Call it after :meth:`next_event` returned :data:`NEED_DATA`. It is
        :meth:`get_buffer`, the call, then :meth:`buffer_updated`; a return of 0 records EOF.
        """
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
        try:
            return self._next_event(stream)
        except AyudantiaError as exc:
            self._error = exc
            self._release()
            raise

    def _next_event(self, stream: bool | Callable[[int], bool]) -> Event:
        if self._remaining is None and not self._in_message:
            whole = self._staged_single_frame(stream)
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
            return Chunk(codec_id, payload, 0, last=True)
        return Message(codec_id, payload, 1, 0, HEADER_SIZE + length)

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
