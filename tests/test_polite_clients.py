"""A refused client stops and says why; a failing one backs off; an interrupted one says so.

Today a server refuses a peer at the first header by closing the connection (refusal frames,
which say why, are on their way); either way the client must not storm it.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from protocol.errors import MessageTooLarge, Refused
from roles.client import Client, Unreachable
from roles.wire import WireSettings
from tests.procs import ayudantia_cmd
from tests.roles_helpers import wait_for


@contextlib.contextmanager
def closing_server() -> Iterator[tuple[int, list[int]]]:
    """A loopback server that reads the first header of each connection, then closes it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            with sock:
                sock.settimeout(2.0)
                with contextlib.suppress(OSError):
                    sock.recv(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@pytest.mark.timeout(60)
def test_a_refused_student_makes_a_handful_of_connections_and_says_why():
    with closing_server() as (port, accepted):
        done = subprocess.run(
            ayudantia_cmd(
                "estudiante",
                "--docencio",
                f"127.0.0.1:{port}",
                "--codec",
                "pickle",
                "--questions",
                "3",
                "--interval",
                "0",
            ),
            capture_output=True,
            text=True,
            timeout=45,
        )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ayudantia estudiante: gave up: ")
    assert "refuses these settings (codec pickle" in last
    assert 1 <= len(accepted) <= 6  # not 80,000
    assert "0/3 respondidas" in done.stdout


@pytest.mark.timeout(60)
def test_a_pickle_student_at_a_default_docencio_stops_with_the_reason(procs):
    docencio = procs.start("docencio", "docencio", "--port", "0")
    host, port = docencio.hostport
    done = subprocess.run(
        ayudantia_cmd("estudiante", "--docencio", f"{host}:{port}", "--codec", "pickle"),
        capture_output=True,
        text=True,
        timeout=45,
    )
    assert done.returncode == 1
    assert "gave up" in done.stderr.strip().splitlines()[-1]
    assert "not pickle" in done.stderr and "Traceback" not in done.stderr  # the refusal's why
    assert done.stdout.count("Conexión perdida") <= 6
    # the Docencio's refusal frame is permanent: the student does not try again
    assert docencio.stderr().count("enviando datos inválidos") <= 3
    docencio.kill()


def _pair(**kw) -> tuple[Client, socket.socket]:
    ours, theirs = socket.socketpair()
    client = Client("127.0.0.1", 9, backoff=0.001, max_backoff=0.002, max_failures=3, **kw)
    client.conn = WireSettings().wrap(ours)
    return client, theirs


def test_a_permanent_refusal_stops_at_once_and_a_busy_one_backs_off():
    client, theirs = _pair()
    with theirs:
        assert client.conn is not None
        with pytest.raises(Refused):
            client.session_ended(client.conn, Refused(1, "pickle is not accepted here"))
        client.session_ended(client.conn, Refused(6, "full"))  # busy: try again later
        client.session_ended(client.conn, Refused(6, "full"))
        assert client.failures == 2
        with pytest.raises(Unreachable, match="refused us 3 times in a row"):
            client.session_ended(client.conn, Refused(6, "full"))
        client.close()


def test_sessions_closed_before_any_answer_are_a_refusal_too():
    client, theirs = _pair()
    with theirs:
        assert client.conn is not None
        client.session_ended(client.conn, ConnectionError("closed"))
        client.session_ended(client.conn, ConnectionError("closed"))
        with pytest.raises(Unreachable, match="3 times in a row before answering"):
            client.session_ended(client.conn, ConnectionError("closed"))
        client.close()


def test_an_answer_larger_than_our_limit_is_not_retried():
    client, theirs = _pair()
    with theirs:
        assert client.conn is not None
        with pytest.raises(Unreachable, match="raise --max-message"):
            client.session_ended(client.conn, MessageTooLarge(5000, 100))
        client.close()


def test_a_session_that_got_an_answer_resets_the_count():
    client, theirs = _pair()
    with theirs:
        assert client.conn is not None
        client.session_ended(client.conn, ConnectionError("closed"))
        client.conn.messages_received = 1
        client.session_ended(client.conn, ConnectionError("closed"))
        assert client.failures == 0
        client.close()


@pytest.mark.timeout(60)
def test_an_interrupted_student_exits_130_and_counts_what_it_asked_for(procs):
    docencio = procs.start("docencio", "docencio", "--port", "0", "--timeout", "1")
    host, port = docencio.hostport
    alumno = procs.start(
        "estudiante",
        "estudiante",
        "--docencio",
        f"{host}:{port}",
        "--questions",
        "20",
        "--interval",
        "0.3",
        ready=False,
    )
    assert wait_for(lambda: "Alumno pregunta" in alumno.stdout(), 20)
    time.sleep(0.5)
    assert alumno.stop(signal.SIGINT) == 130
    assert "/20 respondidas" in alumno.stdout()
    docencio.kill()  # its Profesor is away: a polite stop would wait to post the count
