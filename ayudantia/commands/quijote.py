"""``ayudantia quijote``: the whole book to an eco server and back, verified and timed."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ayudantia import rules
from ayudantia.commands._roles import wire_settings
from ayudantia.config import ConfigError, Option, wire_options
from ayudantia.quijote import ENV_VAR, book_message, book_path, sha256_file
from protocol.errors import ConnectionClosed, TransportError, Truncated
from protocol.streams import DEFAULT_STREAM_CHUNK
from protocol.transport import Connection
from roles.eco import Eco
from roles.wire import WireSettings

NAME = "quijote"
HELP = "send Don Quijote to an eco server and back; check it and print codec, bytes, frames, MB/s"


def options() -> list[Option]:
    return [
        Option(
            "to",
            None,
            "eco server HOST:PORT (default: start one in-process)",
            rules.HOSTPORT,
            "HOST:PORT",
        ),
        *wire_options(),
        Option(
            "file",
            None,
            "the book, UTF-8 text (default: a cached download); with --stream any file",
            rules.INPUT_FILE,
            "PATH",
            env_name=ENV_VAR,
        ),
        Option(
            "repeat", 1, "round trips to make; the best is reported", rules.integer(1, 10_000), "N"
        ),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stream",
        action="store_true",
        help="send the book as raw bytes, chunk by chunk, and check its sha256",
    )


@dataclass(frozen=True)
class RoundTrip:
    codec: str
    chunk_size: int
    wire_bytes: int  # one way
    frames: int  # one way
    seconds: float  # best round trip
    verified: bool
    detail: str
    encoding: str = "none"
    down_bytes: int = -1  # the echo's way back; differs when it compresses otherwise

    @property
    def mb_per_s(self) -> float:
        """Megabytes (10^6) moved per second, counting both directions of the round trip."""
        down = self.wire_bytes if self.down_bytes < 0 else self.down_bytes
        return (self.wire_bytes + down) / self.seconds / 1e6 if self.seconds else 0.0

    def report(self) -> str:
        chunk = f"{self.chunk_size:,} B" if self.chunk_size else "unchunked"
        return "\n".join(
            [
                f"codec        {self.codec}",
                f"chunk size   {chunk}",
                f"compression  {self.encoding}",
                f"wire bytes   {self.wire_bytes:,} up, {max(self.down_bytes, 0):,} down",
                f"frames       {self.frames:,} each way",
                f"seconds      {self.seconds:.6f} (round trip)",
                f"MB/s         {self.mb_per_s:,.1f} (both directions)",
                f"verified     {'yes' if self.verified else 'NO'}: {self.detail}",
            ]
        )


@contextlib.contextmanager
def eco_target(to: tuple[str, int] | None, wire: WireSettings) -> Iterator[tuple[str, int]]:
    """The eco server to talk to: the one given, or one started here on a free port."""
    if to is not None:
        yield to
        return
    with Eco("127.0.0.1", 0, wire=wire) as server:
        yield server.address


def round_trip_message(conn: Connection, text: str, repeat: int) -> RoundTrip:
    best = float("inf")
    verified = True
    sent = None
    for _ in range(max(repeat, 1)):
        message = book_message(text)
        start = time.perf_counter()
        before = conn.bytes_received
        sent = conn.send(message)
        back = conn.recv()
        down = conn.bytes_received - before
        best = min(best, time.perf_counter() - start)
        verified = verified and back == message
    assert sent is not None
    detail = f"echo equals the {len(text):,}-character message" if verified else "echo differs"
    return RoundTrip(
        conn.codec.name,
        conn.chunk_size,
        sent.wire_bytes,
        sent.frames,
        best,
        verified,
        detail,
        compression_name(conn),
        down,
    )


def compression_name(conn: Connection) -> str:
    """How frames leave: ``none``, or the encoding and its level."""
    compression = conn.compression
    if compression is None:
        return "none"
    level = "default" if compression.level is None else compression.level
    return f"{compression.encoding.name} (level {level})"


def round_trip_stream(conn: Connection, path: Path, repeat: int) -> RoundTrip:
    expected = sha256_file(path)
    chunk = conn.chunk_size or DEFAULT_STREAM_CHUNK
    best = float("inf")
    verified = True
    frames = wire = down = 0
    for _ in range(max(repeat, 1)):
        digest = hashlib.sha256()
        start = time.perf_counter()
        before = conn.bytes_received
        with path.open("rb") as fh:
            # The eco echoes frame by frame, so we must read while we write or both sides'
            # socket buffers fill and deadlock. A helper thread sends; this one receives.
            result: dict[str, Any] = {}

            def send(fh=fh, result=result) -> None:
                try:
                    result["sent"] = conn.send_stream(fh, chunk_size=chunk)
                except BaseException as exc:  # surfaced below
                    result["error"] = exc

            sender = threading.Thread(target=send, name="quijote-sender", daemon=True)
            sender.start()
            for block in conn.recv_stream():
                digest.update(block)
            sender.join()
        if "error" in result:
            raise result["error"]
        best = min(best, time.perf_counter() - start)
        frames, wire = result["sent"].frames, result["sent"].wire_bytes
        down = conn.bytes_received - before
        verified = verified and digest.hexdigest() == expected
    detail = f"sha256 {expected[:16]}… {'matches' if verified else 'DIFFERS'}"
    return RoundTrip(
        "raw", chunk, wire, frames, best, verified, detail, compression_name(conn), down
    )


def check(settings: dict[str, Any], args: argparse.Namespace) -> None:
    """Before anything starts: the notebook's message is a map, which raw cannot carry."""
    if settings["codec"] == "raw" and not args.stream:
        raise ConfigError(
            "codec raw carries bytes, and the notebook's message is a map: "
            "add --stream to send the book as raw bytes, or choose another codec"
        )


def read_book(path: Path) -> str:
    """The book as text; a file that is not UTF-8 is a setting error, not a traceback."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"the book {path} is not UTF-8 text (byte {exc.start} is not valid UTF-8); "
            "give a UTF-8 copy, or --stream to send any file as bytes"
        ) from None


def connect(wire: WireSettings, host: str, port: int) -> Connection:
    try:
        return wire.connect(host, port)
    except OSError as exc:
        raise TransportError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None


def main(settings: dict[str, Any], args: argparse.Namespace) -> int:
    path = book_path(settings["file"])
    text = None if args.stream else read_book(path)
    wire = wire_settings(settings)
    with (
        eco_target(settings["to"], wire) as (host, port),
        contextlib.closing(connect(wire, host, port)) as conn,
    ):
        try:
            if text is None:
                result = round_trip_stream(conn, path, settings["repeat"])
            else:
                result = round_trip_message(conn, text, settings["repeat"])
        except (ConnectionClosed, Truncated) as exc:
            if conn.messages_received:
                raise
            raise TransportError(
                f"the eco at {host}:{port} closed the connection without answering ({exc}); "
                f"it probably refuses these settings (codec {wire.codec}, "
                f"max message {wire.max_message} B, {'a' if wire.key else 'no'} key, "
                f"{'TLS' if wire.tls_on else 'no TLS: a TLS server needs --tls-ca'}): see its log"
            ) from None
    print(result.report(), flush=True)
    return 0 if result.verified else 1
