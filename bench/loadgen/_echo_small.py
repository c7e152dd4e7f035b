"""Scenario c, ``echo-small``: a small raw message through ``ayudantia eco``, paired round by
round with a ``multiprocessing.connection`` echo; the client is built from docs/protocol.md
alone (a hand-built header on a blocking socket), no project code.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import socket
import statistics
import struct
import sys
import threading
import time
from typing import Any

from bench.loadgen._shared import ECHO_PAYLOAD

RAW_HEADER = struct.Struct(">2sBBBBI")  # magic, version, codec id, flags, reserved, length


def _mp_echo_serve(ready: Any, cpus: set[int] | None) -> None:
    """Process entry point: a ``multiprocessing.connection`` echo, one thread per client."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    with multiprocessing.connection.Listener(("127.0.0.1", 0)) as listener:
        ready.send(listener.address)
        while True:
            conn = listener.accept()
            threading.Thread(target=_mp_echo, args=(conn,), daemon=True).start()


def _mp_echo(conn: multiprocessing.connection.Connection) -> None:
    with contextlib.suppress(EOFError, OSError), conn:
        while True:
            conn.send_bytes(conn.recv_bytes())


@contextlib.contextmanager
def mp_echo_server(cpus: set[int] | None = None, pid: list[int] | None = None) -> Any:
    """The reference echo in a spawned process; yields its address; always terminated.
    ``pid``, when given, receives the process id (to place its threads)."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_mp_echo_serve, args=(child, cpus), daemon=True)
    process.start()
    if pid is not None and process.pid is not None:
        pid.append(process.pid)
    try:
        if not parent.poll(30):
            raise RuntimeError("the multiprocessing.connection echo did not start in 30 s")
        yield parent.recv()
    finally:
        process.terminate()
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)


class RawEcho:
    """A client of ``ayudantia eco`` built from docs/protocol.md alone: no project code."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _exactly(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            part = self.sock.recv(n - got)
            if not part:
                raise ConnectionError("eco closed the connection mid-frame")
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def round_trip(self, payload: bytes) -> bytes:
        self.sock.sendall(RAW_HEADER.pack(b"AY", 1, 0, 0, 0, len(payload)) + payload)
        reply, more = b"", True
        while more:  # the eco may chunk its reply; read frames until MORE is clear
            magic, version, codec_id, flags, _, length = RAW_HEADER.unpack(self._exactly(10))
            if magic != b"AY" or version != 1 or codec_id != 0:
                raise ConnectionError(f"unexpected frame {magic!r} v{version} codec {codec_id}")
            reply += self._exactly(length)
            more = bool(flags & 1)
        return reply

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawEcho:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


@contextlib.contextmanager
def _co_placed(pids: list[int], cpu: int) -> Any:
    """Every thread of ``pids`` (both echo servers) on ``cpu`` for one session, then back.

    Unpinned, the two servers are placed by the scheduler each on its own: in two quiet
    full sessions the ratio read 0.58x-2.56x and 2.06x-3.23x, a session about 0.6x, 1.2x
    or 2.2x by which server woke across cores. Both on one CPU (alternating by session),
    with the client left free, they pay the same placement and the ratio measures the
    servers again."""
    saved: dict[int, set[int]] = {}
    for pid in pids:
        for tid in _threads(pid):
            with contextlib.suppress(OSError):
                saved[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, {cpu})
    try:
        yield
    finally:
        for tid, cpus in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)


def _pin(pid: int, cpus: set[int] | None) -> set[int] | None:
    """Pin ``pid`` to ``cpus``; returns its previous affinity to restore (None: untouched)."""
    if not cpus:
        return None
    previous = os.sched_getaffinity(pid)
    os.sched_setaffinity(pid, cpus)
    return previous


def echo_session(
    host: str, port: int, mp_address: Any, rounds: int, warmup: int
) -> dict[str, float]:
    """One session on fresh connections: ayudantia and mp round trips, alternated per round."""
    eco = RawEcho(host, port)
    mp = multiprocessing.connection.Client(mp_address)
    clock = time.perf_counter_ns
    ay_ns: list[int] = []
    mp_ns: list[int] = []
    try:
        for i in range(warmup + rounds):
            order = (0, 1) if i % 2 == 0 else (1, 0)  # neither always goes first
            took = [0, 0]
            for which in order:
                t0 = clock()
                if which == 0:
                    reply = eco.round_trip(ECHO_PAYLOAD)
                else:
                    mp.send_bytes(ECHO_PAYLOAD)
                    reply = mp.recv_bytes()
                took[which] = clock() - t0
                if reply != ECHO_PAYLOAD:
                    raise ConnectionError(f"echo came back wrong: {reply[:80]!r}")
            if i >= warmup:
                ay_ns.append(took[0])
                mp_ns.append(took[1])
    finally:
        eco.close()
        mp.close()
    ratios = [a / m for a, m in zip(ay_ns, mp_ns, strict=True)]
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    return {
        "ayudantia_us": round(statistics.median(ay_ns) / 1000, 2),
        "mp_us": round(statistics.median(mp_ns) / 1000, 2),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_q1": round(q1, 3),
        "ratio_q3": round(q3, 3),
        "rounds": len(ratios),
    }


def echo_small(
    host: str,
    port: int,
    *,
    sessions: int = 3,
    rounds: int = 20000,
    warmup: int = 200,
    cpus: list[int] | None = None,
    server_pid: int | None = None,
    quiet: bool = True,
) -> dict[str, Any]:
    """Issue 9's small-message target: ayudantia eco vs a multiprocessing.connection echo."""
    client_cpus = {cpus[0]} if cpus else None
    server_cpus = {cpus[-1]} if cpus else None
    mine = _pin(0, client_cpus)
    theirs = _pin(server_pid, server_cpus) if server_pid else None
    co_place = cpus is None and server_pid is not None and hasattr(os, "sched_setaffinity")
    usable = sorted(os.sched_getaffinity(0)) if co_place else []
    try:
        mp_pid: list[int] = []
        with mp_echo_server(server_cpus, mp_pid) as address:
            results = []
            for k in range(sessions):
                placed = (
                    _co_placed([server_pid, *mp_pid], usable[k % len(usable)])  # type: ignore[list-item]
                    if co_place and usable
                    else contextlib.nullcontext()
                )
                with placed:
                    results.append(echo_session(host, port, address, rounds, warmup))
                if not quiet:
                    print(
                        f"[echo-small] session {k + 1}/{sessions}: {results[-1]}", file=sys.stderr
                    )
    finally:
        if mine is not None:
            os.sched_setaffinity(0, mine)
        if theirs is not None and server_pid:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(server_pid, theirs)
    return {
        "payload_bytes": len(ECHO_PAYLOAD),
        "placement": "servers co-placed, client free" if co_place else "as given",
        "sessions": results,
        "rounds": rounds,
        "ayudantia_us": statistics.median(r["ayudantia_us"] for r in results),
        "mp_us": statistics.median(r["mp_us"] for r in results),
        "ratio": statistics.median(r["ratio"] for r in results),
        "cpus": cpus or [],
    }
