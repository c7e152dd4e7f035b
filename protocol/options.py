"""What an event-loop connection may cost (:class:`Limits`) and how it speaks (:class:`Speech`).

Two frozen records a server builds once and hands to every connection, so a connection
holds a reference, not a copy, of its settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from protocol.codecs import DEFAULT_ACCEPT, Registry
from protocol.encodings import Compression
from protocol.header import DEFAULT_MAX_MESSAGE

DEFAULT_WRITE_HIGH: Final = 256 * 1024
DEFAULT_MAX_HELD: Final = 256


@dataclass(frozen=True)
class Limits:
    """What one connection may cost and how long it may take (None: no limit)."""

    max_message: int = DEFAULT_MAX_MESSAGE
    idle_timeout: float | None = 300.0
    read_timeout: float | None = 10.0
    message_timeout: float | None = 120.0
    send_timeout: float | None = 10.0
    write_high: int = DEFAULT_WRITE_HIGH
    max_held: int = DEFAULT_MAX_HELD
    # A server stops reading a peer whose answers pile up. A link (client of one server)
    # must not: the replies it reads are what lets that server read it again.
    pause_reads_on_writes: bool = True


@dataclass(frozen=True)
class Speech:
    """How a connection speaks: what it sends and what it accepts."""

    codec: str = "json"
    chunk_size: int = 0
    accept: frozenset[str] = field(default_factory=lambda: DEFAULT_ACCEPT)
    key: bytes | None = field(default=None, repr=False)
    registry: Registry | None = None
    compression: Compression | None = None  # what every frame sent is compressed with
