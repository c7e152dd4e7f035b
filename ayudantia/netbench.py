"""The book across emulated links: what the network benchmark and the compression lesson measure.

Every measurement is a round trip of the notebook's message with the whole book as
"Texto": encode, compress (per frame), send, the eco decodes and answers in the same codec
and encoding, receive, inflate, decode. The eco and each link's proxy run in processes of
their own (as the class's programs would), so none of them shares an interpreter lock with
the process that times.

On loopback compression only costs; on a slow link it pays. Where it starts to pay is the
**break-even bandwidth**: the bits a round trip saves divided by the CPU time it adds,
measured on loopback, where the wire is free. Below that bandwidth the saved wire time
exceeds the added CPU time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ayudantia.procs import terminate
from ayudantia.quijote import book_message
from protocol import codecs
from protocol.encodings import compression_for
from protocol.transport import Connection

_LISTENING = re.compile(r"listening on \[?([\w.:-]+?)\]?:(\d+)\b")


@dataclass(frozen=True)
class LinkCase:
    """A named link: ``flags`` for ``ayudantia proxy`` (none: straight to the eco)."""

    name: str
    flags: tuple[str, ...] = ()
    rate_bps: float | None = None  # bits per second
    delay: float = 0.0  # one way, seconds

    @property
    def direct(self) -> bool:
        return not self.flags


DIRECT = LinkCase("direct")
LINKS: tuple[LinkCase, ...] = (
    DIRECT,
    LinkCase("1gbit-1ms", ("--rate", "1gbit", "--delay", "1ms"), 1e9, 0.001),
    LinkCase("100mbit-10ms", ("--rate", "100mbit", "--delay", "10ms"), 100e6, 0.010),
    LinkCase("10mbit-40ms", ("--rate", "10mbit", "--delay", "40ms"), 10e6, 0.040),
)


# --- processes ----------------------------------------------------------------------------


@contextlib.contextmanager
def spawn(*args: str, timeout: float = 30.0) -> Iterator[tuple[str, int]]:
    """Run ``python -m ARGS`` until it prints "listening on HOST:PORT"; always reaped."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        for line in proc.stdout:
            m = _LISTENING.search(line)
            if m:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not start in {timeout:g} s")
        else:
            raise RuntimeError(f"{' '.join(args)} exited before listening")
        yield m[1], int(m[2])
    finally:
        terminate(proc, 10.0)
        if proc.stdout is not None:
            proc.stdout.close()


def eco_process() -> contextlib.AbstractContextManager[tuple[str, int]]:
    """An eco that accepts every registered codec (pickle included: a benchmark's own peer)."""
    return spawn("ayudantia.netbench", "--eco")


def proxy_process(
    link: LinkCase, target: tuple[str, int]
) -> contextlib.AbstractContextManager[tuple[str, int]]:
    return spawn("ayudantia", "proxy", "--to", f"{target[0]}:{target[1]}", *link.flags)


# --- measuring ------------------------------------------------------------------------------


def book_object(codec: str, text: str) -> Any:
    return text.encode("utf-8") if codec == "raw" else book_message(text)


def connect(
    address: tuple[str, int], codec: str, encoding: str, level: int | None = None
) -> Connection:
    return Connection.connect(
        *address,
        codec=codec,
        accept=codecs.available(),
        compression=compression_for(encoding, level),
        read_timeout=60,
        idle_timeout=60,
        message_timeout=300,
        send_timeout=60,
    )


def round_trip(conn: Connection, obj: Any) -> tuple[float, int]:
    """Seconds for one round trip of ``obj`` and the bytes it took on the wire one way."""
    start = time.perf_counter()
    sent = conn.send(obj)
    back = conn.recv()
    elapsed = time.perf_counter() - start
    if back != obj:
        raise AssertionError("the eco's answer differs from what was sent")
    return elapsed, sent.wire_bytes


def break_even_bps(
    plain_s: float, packed_s: float, plain_wire: int, packed_wire: int
) -> float | None:
    """Bandwidth (bit/s) below which compression pays, from loopback round trips.

    A round trip moves the message twice. ``None`` when compression saves no bytes (it
    never pays); ``inf`` when it costs no time either (it always pays).
    """
    saved_bits = 2 * (plain_wire - packed_wire) * 8
    if saved_bits <= 0:
        return None
    extra = packed_s - plain_s
    return float("inf") if extra <= 0 else saved_bits / extra


def format_bps(bps: float | None) -> str:
    if bps is None:
        return "never"
    if bps == float("inf"):
        return "always"
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.3g} {unit}"
    return f"{bps:.3g} bit/s"


def compression_lesson(
    text: str, rounds: int = 3, codec: str = "msgpack", link: LinkCase = LINKS[2]
) -> dict[str, Any]:
    """The compression lesson's numbers: the book over loopback and over ``link`` (100 Mbit/s
    10 ms unless told), with and without zstd (median of ``rounds`` round trips each), and
    the break-even bandwidth on this machine. Plain numbers; the lesson words them.

    Returns ``{"codec", "rounds", "cases": [{"link", "encoding", "seconds", "wire_bytes"}],
    "break_even_bps"}``.
    """
    obj = book_object(codec, text)
    cases: list[dict[str, Any]] = []
    with eco_process() as eco:
        for case in (DIRECT, link):
            with contextlib.ExitStack() as stack:
                address = eco if case.direct else stack.enter_context(proxy_process(case, eco))
                for encoding in ("none", "zstd"):
                    with connect(address, codec, encoding) as conn:
                        round_trip(conn, obj)  # warm-up: connection, codec caches
                        times, wire = [], 0
                        for _ in range(rounds):
                            seconds, wire = round_trip(conn, obj)
                            times.append(seconds)
                    cases.append(
                        {
                            "link": case.name,
                            "encoding": encoding,
                            "seconds": statistics.median(times),
                            "wire_bytes": wire,
                        }
                    )
    plain, packed = cases[0], cases[1]
    return {
        "codec": codec,
        "rounds": rounds,
        "cases": cases,
        "break_even_bps": break_even_bps(
            plain["seconds"], packed["seconds"], plain["wire_bytes"], packed["wire_bytes"]
        ),
    }


# --- the eco peer ---------------------------------------------------------------------------


def _serve_eco() -> int:
    from roles.eco import Eco
    from roles.wire import WireSettings

    wire = WireSettings(
        codec="json",
        accept=frozenset(codecs.available()),
        read_timeout=60.0,
        message_timeout=300.0,
        send_timeout=60.0,
    )
    server = Eco("127.0.0.1", 0, wire=wire)
    host, port = server.start()
    print(f"eco listening on {host}:{port} (every codec)", flush=True)
    return server.serve_until_signal()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ayudantia.netbench", description=__doc__)
    parser.add_argument("--eco", action="store_true", help="serve the benchmark's eco")
    parser.add_argument("--lesson", metavar="BOOK", help="print the compression lesson's numbers")
    args = parser.parse_args(argv)
    if args.eco:
        return _serve_eco()
    if args.lesson:
        with open(args.lesson, encoding="utf-8-sig") as fh:
            result = compression_lesson(fh.read())
        for case in result["cases"]:
            print(
                f"{case['link']:>14} {case['encoding']:>5} {case['seconds'] * 1e3:8.1f} ms "
                f"{case['wire_bytes']:>12,} B"
            )
        print(f"break-even bandwidth: {format_bps(result['break_even_bps'])}")
        return 0
    parser.print_usage()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
