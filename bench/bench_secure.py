"""What closing the class costs: TLS and the keyed handshake against the plain protocol.

Paired figures (bench._paired), each side a real ``ayudantia eco`` process:

* ``book.<mode>.vs-plain``: the whole book (raw, unchunked) to an eco and back, with
  ``mode`` = ``key`` (handshake once per connection, every frame signed), ``tls`` (mutual
  TLS 1.3, classroom CA) or ``tls+key`` (both), over the same round trip in the clear.
  Ratio: secured time over plain time (``times``).
* ``connect.tls+key.vs-plain``: a new connection and one small round trip on it: what the
  TLS and keyed handshakes add per connection.
* ``class.json.tls+key.vs-plain``: questions/s of a whole ``ayudantia run`` with
  ``--tls --key`` over a plain one, the two classes run back to back each round (a ratio of
  throughputs: plain over secured, so above 1 is the cost).

The ordinary ``uv run pytest`` runs each once, untimed, on a handful of rounds.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ayudantia.certs import make_class
from bench import _paired
from bench.bench_class import run_class
from bench.conftest import SESSIONS, benchmarking_enabled, pair_rounds, rounds
from protocol.tls import TlsSettings
from roles.wire import WireSettings

KEY = "clave-del-benchmark"
MODES = ("key", "tls", "tls+key")
CONNECT_ROUNDS = 200
CLASS_SHAPE = ("json", 10, 100)
QUICK_CLASS_SHAPE = ("json", 2, 5)
_LISTENING = re.compile(r"listening on [\w.]+:(\d+)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mode" in metafunc.fixturenames:  # the ordinary run checks the code with one mode
        modes = MODES if benchmarking_enabled(metafunc.config) else ("tls+key",)
        metafunc.parametrize("mode", modes)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Any]:
    return make_class(tmp_path_factory.mktemp("certs"), roles=("eco", "estudiante"))


@pytest.fixture(scope="module")
def ecos(certs) -> Iterator[dict[str, int]]:
    """One eco process per mode, started on first use, stopped with the module."""
    with contextlib.ExitStack() as stack:

        class Ports(dict):
            def __missing__(self, mode: str) -> int:
                self[mode] = stack.enter_context(eco(mode, certs))
                return self[mode]

        yield Ports()


def _flags(certs: dict[str, Any], role: str) -> list[str]:
    return certs[role].flags()


@contextlib.contextmanager
def eco(mode: str, certs: dict[str, Any]) -> Iterator[int]:
    """An ``ayudantia eco`` process secured by ``mode`` (``plain`` too); its port."""
    argv = [sys.executable, "-m", "ayudantia", "eco", "--port", "0", "--log-level", "WARNING"]
    if "tls" in mode:
        argv += _flags(certs, "eco")
    env = {**os.environ, "AYUDANTIA_KEY": KEY} if "key" in mode else dict(os.environ)
    if "key" not in mode:
        env.pop("AYUDANTIA_KEY", None)
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        for line in proc.stdout:
            match = _LISTENING.search(line)
            if match:
                yield int(match.group(1))
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the eco did not start")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def client_wire(mode: str, certs: dict[str, Any]) -> WireSettings:
    files = certs["estudiante"]
    tls = TlsSettings(str(files.cert), str(files.key), str(files.ca)) if "tls" in mode else None
    key = KEY.encode() if "key" in mode else None
    return WireSettings.for_codec("raw", key=key, tls=tls)


class Client:
    """One connection and a raw round trip on it."""

    def __init__(self, wire: WireSettings, port: int) -> None:
        self.conn = wire.connect("127.0.0.1", port)

    def round_trip(self, payload: bytes) -> None:
        self.conn.send(payload)
        self.conn.recv_message()

    def close(self) -> None:
        self.conn.close()


def test_book_secure_pair(benchmark, benchmarking, certs, ecos, mode, book_bytes):
    """The book's round trip secured by ``mode`` against the same round trip in the clear."""
    benchmark.group = "pair-secure"
    n = pair_rounds(benchmarking, 60)
    warmup = 3 if benchmarking else 1
    plain_port, secure_port = ecos["plain"], ecos[mode]

    def session() -> dict[str, float]:
        plain = Client(client_wire("plain", certs), plain_port)
        secure = Client(client_wire(mode, certs), secure_port)
        try:
            t_secure, t_plain = _paired.interleave(
                _paired.timed(secure.round_trip, lambda: (book_bytes,)),
                _paired.timed(plain.round_trip, lambda: (book_bytes,)),
                n,
                warmup,
                block=10,
            )
        finally:
            plain.close()
            secure.close()
        return _paired.summarize(t_secure, t_plain)

    done = _paired.record(
        benchmark,
        rounds(benchmarking, SESSIONS),
        session,
        figure=f"book.{mode}.vs-plain",
        numerator=f"ayudantia raw whole, {mode}",
        denominator="ayudantia raw whole, plain",
        payload_bytes=len(book_bytes),
    )
    assert all(s["ratio"] > 0 for s in done)


def test_connect_secure_pair(benchmark, benchmarking, certs, ecos):
    """A fresh connection plus one small round trip: what the two handshakes cost."""
    benchmark.group = "pair-secure"
    n = pair_rounds(benchmarking, CONNECT_ROUNDS)
    payload = b"Alumno pregunta: Tarea"
    plain_port, secure_port = ecos["plain"], ecos["tls+key"]
    plain_wire, secure_wire = client_wire("plain", certs), client_wire("tls+key", certs)

    def once(wire: WireSettings, port: int) -> None:
        client = Client(wire, port)
        try:
            client.round_trip(payload)
        finally:
            client.close()

    def session() -> dict[str, float]:
        t_secure, t_plain = _paired.interleave(
            _paired.timed(lambda: once(secure_wire, secure_port)),
            _paired.timed(lambda: once(plain_wire, plain_port)),
            n,
            2,
            block=10,
        )
        return _paired.summarize(t_secure, t_plain)

    done = _paired.record(
        benchmark,
        rounds(benchmarking, SESSIONS),
        session,
        figure="connect.tls+key.vs-plain",
        numerator="connect + small round trip, tls+key",
        denominator="connect + small round trip, plain",
    )
    assert all(s["denominator_s"] > 0 for s in done)


@pytest.mark.timeout(900)
def test_class_secure_pair(benchmark, benchmarking, tmp_path):
    """Questions/s of the whole class with --tls --key against the plain class."""
    if not benchmarking:  # two whole classes: tests/test_run_secure.py runs the secured one
        pytest.skip("timed runs only (pytest --benchmark)")
    benchmark.group = "pair-secure"
    codec, students, questions = CLASS_SHAPE if benchmarking else QUICK_CLASS_SHAPE
    results: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def session() -> dict[str, float]:
        secure = run_class(codec, students, questions, tmp_path / "s.json", ("--tls", "--key", KEY))
        plain = run_class(codec, students, questions, tmp_path / "p.json")
        results.append((secure, plain))
        ok = all(r["returncode"] == 0 and r.get("ok") for r in (secure, plain))
        assert ok, (secure.get("output"), plain.get("output"))
        # seconds per answer, secured over plain (= plain q/s over secured q/s): >1 is the cost
        return _paired.summarize(
            [1 / secure["questions_per_second"]], [1 / plain["questions_per_second"]]
        ) | {
            "secure_qps": secure["questions_per_second"],
            "plain_qps": plain["questions_per_second"],
        }

    _paired.record(
        benchmark,
        rounds(benchmarking, 3),
        session,
        figure=f"class.{codec}.tls+key.vs-plain",
        numerator="seconds per answer, --tls --key",
        denominator="seconds per answer, plain",
        students=students,
        questions=questions,
    )
    assert all("TLS" in s.get("security", "") for s, _ in results)
