"""The event-loop front-end (protocol/aio.py) over real loopback sockets, on both loops.

Flow control both ways, every deadline (idle, per read, per message, send), errors that
drop one peer, a half-closed peer still answered, and the coroutine API.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from protocol import aio
from protocol.aio import FrameConnection, Handler, Limits, Speech
from protocol.errors import BadMagic, Timeout
from protocol.framing import Chunk, FrameDecoder, Message, encode_message
from protocol.transport import Received
from roles.loop import new_event_loop

pytestmark = pytest.mark.timeout(60)
LOOPS = ["asyncio", "uvloop"]


def run(kind: str, main: Callable[[], Awaitable[Any]]) -> Any:
    loop, _ = new_event_loop(kind)
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


class Recorder(Handler):
    """Echoes (unless told to hold) and records what happened."""

    def __init__(self, *, echo: bool = True, hold: bool = False) -> None:
        self.echo = echo
        self.hold = hold
        self.received: list[Any] = []
        self.conns: list[FrameConnection] = []
        self.lost: asyncio.Future[BaseException | None] | None = None

    def connection_made(self, conn: FrameConnection) -> None:
        self.conns.append(conn)
        self.lost = asyncio.get_running_loop().create_future()

    def message_received(self, conn: FrameConnection, received: Received) -> None:
        self.received.append(received.obj)
        if self.hold:
            conn.hold()
        elif self.echo:
            conn.send_payload(received.codec.id, received.payload)

    def stream(self, codec_id: int) -> bool:
        return codec_id == 0

    def chunk_received(self, conn: FrameConnection, chunk: Chunk) -> None:
        conn.send_frame(chunk.codec_id, chunk.data, more=not chunk.last)

    def connection_lost(self, conn: FrameConnection, error: BaseException | None) -> None:
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(error)


async def serve(
    handler: Handler, *, limits: Limits | None = None, speech: Speech | None = None
) -> tuple[asyncio.AbstractServer, int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: FrameConnection(handler, speech=speech, limits=limits, side="server"),
        "127.0.0.1",
        0,
    )
    return server, server.sockets[0].getsockname()[1]


def header(codec: int, length: int, flags: int = 0) -> bytes:
    return struct.pack(">2sBBBBI", b"AY", 1, codec, flags, 0, length)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("codec", ["json", "msgpack"])
@pytest.mark.parametrize("chunk", [0, 7])
@pytest.mark.parametrize("key", [None, b"k3y"])
def test_round_trip_with_the_coroutine_api(loop, codec, chunk, key, notebook_message):
    async def main() -> list[Any]:
        speech = Speech(codec=codec, chunk_size=chunk, key=key)
        server, port = await serve(Recorder(), speech=speech)
        async with server:
            conn = await aio.connect("127.0.0.1", port, speech=speech)
            got = []
            for i in range(3):
                await conn.send({**notebook_message, "n": i})
                got.append(await conn.recv())
            conn.close()
            return got

    got = run(loop, main)
    assert got == [{**notebook_message, "n": i} for i in range(3)]


@pytest.mark.parametrize("loop", LOOPS)
def test_any_split_of_the_input_gives_the_same_messages(loop):
    """A message dripped one byte per write arrives whole; a raw stream echoes frame by frame."""
    wire = encode_message(1, b'{"a":1}') + encode_message(0, b"abcdefghij", 3)

    async def main() -> tuple[list[Any], bytes]:
        handler = Recorder()
        server, port = await serve(handler)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for i in range(len(wire)):
                writer.write(wire[i : i + 1])
                await writer.drain()
            back = await asyncio.wait_for(reader.readexactly(len(wire)), 10)
            writer.close()
            return handler.received, back

    received, back = run(loop, main)
    assert received == [{"a": 1}]
    assert back == wire  # same frames out as in: json whole, the raw stream chunk by chunk


@pytest.mark.parametrize("loop", LOOPS)
def test_held_work_pauses_reading_that_peer_and_loses_nothing(loop):
    """Flow control in: past max_held pending answers the peer is not read; releasing resumes."""

    async def main() -> tuple[int, bool, int]:
        handler = Recorder(hold=True)
        server, port = await serve(handler, limits=Limits(max_held=4))
        async with server:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setblocking(False)
            frame = encode_message(1, b"[1]")
            for _ in range(1000):
                await asyncio.get_running_loop().sock_sendall(sock, frame)
                if handler.received and handler.conns[0].reading_paused:
                    break
            await asyncio.sleep(0.2)
            conn = handler.conns[0]
            during, paused = len(handler.received), conn.reading_paused
            handler.hold = False
            handler.echo = False
            for _ in range(during):
                conn.release()
            for _ in range(100):  # every message sent is read once the peer has room
                await asyncio.sleep(0.02)
                if not conn.reading_paused and len(handler.received) > during:
                    break
            sock.close()
            return during, paused, len(handler.received)

    during, paused, after = run(loop, main)
    assert paused and during == 4
    assert after > during


@pytest.mark.parametrize("loop", LOOPS)
def test_a_peer_that_never_reads_is_bounded_then_dropped_on_the_send_deadline(loop):
    """Flow control out: the write buffer stops growing (reading pauses), then send_timeout."""
    payload = b"x" * (1 << 20)

    async def main() -> tuple[int, BaseException | None, int]:
        handler = Recorder()  # echoes: the reply piles up at a peer that never reads
        limits = Limits(send_timeout=0.5, write_high=64 * 1024)
        server, port = await serve(handler, limits=limits)
        async with server:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.setblocking(False)
            frame = encode_message(0, payload)
            loop_ = asyncio.get_running_loop()
            sent = 0
            with contextlib.suppress(OSError):
                for _ in range(64):  # at most 64 MiB; the server must stop reading long before
                    await asyncio.wait_for(loop_.sock_sendall(sock, frame), 1.0)
                    sent += 1
            assert handler.lost is not None
            error = await asyncio.wait_for(handler.lost, 10)
            sock.close()
            return sent, error, len(handler.received)

    sent, error, _ = run(loop, main)
    assert isinstance(error, Timeout) and "send_timeout" in str(error)
    assert sent < 64  # pushed back, not buffered without end


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    ("wire", "limits", "words"),
    [
        (b"", Limits(idle_timeout=0.3), "idle_timeout"),
        (b"AY\x01", Limits(read_timeout=0.3), "middle of a message"),
        (header(1, 100) + b"[", Limits(read_timeout=0.3), "middle of a message"),
    ],
    ids=["idle", "half-header", "half-payload"],
)
def test_deadlines_drop_silent_peers(loop, wire, limits, words):
    async def main() -> BaseException | None:
        handler = Recorder()
        server, port = await serve(handler, limits=limits)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(wire)
            await asyncio.wait_for(reader.read(), 10)  # EOF: the server closed on us
            writer.close()
            assert handler.lost is not None
            return await asyncio.wait_for(handler.lost, 5)

    error = run(loop, main)
    assert isinstance(error, Timeout) and words in str(error)


@pytest.mark.parametrize("loop", LOOPS)
def test_message_deadline_stops_a_drip_feed(loop):
    async def main() -> BaseException | None:
        handler = Recorder()
        limits = Limits(read_timeout=1.0, message_timeout=0.5)
        server, port = await serve(handler, limits=limits)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            wire = header(1, 1000) + b"[" + b"1," * 400
            for i in range(0, len(wire)):  # a byte every 20 ms: each read on time, never done
                if writer.is_closing() or reader.at_eof():
                    break
                writer.write(wire[i : i + 1])
                await asyncio.sleep(0.02)
                assert handler.lost is not None
                if handler.lost.done():
                    break
            writer.close()
            assert handler.lost is not None
            return await asyncio.wait_for(handler.lost, 5)

    error = run(loop, main)
    assert isinstance(error, Timeout) and "message_timeout" in str(error)


@pytest.mark.parametrize("loop", LOOPS)
def test_bad_bytes_drop_that_peer_with_a_typed_error(loop):
    async def main() -> tuple[BaseException | None, Any]:
        handler = Recorder()
        server, port = await serve(handler)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\n\r\n")
            await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert handler.lost is not None
            error = await asyncio.wait_for(handler.lost, 5)
            good = await aio.connect("127.0.0.1", port)
            await good.send({"still": "here"})
            return error, await good.recv()

    error, echoed = run(loop, main)
    assert isinstance(error, BadMagic)
    assert echoed == {"still": "here"}


@pytest.mark.parametrize("loop", LOOPS)
def test_a_half_closed_peer_still_gets_its_pending_answers(loop):
    """A peer that sends, then shuts its writing half, still receives what it asked for."""

    async def main() -> Any:
        handler = Recorder(hold=True)
        server, port = await serve(handler)
        async with server:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(encode_message(1, b'{"q":1}'))
            sock.shutdown(socket.SHUT_WR)
            for _ in range(100):
                await asyncio.sleep(0.01)
                if handler.received:
                    break
            await asyncio.sleep(0.1)  # the EOF has arrived; the answer is still owed
            conn = handler.conns[0]
            conn.send_obj({"a": 1})
            conn.release()
            sock.settimeout(5)
            decoder = FrameDecoder()
            loop_ = asyncio.get_running_loop()
            while not isinstance(event := decoder.next_event(), Message):
                decoder.receive_data(await loop_.run_in_executor(None, sock.recv, 4096))
            sock.close()
            return event

    event = run(loop, main)
    assert bytes(event.payload) == b'{"a":1}'


@pytest.mark.parametrize("loop", LOOPS)
def test_both_ends_have_tcp_nodelay_from_the_loop(loop):
    """FrameConnection no longer sets TCP_NODELAY itself (a getsockname and a setsockopt per
    connection): the loop's transports must, or every small answer would meet Nagle and a
    delayed ACK (tens of ms a round trip)."""

    async def main() -> tuple[int, int]:
        handler = Recorder()
        server, port = await serve(handler)
        async with server:
            conn = await aio.connect("127.0.0.1", port)
            await conn.send({"n": 1})
            assert await conn.recv() == {"n": 1}
            (accepted,) = handler.conns
            flags = tuple(
                c.transport.get_extra_info("socket").getsockopt(
                    socket.IPPROTO_TCP, socket.TCP_NODELAY
                )
                for c in (accepted, conn)
            )
            conn.close()
            return flags  # type: ignore[return-value]

    server_side, client_side = run(loop, main)
    assert server_side and client_side
