"""The echo server the notebook's first clients talk to.

It answers every message with the same message, in the same codec and chunking. It
decodes before answering, so a malformed payload is caught (and its sender dropped) as
any receiver would, and it sends back the original bytes. A raw chunked message is passed
back frame by frame as it arrives: the eco never holds a whole stream in memory.
"""

from __future__ import annotations

from protocol.transport import Connection, Received
from roles.base import Server


class Eco(Server):
    role = "eco"

    def handle(self, conn: Connection) -> None:
        while True:
            incoming = conn.recv_any(stream_raw=True)
            if isinstance(incoming, Received):
                conn.send_payload(
                    incoming.codec.id, incoming.payload, chunk_size=incoming.chunk_size
                )
                continue
            with conn.open_stream(0) as out:
                for chunk in incoming:
                    out.write(chunk.data, last=chunk.last)
