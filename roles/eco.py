"""The echo server the notebook's first clients talk to.

It answers every message with the same message, in the same codec, chunking and content
encoding (compression) it came in. It decodes before
answering, so a malformed payload is caught (and its sender dropped) as any receiver would,
and it sends back the original bytes. A raw chunked message is passed back frame by frame
as it arrives, each frame as it came: the eco never holds a whole stream in memory, and
never sends more frames than it received.

A whole chunked message comes back chunked at the size of its first frame, unless that
would take more frames than the message came in (a 1-byte first frame before a 4 MiB one
would come back as four million frames): then at the size that keeps the count.
"""

from __future__ import annotations

from protocol.aio import FrameConnection
from protocol.encodings import compression_by_id
from protocol.errors import DecodeError
from protocol.framing import Chunk
from protocol.transport import Received
from roles.base import Server

RAW_ID = 0


class Eco(Server):
    role = "eco"

    def stream(self, codec_id: int) -> bool:
        return codec_id == RAW_ID

    def message_received(self, conn: FrameConnection, received: Received) -> None:
        conn.send_payload(
            received.codec.id,
            received.payload,
            chunk_size=received.echo_chunk_size,
            compression=compression_by_id(received.encoding_id),
        )

    def chunk_received(self, conn: FrameConnection, chunk: Chunk) -> None:
        compression = compression_by_id(chunk.encoding_id)
        conn.send_frame(chunk.codec_id, chunk.data, more=not chunk.last, compression=compression)

    def decode_failed(self, conn: FrameConnection, error: DecodeError) -> None:
        raise error  # the eco's client is dropped: it sent what its codec cannot read
