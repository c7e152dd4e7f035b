"""The Tareo's hard-question slots are shared fairly by source.

One client with 16 connections that queues hard questions used to fill the Tareo's pool
queue in arrival order: another client's "Pregunta Dificil" waited behind all of them
(and past the queue deadline, an error). Now slots go round-robin by source (the peer's
address) and, when the whole budget is held, a lighter source bumps the heaviest one's
newest waiting question. The bookkeeping (roles/slots.py) is tested on its own, then a
real Tareo in this process asks a real Profesor process through a real proxy process
that adds latency (so the slots stay busy), with two sources on loopback (127.0.0.1 and
127.0.0.2).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from protocol.transport import Connection
from roles.clase import DIFICIL
from roles.slots import FairSlots
from roles.tareo import SATURADO, Tareo
from tests.procs import running

pytestmark = pytest.mark.timeout(90)


def test_slots_go_round_robin_by_source() -> None:
    slots: FairSlots[str] = FairSlots(slots=2, capacity=100)
    for n in range(10):
        assert slots.admit("flood", f"f{n}").admitted
    assert slots.ready() == [("flood", "f0"), ("flood", "f1")]  # idle slots are not wasted
    slots.admit("other", "o0")
    slots.done("flood")
    slots.done("flood")
    # the other source's one question starts at the first free slot pair, not after f9
    assert slots.ready() == [("flood", "f2"), ("other", "o0")]
    assert slots.held == 9 and slots.held_by("other") == 1 and slots.running == 2


def test_a_batch_takes_each_waiting_source_in_turn() -> None:
    slots: FairSlots[str] = FairSlots(slots=2, capacity=100)
    for n in range(10):
        slots.admit("flood", f"f{n}")
    slots.admit("other", "o0")
    first = slots.take(4)
    assert first == [("flood", "f0"), ("other", "o0"), ("flood", "f1"), ("flood", "f2")]
    assert len(slots.take(100)) == 7 and slots.calls == 2  # the rest, in the second slot
    slots.admit("late", "l0")
    assert slots.take(4) == []  # both slots busy
    slots.finished(first)
    assert slots.take(4) == [("late", "l0")] and slots.running == 8 and slots.held == 8
    slots.clear()
    slots.finished(first)  # a call that ends after a clear frees nothing twice
    assert slots.calls == 0 and slots.held == 0


def test_a_full_budget_bumps_the_heaviest_source_not_the_newcomer() -> None:
    slots: FairSlots[str] = FairSlots(slots=1, capacity=4)
    for n in range(4):
        assert slots.admit("flood", f"f{n}").admitted
    first = slots.admit("other", "o0")
    assert first.admitted and first.bumped == "f3"  # the flood's newest waiting one
    assert slots.admit("other", "o1").bumped == "f2"  # flood 2, other 2 now
    assert not slots.admit("other", "o2").admitted  # now among the heaviest: turned away
    assert not slots.admit("flood", "f4").admitted
    assert slots.held == 4
    assert sorted(slots.clear()) == ["f0", "f1", "o0", "o1"]
    assert slots.held == 0 and slots.ready() == []


@contextlib.contextmanager
def slow_profesor(tmp_path) -> Iterator[str]:
    """A real Profesor behind a real proxy with 30 ms each way: every call holds a slot."""
    with (
        running("profesor", "--port", "0", "--db", str(tmp_path / "p.db")) as profesor,
        running(
            "proxy",
            "--to",
            f"{profesor.host}:{profesor.port}",
            "--listen",
            "127.0.0.1:0",
            "--delay",
            "30ms",
        ) as proxy,
    ):
        yield f"http://{proxy.host}:{proxy.port}"


def _connect(port: int, source: str) -> Connection:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return Connection(sock, side="client", read_timeout=30, idle_timeout=60)


def _wait_for(predicate, rounds: int = 2000) -> bool:
    stop = threading.Event()
    for _ in range(rounds):
        if predicate():
            return True
        stop.wait(0.01)
    return False


WORKERS = 2
BATCH = 4  # questions per Profesor call, small here so that the flood spans many calls
FLOOD_CONNECTIONS = 16
PER_CONNECTION = 4


def test_one_source_with_16_connections_does_not_starve_another(tmp_path) -> None:
    with slow_profesor(tmp_path) as url:
        tareo = Tareo(profesor=url, workers=WORKERS, batch=BATCH, profesor_timeout=10)
        _host, port = tareo.start()
        conns: list[Connection] = []
        try:
            flood = [_connect(port, "127.0.0.1") for _ in range(FLOOD_CONNECTIONS)]
            conns += flood
            for c, conn in enumerate(flood):
                for n in range(PER_CONNECTION):
                    conn.send({"id": f"f{c}-{n}", "tipo": DIFICIL})
            queued = FLOOD_CONNECTIONS * PER_CONNECTION
            assert _wait_for(lambda: len(tareo._waiting) >= queued)
            other = _connect(port, "127.0.0.2")
            conns.append(other)
            other.send({"id": "mine", "tipo": DIFICIL})
            reply = other.recv()
            answered_then = tareo.answered
            assert reply["id"] == "mine" and reply.get("por") == "Profesor", reply
            # Served in the first call that started after it came (its batch takes one
            # question of each waiting source in turn), not after the 64 questions the flood
            # queued first: the calls under way, its own call, and one more that may end
            # before we look.
            assert answered_then <= 3 * WORKERS * BATCH + 1, answered_then
            first = flood[0].recv()  # the flood is still served too
            assert first.get("por") == "Profesor" or first.get("error") == SATURADO, first
        finally:
            for conn in conns:
                conn.close()
            tareo.stop()
