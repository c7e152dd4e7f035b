"""Refusals travel: the event-loop servers tell a peer why before they close on it.

Real role processes; the clients are the project's blocking Connection (which raises the
typed :class:`~protocol.errors.Refused`). A refused student process: tests/test_polite_clients.py.
"""

from __future__ import annotations

import time

import pytest

from protocol.errors import Refused
from protocol.transport import Connection
from tests.procs import running

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("client", "reason", "words"),
    [
        ({"codec": "pickle", "accept": ["json"]}, "codec", "not pickle"),
        ({"codec": "json", "key": "abc", "side": "client"}, "signature", "no key"),
        ({"codec": "json", "chunk_size": 0, "big": True}, "too_large", "max_message"),
    ],
    ids=["codec", "signature", "too-large"],
)
def test_the_eco_refuses_with_a_reason_the_client_can_read(client, reason, words):
    big = client.pop("big", False)
    with running("eco", "--port", "0", "--max-message", "64K", "--log-level", "ERROR") as eco:
        with (
            Connection.connect(eco.host, eco.port, read_timeout=5, idle_timeout=5, **client) as c,
            pytest.raises(Refused) as refused,
        ):
            c.send({"texto": "x" * (100_000 if big else 10)})
            c.recv()
        assert refused.value.reason == reason and refused.value.permanent
        assert words in refused.value.text
        with Connection.connect(eco.host, eco.port, read_timeout=5, idle_timeout=5) as good:
            good.send({"still": "served"})
            assert good.recv() == {"still": "served"}


def test_a_full_server_says_busy():
    with (
        running("eco", "--port", "0", "--max-clients", "1", "--log-level", "ERROR") as eco,
        Connection.connect(eco.host, eco.port, read_timeout=5, idle_timeout=5) as first,
    ):
        first.send({"n": 1})
        assert first.recv() == {"n": 1}
        with (
            Connection.connect(eco.host, eco.port, read_timeout=5, idle_timeout=5) as extra,
            pytest.raises(Refused) as refused,
        ):
            extra.recv()
        assert refused.value.reason == "busy" and not refused.value.permanent


def test_a_docencio_refused_by_its_tareo_says_why_to_every_student(procs, tmp_path):
    """The Docencio's link speaks pickle to a Tareo that does not accept it: the link is
    refused (codec), not retried in a storm, and each student's Tarea gets an error answer
    that says why; Contenido, the Docencio's own, is still answered."""
    from roles_helpers import ask, connect, recv_all

    profesor = procs.start("profesor", "profesor", "--port", "0", "--db", str(tmp_path / "p.db"))
    tareo = procs.start("tareo", "tareo", "--port", "0", "--profesor", profesor.address)
    docencio = procs.start(
        "docencio",
        "docencio",
        "--port",
        "0",
        "--codec",
        "pickle",
        "--tareo",
        tareo.address,
        "--profesor",
        profesor.address,
    )
    time.sleep(1.0)
    with connect(docencio, "pickle") as conn:  # the Docencio answers in its own codec
        ask(conn, "t", "Tarea")
        ask(conn, "c", "Contenido")
        got = {a["id"]: a for a in recv_all(conn, 2, timeout=15)}
    assert "rechaza" in got["t"]["error"] and "pickle" in got["t"]["error"]
    assert "respuesta" in got["c"]
    assert docencio.stderr().count("rechaza este enlace") == 1  # no reconnect storm
