"""A framed student connection (sans-IO framing on an asyncio protocol), and the tally of the
answers it gets: what the students, flood and connect-rate scenarios are made of.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, cast

from protocol import codecs
from protocol.framing import CLOSED, NEED_DATA, FrameDecoder, encode_message


class Student(asyncio.Protocol):
    """One student's connection: questions out, answers routed back to their askers by id.

    An answer whose id this student never asked, or already had answered, is counted in
    ``misrouted``: with unique ids per run, that is an answer that reached the wrong student.
    An answer that comes after its asker stopped waiting is counted in ``late``.
    """

    def __init__(self, codec: str = "json", *, read: bool = True) -> None:
        self.codec = codecs.get(codec)
        self.read = read
        self.decoder = FrameDecoder(check_codec=codecs.REGISTRY.accept_checker(["json", "msgpack"]))
        self.transport: asyncio.Transport | None = None
        self.waiting: dict[Any, asyncio.Future[tuple[float, dict[str, Any]]]] = {}
        self.misrouted = 0
        self.late = 0
        self.received = 0  # bytes read: stays 0 for a student that never reads
        self.broken: BaseException | None = None
        self.can_write = asyncio.Event()
        self.can_write.set()

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.set_write_buffer_limits(high=64 * 1024)
        if not self.read:
            self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        try:
            self.decoder.receive_data(data)
            while (event := self.decoder.next_event()) not in (NEED_DATA, CLOSED):
                self._answer(codecs.get(event.codec_id).decode(event.payload))
        except Exception as exc:  # a broken stream ends this student, and says why
            self._fail(exc)
            if self.transport is not None:
                self.transport.abort()

    def eof_received(self) -> bool:
        self._fail(ConnectionError("the server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection lost"))
        self.can_write.set()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    # what a student does
    def _answer(self, message: Any) -> None:
        qid = message.get("id") if isinstance(message, dict) else None
        future = self.waiting.pop(qid, None) if isinstance(qid, str | int) else None
        if future is None:  # never asked on this connection, or answered twice
            self.misrouted += 1
        elif future.done():  # its asker gave up waiting: late, but it did come back
            self.late += 1
        else:
            future.set_result((time.perf_counter(), message))

    def _fail(self, exc: BaseException) -> None:
        if self.broken is None:
            self.broken = exc
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(ConnectionError(str(exc)))
        self.waiting.clear()

    def question_bytes(self, qid: str, tipo: str, de: str) -> bytes:
        payload = self.codec.encode({"id": qid, "tipo": tipo, "de": de})
        return encode_message(self.codec.id, payload)

    def ask(self, qid: str, tipo: str, de: str) -> asyncio.Future[tuple[float, dict[str, Any]]]:
        """Send one question; the future gets (arrival time, answer)."""
        future = asyncio.get_running_loop().create_future()
        if self.broken is not None or self.transport is None or self.transport.is_closing():
            future.set_exception(ConnectionError(f"cannot ask: {self.broken}"))
            return future
        self.waiting[qid] = future
        self.transport.write(self.question_bytes(qid, tipo, de))
        return future

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(
    host: str, port: int, codec: str = "json", *, read: bool = True, rcvbuf: int = 0
) -> Student:
    """A connected :class:`Student`; ``rcvbuf`` shrinks its receive buffer before connecting."""
    loop = asyncio.get_running_loop()
    if rcvbuf:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        where: dict[str, Any] = {"sock": sock}
    else:
        where = {"host": host, "port": port}
    _, student = await loop.create_connection(lambda: Student(codec, read=read), **where)
    if not read:  # again: uvloop starts reading after connection_made, whatever it asked
        student.transport.pause_reading()
    return student


async def answer_of(
    future: Awaitable[tuple[float, dict[str, Any]]], timeout: float
) -> tuple[float, dict[str, Any]] | None:
    """The answer, or None on timeout or a broken connection."""
    try:
        return await asyncio.wait_for(future, timeout)
    except (TimeoutError, ConnectionError, OSError):
        return None


def is_answer(message: dict[str, Any]) -> bool:
    """A real answer carries its text in ``respuesta``; an error answer does not."""
    return isinstance(message.get("respuesta"), str)


@dataclass
class Tally:
    """What came back for a scenario's questions: answers, error answers, none, and latencies."""

    answered: int = 0
    errors: int = 0  # error answers
    failed: int = 0  # no answer: timeout or broken connection
    latencies: list[float] = field(default_factory=list)
    error_texts: dict[str, int] = field(default_factory=dict)  # what the error answers said

    def add(self, asked_at: float, result: tuple[float, dict[str, Any]] | None) -> None:
        if result is None:
            self.failed += 1
            return
        arrived, message = result
        self.latencies.append(arrived - asked_at)
        if is_answer(message):
            self.answered += 1
        else:
            self.errors += 1
            text = str(message.get("error", message))[:120]
            if text in self.error_texts or len(self.error_texts) < 5:
                self.error_texts[text] = self.error_texts.get(text, 0) + 1
