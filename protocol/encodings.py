"""Content encodings: compression on the wire, frame by frame, for any codec.

Header byte 5 names a frame's encoding: 0 identity, 1 zstd, 2 lz4 (frame format); ids
64-255 belong to plug-ins, which register through the ``ayudantia.encodings`` entry-point
group. Each frame's payload is compressed on its own, so a receiver inflates (and a stream
forwards) one frame at a time, and memory stays bounded by the frame.

Inflating is where a peer attacks: a few kilobytes of zstd can declare a gigabyte of zeros.
So a compressed frame must declare its decompressed size (zstd's content size, lz4's
content size), the declaration is checked against what ``max_message`` still allows before
a byte is allocated, and a frame that inflates to another size than it declared is refused.
The declaration is also held to a ratio of the frame's own size (:func:`inflate_limit`):
2 KB of zstd can declare 64 MiB of zeros that ``max_message`` allows, and a receiver that
believed it would give a peer 32,000 bytes of memory for each byte it sent.
Every failure is a typed :class:`~protocol.errors.EncodingError` (or
:class:`~protocol.errors.MessageTooLarge` for a bomb), never a library exception.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import lz4.frame
import zstandard

from protocol.errors import (
    BadCompressedFrame,
    EncodingDisallowed,
    MessageTooLarge,
    RatioTooHigh,
    SizeMismatch,
    UndeclaredSize,
    UnknownEncoding,
)
from protocol.registry import PluginRegistry

ENTRY_POINT_GROUP: Final = "ayudantia.encodings"
PLUGIN_IDS: Final = range(64, 256)
IDENTITY_ID: Final = 0
NONE: Final = "none"  # what --compress calls the identity encoding

MAX_RATIO: Final = 256  # text compresses 3-10x, repetitive JSON 20-50x: far below this
RATIO_FLOOR: Final = 1024 * 1024  # any frame may inflate this much, whatever its size

Buffer = bytes | bytearray | memoryview


def inflate_limit(compressed: int) -> int:
    """The most a frame of ``compressed`` bytes may inflate to, before ``max_message``.

    A ratio, so memory a peer makes us spend stays proportional to the bytes it sent; with
    a floor, so a small frame of something very repetitive (a page of zeros, a blank
    board) still passes: its cost is bounded by the floor.
    """
    return max(RATIO_FLOOR, compressed * MAX_RATIO)


@dataclass(frozen=True)
class Encoding:
    """One compression format for frame payloads.

    ``declared_size(data)`` is the decompressed size the frame declares (None when it
    declares none); ``inflate(data, size)`` returns exactly ``size`` bytes or raises.
    """

    name: str
    id: int
    compressor: Callable[[Buffer, int | None], bytes] = field(repr=False)
    declared_size: Callable[[Buffer], int | None] = field(repr=False)
    inflate: Callable[[Buffer, int], bytes] = field(repr=False)
    description: str = ""

    def compress(self, data: Buffer, level: int | None = None) -> bytes:
        return self.compressor(data, level)

    def decompress(self, data: Buffer, room: int, limit: int) -> bytes:
        """The frame's data inflated, refused before allocating when it could be a bomb.

        ``room`` is what ``max_message`` still allows in this message, ``limit`` the
        ``max_message`` itself (for the error's words).
        """
        try:
            declared = self.declared_size(data)
        except Exception as exc:  # each library has its own parse errors
            raise BadCompressedFrame(self.name, f"{type(exc).__name__}: {exc}") from exc
        if declared is None:
            raise UndeclaredSize(self.name)
        if declared > room:
            raise MessageTooLarge(limit - room + declared, limit)
        allowed = inflate_limit(len(data))
        if declared > allowed:
            raise RatioTooHigh(self.name, len(data), declared, allowed)
        try:
            out = self.inflate(data, declared)
        except Exception as exc:
            raise SizeMismatch(self.name, declared, f"{type(exc).__name__}: {exc}") from exc
        if len(out) != declared:
            raise SizeMismatch(self.name, declared, f"inflated to {len(out)} bytes")
        return out


@dataclass(frozen=True)
class Compression:
    """What a sender applies: an encoding and its level (None: the library's default)."""

    encoding: Encoding
    level: int | None = None

    @property
    def id(self) -> int:
        return self.encoding.id

    def apply(self, data: Buffer) -> bytes:
        return self.encoding.compress(data, self.level)


# --- built-in encodings -------------------------------------------------------------------

_local = threading.local()  # zstd contexts are not thread-safe; one per thread and level


def _zstd_compress(data: Buffer, level: int | None) -> bytes:
    key = f"zc{level}"
    cctx = getattr(_local, key, None)
    if cctx is None:
        cctx = zstandard.ZstdCompressor(level=3 if level is None else level)
        setattr(_local, key, cctx)
    return cctx.compress(data)


def _zstd_declared(data: Buffer) -> int | None:
    size = zstandard.get_frame_parameters(data).content_size
    return None if size == zstandard.CONTENTSIZE_UNKNOWN else size


def _zstd_inflate(data: Buffer, size: int) -> bytes:
    dctx = getattr(_local, "zd", None)
    if dctx is None:
        dctx = _local.zd = zstandard.ZstdDecompressor()
    # zstd itself checks that the frame inflates to its declared content size, and writes
    # into exactly that much memory; a second frame or trailing bytes are refused.
    return dctx.decompress(data, max_output_size=size, allow_extra_data=False)


_LZ4_FLG_CONTENT_SIZE: Final = 0x08
_LZ4_FLG_CONTENT_CHECKSUM: Final = 0x04
_LZ4_FLG_DICT_ID: Final = 0x01
_LZ4_MAGIC: Final = b"\x04\x22\x4d\x18"


def _lz4_compress(data: Buffer, level: int | None) -> bytes:
    return lz4.frame.compress(data, compression_level=level or 0, store_size=True)


def _lz4_declared(data: Buffer) -> int | None:
    view = memoryview(data)
    if bytes(view[:4]) != _LZ4_MAGIC or len(view) < 7:
        raise ValueError("not an lz4 frame")
    if not view[4] & _LZ4_FLG_CONTENT_SIZE:  # get_frame_info says 0 for "unknown" too
        return 0 if _lz4_empty(view) else None
    return int(lz4.frame.get_frame_info(data)["content_size"])


def _lz4_empty(view: memoryview) -> bool:
    """Whether an lz4 frame without a content size holds no block: nothing at all.

    liblz4 cannot declare a content size of 0 (0 means "unknown" in its API), so an empty
    payload leaves as header, end mark and perhaps the content checksum; that frame
    provably inflates to 0 bytes, and refusing it refused every empty message.
    """
    flg = view[4]
    header = 7 + (4 if flg & _LZ4_FLG_DICT_ID else 0)
    checksum = 4 if flg & _LZ4_FLG_CONTENT_CHECKSUM else 0
    end_mark = view[header : header + 4]
    return len(view) == header + 4 + checksum and end_mark == b"\0\0\0\0"


def _lz4_inflate(data: Buffer, size: int) -> bytes:
    dec = lz4.frame.LZ4FrameDecompressor()
    out = dec.decompress(data, max_length=size)
    if not dec.eof or dec.unused_data:
        raise ValueError("the frame does not end where its declared content does")
    return out


BUILTINS: tuple[Encoding, ...] = (
    Encoding(
        "identity",
        IDENTITY_ID,
        lambda data, _level: bytes(data),
        len,
        lambda data, _size: bytes(data),
        "no compression",
    ),
    Encoding("zstd", 1, _zstd_compress, _zstd_declared, _zstd_inflate, "Zstandard frame, level 3"),
    Encoding("lz4", 2, _lz4_compress, _lz4_declared, _lz4_inflate, "LZ4 frame format"),
)
DEFAULT_ACCEPT: Final = frozenset({"identity", "zstd", "lz4"})


# --- the registry -------------------------------------------------------------------------


class Registry(PluginRegistry[Encoding]):
    """Encodings by name and by wire id; plug-ins from entry points load on first lookup.

    ``register`` adds a third-party encoding (ids 64-255; a clash raises ValueError).
    """

    item_type = Encoding
    group = ENTRY_POINT_GROUP

    def __init__(
        self, encodings: Iterable[Encoding] = BUILTINS, *, load_plugins: bool = True
    ) -> None:
        super().__init__(encodings, load_plugins=load_plugins)

    def _refuse_add(self, encoding: Encoding, *, builtin: bool) -> None:
        if not builtin and encoding.id not in PLUGIN_IDS:
            raise ValueError(f"plug-in encoding {encoding.name!r}: ids 64-255, not {encoding.id}")
        if encoding.name in self._by_name or encoding.id in self._by_id:
            raise ValueError(f"encoding {encoding.name!r} (id {encoding.id}) clashes")

    def _not_an_item(self, ep_name: str, obj: object) -> Exception:
        return ValueError(f"entry point {ep_name!r} gave no Encoding")

    def _unknown(self, key: str | int) -> Exception:
        return UnknownEncoding(key, self.available())

    def _disallowed(self, name: str, accepted: frozenset[str]) -> Exception:
        return EncodingDisallowed(name, accepted)

    def get(self, key: str | int) -> Encoding:
        """The encoding by name (``none`` is identity) or wire id; UnknownEncoding otherwise."""
        return super().get(IDENTITY_ID if key == NONE else key)

    def choices(self) -> list[str]:
        """What ``--compress`` offers: ``none`` and every real encoding."""
        return [NONE] + [n for n in self.available() if n != "identity"]

    def accept_checker(self, accept: Iterable[str] = DEFAULT_ACCEPT) -> Callable[[int], Encoding]:
        """id -> Encoding, raising at the header for an unknown or refused encoding."""
        accepted = frozenset(self.get(name).name for name in accept) | {"identity"}
        return self._checker(accepted)


REGISTRY = Registry()


def get(key: str | int) -> Encoding:
    return REGISTRY.get(key)


def compression_for(name: str, level: int | None = None) -> Compression | None:
    """What a sender configured with ``--compress name --compress-level level`` applies.

    None for ``none``/``identity``: frames then leave exactly as before this field existed.
    """
    encoding = REGISTRY.get(name)
    return None if encoding.id == IDENTITY_ID else Compression(encoding, level)


def compression_by_id(encoding_id: int) -> Compression | None:
    """Compression in the encoding a message arrived in (what the eco answers with)."""
    return compression_for(REGISTRY.get(encoding_id).name) if encoding_id else None
