"""Refusal frames: the one frame a peer sends to say why it is closing.

Only errors found at a header map to a refusal (see :func:`refusal_for`), and the text is
cleaned and capped, so a refusal never echoes the peer's bytes back.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from protocol.errors import (
    REFUSAL_CODES,
    AyudantiaError,
    BadFlags,
    BadMagic,
    BadSignature,
    CodecChanged,
    ContentDisallowed,
    EncodingDisallowed,
    MessageTooLarge,
    RatioTooHigh,
    SignatureMissing,
    SignatureUnexpected,
    UnknownCodec,
    UnknownEncoding,
    UnsupportedVersion,
)
from protocol.header import FLAG_REFUSAL, HEADER, MAGIC, MAX_REFUSAL_PAYLOAD, VERSION


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
    if isinstance(exc, RatioTooHigh):
        return _CODE["too_large"], (
            f"a {exc.encoding} frame of {exc.compressed} bytes may inflate to {exc.allowed} "
            f"bytes here, not {exc.declared}: send smaller frames"
        )
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
