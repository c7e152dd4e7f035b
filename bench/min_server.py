"""The floor under the Docencio's serial path: a minimal uvloop server, same frames, same JSON.

``python -m bench.min_server [--port 0]`` prints ``listening on 127.0.0.1:PORT`` and answers
every json frame (docs/protocol.md's 10-byte header) with the Docencio's "Contenido" answer,
encoded by orjson as the json codec does. No checks, no count, no logs: what is left of
connect-ask-close when nothing but the network and the frames are paid for.
"""

from __future__ import annotations

import argparse
import asyncio
import struct

import orjson
import uvloop

HEADER = struct.Struct(">2sBBBBI")  # magic, version, codec id, flags, encoding, length
ANSWER = "Docencio: respondiendo pregunta de contenido"


class Minimal(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport, self.buf = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= HEADER.size:
            *_, length = HEADER.unpack_from(self.buf)
            if len(self.buf) < HEADER.size + length:
                return
            question = orjson.loads(self.buf[HEADER.size : HEADER.size + length])
            self.buf = self.buf[HEADER.size + length :]
            reply = orjson.dumps({"id": question["id"], "respuesta": ANSWER, "por": "Docencio"})
            self.transport.write(HEADER.pack(b"AY", 1, 1, 0, 0, len(reply)) + reply)  # type: ignore[attr-defined]


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Minimal, "127.0.0.1", port)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    uvloop.run(serve(p.parse_args().port))
