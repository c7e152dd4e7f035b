"""A link you can shape, in user space: a TCP proxy with latency, bandwidth and faults.

The kernel here has no netem qdisc, so ``ayudantia proxy`` emulates the link on an event
loop (the same choice as the servers: uvloop or asyncio). Each direction of each
connection is a :class:`_Direction`: bytes read from one side wait in a timestamped queue
until ``arrival + delay (+ jitter)``, then leave at the rate a token bucket allows. The
latency applies to every byte, not once per connection, and the order of bytes is kept
(jitter never lets a later chunk overtake an earlier one).

Memory per connection is bounded by flow control whatever the rates: when a direction
holds more than its bound (twice the bandwidth-delay product, at least 256 KiB), the
proxy stops reading that side (``pause_reading``) until the queue drains; and it writes
only while the other side's transport is below its high-water mark.

Faults, for the reliability lessons: ``reset_after`` cuts each connection with a TCP
reset once that many bytes have gone through it, both directions counted together (600
bytes up and their 600-byte echo make 1,200), mid-message as often as not: the byte that
reaches the count is the last one forwarded either way, then both sockets are reset.
``stall_every``/``stall_for`` stop all forwarding for ``stall_for`` seconds every
``stall_every`` seconds.

The delay is a minimum, never less: a chunk leaves only once ``now >= arrival + delay``.
Timers on an event loop fire on a millisecond grid, and uvloop's can fire up to a
millisecond *early* (it rounds the delay to whole milliseconds and counts from libuv's
cached clock, which lags). A timer that fires before its chunk is due re-arms for the
rest, rounded up to a whole millisecond, rather than delivering early; rounding up means
each re-arm waits for the clock to move, so a timer never re-fires at the same instant (no
spin), at the cost of a chunk leaving up to a millisecond late. tests/test_proxy.py holds
the proxy to its promise with its own timestamps (``Proxy(record=N)``: no chunk leaves
before its delay, over messages that follow each other closely), and to its figures: a
10 ms delay makes a 20 ms round trip, and a bulk transfer at 100 Mbit/s takes size /
rate, each within 10%.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from ayudantia.pcap import PcapWriter, TcpFlow
from ayudantia.rules import Invalid, Rule
from roles.loop import new_event_loop, stop_loop_thread
from roles.signals import handle_signals

_TICK: Final = 0.001  # the timers' grid: a re-arm waits whole ticks (see the module docstring)
_MIN_QUEUE: Final = 256 * 1024
_MAX_QUEUE: Final = 16 * 1024 * 1024
_UNLIMITED_QUEUE: Final = 4 * 1024 * 1024
_MIN_BURST: Final = 1500  # one Ethernet frame: at 10 Mbit/s, 1.2 ms of link
_BURST_SECONDS: Final = 0.002  # what an idle link lets through at once
_CATCH_UP_SECONDS: Final = 0.05  # what a backlogged link may owe after a late timer

# --- units -------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s)\s*$", re.I)
_DURATION_SCALE: Final = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit|b/s|kb/s|mb/s|gb/s)\s*$", re.I)
_RATE_SCALE: Final = {  # to bytes per second; k/M/G are decimal, as link speeds are
    "bit": 1 / 8,
    "kbit": 1e3 / 8,
    "mbit": 1e6 / 8,
    "gbit": 1e9 / 8,
    "b/s": 1.0,
    "kb/s": 1e3,
    "mb/s": 1e6,
    "gb/s": 1e9,
}


def parse_duration(text: str) -> float:
    """Seconds from ``20ms``, ``1.5s`` or ``500us``; ValueError otherwise."""
    m = _DURATION.match(str(text))
    if not m and _DURATION.match(str(text).strip().removeprefix("-")):
        raise ValueError("a duration cannot be negative (a byte cannot arrive before it left)")
    if not m or not math.isfinite(float(m[1])):  # 400 nines parse as inf: no timer takes it
        raise ValueError(f"{text!r} is not a duration like 20ms or 1.5s")
    return float(m[1]) * _DURATION_SCALE[m[2].lower()]


def parse_rate(text: str) -> float:
    """Bytes per second from ``100mbit``, ``1gbit``, ``500kbit`` or ``12MB/s``."""
    m = _RATE.match(str(text))
    if not m or not 0 < float(m[1]) < math.inf:  # an infinite token bucket cannot pace
        raise ValueError(f"{text!r} is not a rate like 100mbit, 1gbit or 12MB/s")
    return float(m[1]) * _RATE_SCALE[m[2].lower()]


def parse_bytes(text: str) -> int:
    """A positive byte count: ``1000``, ``64K``, ``1M`` (binary multiples)."""
    m = re.match(r"^\s*(\d+)\s*([KMG]?)i?B?\s*$", str(text), re.I)
    if not m or int(m[1]) <= 0:
        raise ValueError(f"{text!r} is not a byte count like 1000 or 64K")
    return int(m[1]) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[m[2].upper()]


def _rule(allowed: str, parse: Callable[[str], Any]) -> Rule:
    def convert(raw: Any) -> Any:
        try:
            return parse(raw)
        except ValueError as exc:
            negative = "negative" in str(exc)  # the one problem worth more than `allowed`
            raise Invalid(str(exc) if negative else "") from None

    return Rule(allowed, convert)


DURATION = _rule("a duration like 20ms, 1.5s or 500us", parse_duration)
RATE = _rule("a rate like 100mbit, 1gbit, 500kbit or 12MB/s", parse_rate)
BYTES = _rule("a positive byte count like 1000 or 64K", parse_bytes)


def format_rate(rate: float | None) -> str:
    if rate is None:
        return "unlimited"
    bits = rate * 8
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bits >= scale:
            return f"{bits / scale:g} {unit}"
    return f"{bits:g} bit/s"


# --- the link ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """What a link does to bytes. Rates in bytes per second (None: unlimited), times in s."""

    delay: float = 0.0
    jitter: float = 0.0
    up_rate: float | None = None  # client -> server
    down_rate: float | None = None  # server -> client
    reset_after: int | None = None  # bytes through the connection, up and down together
    stall_every: float | None = None
    stall_for: float = 0.0

    def __post_init__(self) -> None:
        if self.delay < 0 or self.jitter < 0 or self.stall_for < 0:
            raise ValueError("delay, jitter and stall_for must not be negative")
        if self.jitter > self.delay:
            raise ValueError("jitter must not exceed the delay (a byte cannot arrive early)")
        if self.stall_every is not None and not 0 < self.stall_for < self.stall_every:
            raise ValueError("a stall needs 0 < stall_for < stall_every")

    @classmethod
    def parse(cls, spec: str) -> Link:
        """A link from ``delay=5ms,rate=100mbit`` (keys: the proxy's flags, ``rate`` = both)."""
        values: dict[str, Any] = {}
        parsers: dict[str, Callable[[str], Any]] = {
            "delay": parse_duration,
            "jitter": parse_duration,
            "rate": parse_rate,
            "up_rate": parse_rate,
            "down_rate": parse_rate,
            "reset_after": parse_bytes,
            "stall_every": parse_duration,
            "stall_for": parse_duration,
        }
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, value = part.partition("=")
            key = key.strip().replace("-", "_").lower()
            if not sep or key not in parsers:
                known = ", ".join(k.replace("_", "-") for k in parsers)
                raise ValueError(f"{part!r}: expected KEY=VALUE with KEY one of {known}")
            values[key] = parsers[key](value)
        rate = values.pop("rate", None)
        values.setdefault("up_rate", rate)
        values.setdefault("down_rate", rate)
        return cls(**values)

    def describe(self) -> str:
        """One line: what this link emulates."""
        delay = f"delay {self.delay * 1e3:g} ms"
        if self.jitter:
            delay += f" ± {self.jitter * 1e3:g} ms"
        parts = [delay, f"up {format_rate(self.up_rate)}", f"down {format_rate(self.down_rate)}"]
        if self.reset_after is not None:
            parts.append(f"reset after {self.reset_after:,} bytes (up + down)")
        if self.stall_every is not None:
            parts.append(f"stall {self.stall_for:g} s every {self.stall_every:g} s")
        return ", ".join(parts)

    @property
    def shaped(self) -> bool:
        """Whether this link does anything at all to the bytes."""
        return self != Link()


LINK_RULE = _rule("KEY=VALUE,... e.g. delay=5ms,rate=100mbit", Link.parse)


# --- one direction of one connection ------------------------------------------------------


@dataclass
class Stats:
    """What went through the proxy, per direction."""

    connections: int = 0
    up_bytes: int = 0
    down_bytes: int = 0
    resets: int = 0
    stalls: int = 0

    def describe(self) -> str:
        return (
            f"{self.connections} connections; up (client->server) {self.up_bytes:,} bytes, "
            f"down (server->client) {self.down_bytes:,} bytes; {self.resets} resets"
        )


def _ticks(seconds: float) -> float:
    """A timer's delay rounded up to whole ticks, one at least.

    Rounding up, not to nearest (uvloop's own rounding), so a timer is not set to fire
    before its time; one tick at least, so a timer that did fire early and re-arms for
    the sliver left waits for the clock to move instead of firing again at once.
    """
    return max(1, math.ceil(seconds / _TICK - 1e-9)) * _TICK


class _Direction:
    """Bytes from ``src`` to ``dst``: delayed each by the link's latency, paced by its rate."""

    def __init__(self, session: _Session, rate: float | None, up: bool) -> None:
        self.session = session
        self.link = session.proxy.link
        self.loop = session.loop
        self.rate = rate
        self.up = up
        self.src: _Side | None = None
        self.dst: _Side | None = None
        # [ready, memoryview, arrival]: when the chunk may leave, what is left, when it came
        self.queue: collections.deque[list[Any]] = collections.deque()
        self.queued = 0
        self.last_ready = 0.0
        self.eof = False  # the source finished: after the queue, the destination gets EOF
        self.done = False
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        in_flight = (rate or 0) * (self.link.delay + self.link.jitter)
        if rate is None:
            self.high = _UNLIMITED_QUEUE if self.link.delay else _MIN_QUEUE
        else:
            # Above the bandwidth-delay product, or a paused source would starve the link:
            # bytes read late are delayed late.
            self.high = int(min(_MAX_QUEUE, _MIN_QUEUE + 2 * in_flight))
        self.burst = max(_MIN_BURST, (rate or 0) * _BURST_SECONDS)
        self.catch_up = max(self.burst, (rate or 0) * _CATCH_UP_SECONDS)
        self.tokens = self.burst
        self.stamp = time.perf_counter()

    def feed(self, data: bytes) -> None:
        now = time.perf_counter()
        delay = self.link.delay
        if self.link.jitter:
            delay += random.uniform(-self.link.jitter, self.link.jitter)
        ready = max(now + delay, self.last_ready)  # bytes never overtake each other
        self.last_ready = ready
        self.queue.append([ready, memoryview(data), now])
        self.queued += len(data)
        if self.queued > self.high and self.src is not None:
            self.src.pause()
        self.pump()

    def feed_eof(self) -> None:
        self.eof = True
        self.pump()

    def pump(self) -> None:
        """Forward what is due and allowed; otherwise sleep until it is."""
        if self.done:
            return
        self._forward()
        if not self.done and self.queued < self.high // 2 and self.src is not None:
            self.src.resume()

    def _forward(self) -> None:
        dst = self.dst
        if dst is None or dst.transport is None or dst.write_paused:
            return  # connection_made / resume_writing pump again
        now = time.perf_counter()
        stalled = self.session.proxy.stalled_until(now)
        if stalled:
            self._wake_at(stalled, now)
            return
        while self.queue:
            ready, data, arrival = self.queue[0]
            if now < ready:  # never early, even when a timer fired before its time
                self._wake_at(ready, now)
                return
            n = len(data)
            if self.rate is not None:
                self._refill(ready, now)
                want = min(n, self.burst)
                if self.tokens < want:
                    self._wake_at(now + (want - self.tokens) / self.rate, now)
                    return
                n = min(n, int(self.tokens))
                self.tokens -= n
            n, cut = self.session.allow(n)
            if n:
                record = self.session.proxy.deliveries
                if record is not None:
                    record.append((self.up, arrival, time.perf_counter(), n))
                dst.transport.write(data[:n])
                self.session.count(self.up, n)
                if self.session.flow is not None:
                    self.session.flow.data(self.up, data[:n])
            self.queued -= n
            if n < len(data):
                self.queue[0][1] = data[n:]
            else:
                self.queue.popleft()
            if cut:
                self.session.reset()
                return
            if dst.write_paused:
                return
        if self.eof:
            self.done = True
            dst.send_eof()
            if self.session.flow is not None:
                self.session.flow.fin(self.up)
            self.session.check_done()

    def _refill(self, ready: float, now: float) -> None:
        """Add the tokens earned since the last refill.

        Until the head chunk was due the link had nothing to send: that time earns one
        burst at most (or a delay would pre-pay the rate, and a 10 ms delay would let
        10 ms of bytes through at once). From then on the chunk waits for tokens, and what
        a late timer owes is kept, up to the catch-up cap: capping it at the burst would
        lose rate at every late wake-up.
        """
        due = max(self.stamp, ready)
        if due > self.stamp:
            self.tokens = min(self.burst, self.tokens + (due - self.stamp) * self.rate)
            self.stamp = due
        if now > self.stamp:
            self.tokens = min(self.catch_up, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def _wake_at(self, when: float, now: float) -> None:
        if self.timer is not None:
            if self.timer_at <= when:
                return
            self.timer.cancel()
        self.timer_at = when
        self.timer = self.loop.call_later(_ticks(when - now), self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self.session.proxy.timer_wakeups += 1
        self.pump()

    def close(self) -> None:
        self.done = True
        self.queue.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _Side(asyncio.Protocol):
    """One socket of a proxied connection: the client's, or the server's."""

    def __init__(self, session: _Session, inbound: _Direction, outbound: _Direction) -> None:
        self.session = session
        self.inbound = inbound  # what this side sends us
        self.outbound = outbound  # what we write to this side
        inbound.src = self
        outbound.dst = self
        self.transport: asyncio.Transport | None = None
        self.write_paused = False
        self.read_paused = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self is self.session.server:
            self.session.opened()  # before the first byte is forwarded: the capture's SYN
        self.outbound.pump()

    def data_received(self, data: bytes) -> None:
        self.inbound.feed(data)

    def eof_received(self) -> bool:
        self.inbound.feed_eof()
        return True  # keep our sending half open: the other direction may still be busy

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.transport = None
        if not self.inbound.eof:
            self.inbound.feed_eof()
        self.outbound.close()
        self.session.check_done()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.outbound.pump()

    def pause(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    def send_eof(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()

    def reset(self) -> None:
        """Abort with a TCP reset (SO_LINGER 0), not a clean close."""
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class _Session:
    """One proxied connection: the client's side, the server's side and both directions."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.loop = proxy.loop
        link = proxy.link
        self.up = _Direction(self, link.up_rate, up=True)
        self.down = _Direction(self, link.down_rate, up=False)
        self.client = _Side(self, inbound=self.up, outbound=self.down)
        self.server = _Side(self, inbound=self.down, outbound=self.up)
        self.through = 0  # bytes forwarded, both directions: what reset_after counts
        self.finished = False
        self.flow: TcpFlow | None = None  # this connection in the proxy's capture (--pcap)

    def opened(self) -> None:
        """Both sockets are up: the capture gets this connection's handshake."""
        capture = self.proxy.capture
        client = self.client.transport
        server = self.server.transport
        if capture is None or client is None or server is None:
            return
        ends = client.get_extra_info("peername"), server.get_extra_info("peername")
        if all(isinstance(end, tuple) for end in ends):
            self.flow = capture.flow(ends[0][:2], ends[1][:2])

    async def connect(self) -> None:
        host, port = self.proxy.target
        try:
            await self.loop.create_connection(lambda: self.server, host, port)
        except OSError:
            self.client.reset()  # nothing to talk to: the client sees its connection refused
            self.up.close()

    def allow(self, n: int) -> tuple[int, bool]:
        """How many of ``n`` bytes may pass before the reset, and whether to reset after."""
        limit = self.proxy.link.reset_after
        if limit is None:
            return n, False
        allowed = min(n, limit - self.through)
        self.through += allowed
        return allowed, self.through >= limit

    def count(self, up: bool, n: int) -> None:
        stats = self.proxy.stats
        if up:
            stats.up_bytes += n
        else:
            stats.down_bytes += n

    def reset(self) -> None:
        self.proxy.stats.resets += 1
        if self.flow is not None:
            self.flow.reset()
        self.up.close()
        self.down.close()
        self.client.reset()
        self.server.reset()
        self.check_done()

    def check_done(self) -> None:
        """Close both sockets once each direction has delivered its EOF or lost its peer."""
        if self.finished or not (self.up.done and self.down.done):
            return
        self.finished = True
        self.client.close()
        self.server.close()
        if self.flow is not None:
            self.flow.close()
        self.proxy.sessions.discard(self)


# --- the proxy ---------------------------------------------------------------------------


@dataclass
class Proxy:
    """A TCP proxy that shapes its link; serve it on a background thread or until a signal."""

    listen: tuple[str, int]
    target: tuple[str, int]
    link: Link = field(default_factory=Link)
    loop_kind: str = "auto"
    stats: Stats = field(default_factory=Stats)
    pcap: str | Path | None = None  # write everything forwarded here (ayudantia.pcap)
    # Keep the last ``record`` deliveries as (up, arrival, delivery, bytes), perf_counter
    # seconds: the shaper's own account of each chunk, for checking it keeps the delay.
    record: int = 0

    def __post_init__(self) -> None:
        self.capture: PcapWriter | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # type: ignore[assignment]
        self.loop_name = ""
        self.sessions: set[_Session] = set()
        self.address: tuple[str, int] = self.listen
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._t0 = time.perf_counter()
        self.timer_wakeups = 0  # the shaper's timers that fired: a re-arm loop that spins shows
        self.deliveries: collections.deque[tuple[bool, float, float, int]] | None = (
            collections.deque(maxlen=self.record) if self.record else None
        )

    def stalled_until(self, now: float) -> float:
        """When a stall in progress at ``now`` ends; 0.0 when forwarding is not stalled."""
        every = self.link.stall_every
        if every is None:
            return 0.0
        elapsed = now - self._t0
        if elapsed < every:
            return 0.0
        into = elapsed % every
        return now + (self.link.stall_for - into) if into < self.link.stall_for else 0.0

    def _accept(self) -> asyncio.Protocol:
        session = _Session(self)
        self.sessions.add(session)
        self.stats.connections += 1
        self.loop.create_task(session.connect())  # type: ignore[union-attr]
        return session.client

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        host, port = self.listen
        self._server = await self.loop.create_server(  # type: ignore[union-attr]
            self._accept, host, port, reuse_address=True
        )
        self.address = self._server.sockets[0].getsockname()[:2]
        self._t0 = time.perf_counter()
        self._ready.set()
        await self._stop.wait()
        self._server.close()
        for session in list(self.sessions):
            session.up.close()
            session.down.close()
            session.client.close()
            session.server.close()
            if session.flow is not None:
                session.flow.close()
        await asyncio.sleep(0)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())  # type: ignore[union-attr]
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()
            self.loop.close()  # type: ignore[union-attr]

    def start(self) -> tuple[str, int]:
        """Listen and forward on a loop in a background thread; returns (host, port)."""
        if self._thread is None:
            if self.pcap is not None and self.capture is None:
                self.capture = PcapWriter(self.pcap)
            self.loop, self.loop_name = new_event_loop(self.loop_kind)
            self._thread = threading.Thread(target=self._run, name="proxy-loop", daemon=True)
            self._thread.start()
            self._ready.wait()
            if self._error is not None:
                raise self._error
        return self.address

    def stop(self, timeout: float = 5.0) -> None:
        stop_loop_thread(self.loop, self._stop, self._thread, timeout)
        if self.capture is not None:
            self.capture.close()  # after the loop: nothing more is queued

    def serve_until_signal(self, ready: Callable[[], None]) -> int:
        """Start, call ``ready``, forward until SIGINT or SIGTERM; returns 0."""
        with handle_signals() as stop_requested:
            self.start()
            ready()
            while not stop_requested.is_set() and self._error is None:
                stop_requested.wait(0.5)
        self.stop()
        return 0

    def __enter__(self) -> Proxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def link_kwargs(settings: dict[str, Any]) -> dict[str, Any]:
    """A :class:`Link`'s fields from a command's resolved settings (``rate`` = both ways)."""
    values = {f.name: settings.get(f.name) for f in fields(Link) if settings.get(f.name)}
    rate = settings.get("rate")
    if rate is not None:
        values.setdefault("up_rate", rate)
        values.setdefault("down_rate", rate)
    return values


class Hops:
    """Proxies on a set of TCP hops, one per hop, all with the same link (``run --network``).

    With ``pcap_dir`` (``run --pcap DIR``) each hop's proxy also writes its capture there,
    ``DIR/<hop>.pcap``; without ``--network`` those proxies shape nothing. With neither,
    :meth:`hop` hands the target back unchanged: the hook costs nothing.
    """

    def __init__(
        self, link: Link | None, loop_kind: str = "auto", pcap_dir: str | Path | None = None
    ) -> None:
        self.link = link
        self.loop_kind = loop_kind
        self.pcap_dir = Path(pcap_dir) if pcap_dir is not None else None
        self.proxies: dict[str, Proxy] = {}

    def hop(self, name: str, target: str) -> str:
        """The HOST:PORT to use instead of ``target`` (a proxy to it when shaping or capturing)."""
        if self.link is None and self.pcap_dir is None:
            return target
        host, _, port = target.rpartition(":")
        pcap = None
        if self.pcap_dir is not None:
            self.pcap_dir.mkdir(parents=True, exist_ok=True)
            pcap = self.pcap_dir / pcap_name(name)
        proxy = Proxy(
            ("127.0.0.1", 0),
            (host.strip("[]"), int(port)),
            self.link or Link(),
            self.loop_kind,
            pcap=pcap,
        )
        self.proxies[name] = proxy
        at_host, at_port = proxy.start()
        return f"{at_host}:{at_port}"

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()

    def captures(self) -> dict[str, str]:
        """Each hop's capture file (``run --pcap``), by hop name."""
        return {
            name: str(p.capture.path) for name, p in self.proxies.items() if p.capture is not None
        }

    def summary(self) -> dict[str, Any]:
        """What the run's summary (and its JSON report) says about the network."""
        out: dict[str, Any] = {}
        if self.link is not None:
            out["network"] = self.link.describe()
            out["network_hops"] = {name: vars(p.stats).copy() for name, p in self.proxies.items()}
        if self.pcap_dir is not None:
            out["captures"] = self.captures()
        return out

    def describe(self) -> str:
        """The summary's network lines: the link, then each hop's bytes both ways; captures."""
        lines = []
        if self.link is not None:
            lines.append(f"network       {self.link.describe()}, on each hop")
            for name, proxy in self.proxies.items():
                lines.append(f"              {name}: {proxy.stats.describe()}")
        for name, path in self.captures().items():
            lines.append(f"capture       {name}: {path}")
        return "\n".join(lines)


def pcap_name(hop: str) -> str:
    """A hop's capture file name: ``students->Docencio`` is ``students-docencio.pcap``."""
    return re.sub(r"[^a-z0-9]+", "-", hop.lower()).strip("-") + ".pcap"
