"""Messages to frames: the buffers a sender writes, plain, compressed or signed.

Buffers, not one joined bytes object: a front-end hands them to ``sendmsg`` or to a
transport's ``write`` as they are, so a large payload is never copied to be framed.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import EllipsisType
from typing import NamedTuple

from protocol.encodings import Compression
from protocol.header import check_chunk_size, pack_header
from protocol.signing import TAG_SIZE, Signer


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


class Plan(NamedTuple):
    """How one message goes out: its chunk size, its compression, and whether it is one
    plain frame (the fast path both front-ends take without generators or batching)."""

    chunk_size: int
    compression: Compression | None
    single: bool


def plan_message(
    length: int,
    *,
    chunk_size: int | None,
    default_chunk: int,
    compression: Compression | EllipsisType | None,
    default_compression: Compression | None,
    signer: Signer | None,
) -> Plan:
    """Resolve a send's options against the connection's (``None``/``...``: the connection's).

    ``chunk_size`` None means the connection's; ``compression`` ``...`` means the
    connection's and None means identity for this message.
    """
    size = default_chunk if chunk_size is None else check_chunk_size(chunk_size)
    compress = default_compression if compression is ... else compression
    single = signer is None and compress is None and (size <= 0 or length <= size)
    return Plan(size, compress, single)
