"""Issue 9 from outside: real server processes under load, driven by bench/loadgen/.

These are correctness bounds, not speed targets (the targets live in the benchmarks): every
student connected and answered, none misrouted, none lost, within bounds generous enough
for a noisy 2-core machine. Each one names what it guards against:

* 2,000 students at once on one Docencio: all served, each answer to its own asker;
* a student that floods questions and never reads: the others still get every answer,
  each within 2 s, while the flood goes on (TCP pushes back on the flooder alone); and a
  greedy flooder that reads every answer at once must not starve the others either;
* a peer that floods ``ayudantia eco`` with large messages and never reads the echoes: the
  eco's memory stays bounded, the flooder's sends block, and the eco still answers others;
* SIGINT while a peer that never reads holds replies the server cannot flush: exit 0 within
  6 s, port free (eco and Docencio);
* students that ask and vanish at once, over and over: no thread or fd left behind;
* the load generator's own quick modes, as a separate process, so the tool cannot rot.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from roles_helpers import Procs, Role, ask, connect, port_is_free, recv_all

from bench import loadgen
from protocol.framing import encode_message

ROOT = Path(__file__).resolve().parent.parent
STUDENTS = 2000
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def clase(tmp_path_factory: pytest.TempPathFactory):
    """Profesor, Tareo and a Docencio that takes 2,500 students, shared by this module."""
    manager = Procs(tmp_path_factory.mktemp("clase"))
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AYUDANTIA_MAX_CLIENTS", "2500")  # only the roles that have the option
            roles = manager.clase("json")
        yield roles
    finally:
        manager.close()


def _no_crash(role: Role) -> None:
    err = role.stderr()
    assert "Traceback" not in err and "Exception in thread" not in err, err[-3000:]


def _steady(proc: psutil.Process, within: float = 15.0) -> tuple[int, int]:
    """(threads, fds) once they have stopped changing for a second: lazy parts started."""
    deadline = time.monotonic() + within
    last, calm = (-1, -1), 0
    while time.monotonic() < deadline and calm < 5:
        now = (proc.num_threads(), proc.num_fds())
        calm = calm + 1 if now == last else 0
        last = now
        time.sleep(0.2)
    return last


def _warm(docencio: Role) -> None:
    """One question of each kind: the link, the HTTP session and the count are all up."""
    with connect(docencio) as conn:
        for i, kind in enumerate(("Contenido", "Tarea", "Pregunta Dificil")):
            ask(conn, f"warm{i}", kind)
        assert all("respuesta" in a for a in recv_all(conn, 3)), "the class is not answering"


# --- many students at once -----------------------------------------------------------------


@pytest.mark.timeout(120)
def test_two_thousand_students_at_once_all_answered_none_misrouted(clase):
    docencio = clase["docencio"]
    host, port = docencio.hostport
    result = asyncio.run(
        loadgen.students(
            host,
            port,
            n=STUDENTS,
            tipos=("Contenido", "Tarea"),  # half answered by the Docencio, half over its link
            timeout=60.0,
            server_pid=docencio.pid,
        )
    )
    summary = json.dumps({k: v for k, v in result.items() if not k.startswith("server_")})
    assert result["connect_errors"] == 0, summary
    assert result["connected"] == STUDENTS, summary
    assert result["misrouted"] == 0, summary
    assert result["answered"] == STUDENTS, summary
    assert result["errors"] == 0, summary
    assert docencio.proc.poll() is None
    _no_crash(docencio)


# --- students that ask and vanish ----------------------------------------------------------


def _question(qid: str, tipo: str) -> bytes:
    return encode_message(1, json.dumps({"id": qid, "tipo": tipo, "de": "fugaz"}).encode())


@pytest.mark.timeout(90)
def test_ask_and_vanish_leaves_no_threads_or_fds_behind(clase):
    docencio = clase["docencio"]
    proc = psutil.Process(docencio.pid)
    _warm(docencio)
    threads0, fds0 = _steady(proc)
    kinds = ("Tarea", "Pregunta Dificil", "Contenido")
    for i in range(300):  # bounded: 300 students, each gone before its answer
        with socket.create_connection(docencio.hostport, timeout=5) as sock:
            sock.sendall(_question(f"v{i}", kinds[i % 3]))
            if i % 2:  # half leave with a reset, half with a FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    # A leaked thread or socket per departed student would leave hundreds; allow the few a
    # bounded pool (HTTP workers, their keep-alive sockets) may start on its own.
    slack = 8
    deadline = time.monotonic() + 20
    calm = 0
    while time.monotonic() < deadline and calm < 5:
        ok = proc.num_threads() <= threads0 + slack and proc.num_fds() <= fds0 + slack
        calm = calm + 1 if ok else 0
        time.sleep(0.2)
    assert proc.num_threads() <= threads0 + slack, (proc.num_threads(), threads0)
    assert proc.num_fds() <= fds0 + slack, (proc.num_fds(), fds0)
    with connect(docencio) as conn:  # and it still answers
        ask(conn, "after1", "Tarea")
        ask(conn, "after2", "Contenido")
        got = {a["id"]: a for a in recv_all(conn, 2, timeout=10)}
    assert set(got) == {"after1", "after2"} and all("respuesta" in a for a in got.values())
    _no_crash(docencio)


# --- a student that floods -------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("reads", [False, True], ids=["never-reads", "greedy"])
def test_a_flooding_student_does_not_stall_the_others(procs, reads):
    """Never-reads: TCP must push back on the flooder alone. Greedy (it reads every answer
    at once): nothing pushes back on it but the server's fairness, so the others' questions
    must not queue behind all of its questions."""
    clase = procs.clase("json")
    docencio = clase["docencio"]
    _warm(docencio)
    host, port = docencio.hostport
    result = asyncio.run(
        loadgen.flood(
            host,
            port,
            students_n=2,
            tipos=("Tarea", "Pregunta Dificil"),
            flood_tipo="Tarea",
            flood_reads=reads,
            interval=0.05,
            seconds=2.5,
            head_start=1.5,  # the flood alone first, until the way back to it is full
            answer_timeout=2.0,  # a correctness bound, 20 times the 100 ms target
            server_pid=docencio.pid,
        )
    )
    summary = json.dumps({k: v for k, v in result.items() if not k.startswith("server_t")})
    assert result["asked"] >= 20, summary  # the paced students really asked during the flood
    if reads:
        assert result["flood_received"] > 0, summary
    else:
        assert result["flood_received"] == 0, summary  # the flooder really never read
        assert result["flood_pushed_back"], summary  # and it really outran the server
    assert result["lost"] == 0, summary
    assert result["error_answers"] == 0, summary
    assert result["misrouted"] == 0, summary
    assert result["answered"] == result["asked"], summary
    assert result["server_rss_growth"] < 64 * MiB, summary
    assert docencio.proc.poll() is None
    _no_crash(docencio)


# --- a peer that floods the eco and never reads ------------------------------------------------


def _flood(sock: socket.socket, message: bytes, limit: int, give_up: float) -> tuple[int, str]:
    """Send ``message`` again and again, never reading, until ``limit`` bytes went.

    Returns (bytes sent, how the server stopped us): "blocked" when a send waited past the
    socket's timeout (TCP pushing back), "dropped" when the server closed the connection
    rather than buffer (a send deadline of its own), "" when it took everything.
    """
    sent, deadline = 0, time.monotonic() + give_up
    view = memoryview(message)
    while sent < limit and time.monotonic() < deadline:
        offset = 0
        try:
            while offset < len(view):
                offset += sock.send(view[offset:])
        except TimeoutError:
            return sent + offset, "blocked"
        except ConnectionError:
            return sent + offset, "dropped"
        sent += offset
    return sent, ""


def _never_reading(host: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    try:
        sock.connect((host, port))
    except OSError:
        sock.close()
        raise
    sock.settimeout(2.0)  # a send that waits this long is the server pushing back
    return sock


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chunk_size", [0, 64 * 1024], ids=["whole", "chunked"])
def test_eco_flooded_by_a_peer_that_never_reads(procs, chunk_size):
    eco = procs.start("eco", "eco", "--port", "0", "--log-level", "WARNING")
    host, port = eco.hostport
    message = encode_message(0, bytes(8 * MiB), chunk_size)
    with loadgen.ServerSampler(eco.pid) as sampler, _never_reading(host, port) as flooder:
        sent, how = _flood(flooder, message, 200 * MiB, give_up=20.0)
        with loadgen.RawEcho(host, port, timeout=5.0) as other:  # promptly: 5 s bound
            assert other.round_trip(loadgen.ECHO_PAYLOAD) == loadgen.ECHO_PAYLOAD
        time.sleep(0.3)  # the flooder still connected: let a server that buffers show it
        figures = {"sent_mib": round(sent / MiB, 1), "how": how, **sampler.report()}
        assert eco.proc.poll() is None
        _no_crash(eco)
        stopped = _sigint(eco)  # with echoes it can never flush
    assert how in ("blocked", "dropped"), f"the eco took 200 MiB and never pushed back: {figures}"
    assert figures["server_rss_growth"] < 64 * MiB, figures
    stopped()


# --- a graceful stop with a peer that never reads ------------------------------------------------


def _sigint(role: Role) -> Callable[[], None]:
    """SIGINT ``role`` now; the returned check asserts it exited 0, soon, port freed.

    A graceful stop must not wait to flush replies to a peer that will never read them.
    """
    host, port = role.hostport
    started = time.monotonic()
    status = role.stop(signal.SIGINT, timeout=8)  # fails, with its stderr, past 8 s
    took = time.monotonic() - started

    def check() -> None:
        assert status == 0, role.stderr()[-3000:]
        assert took < 6, f"{role.name} took {took:.1f} s to stop"
        assert port_is_free(host, port)

    return check


@pytest.mark.timeout(60)
def test_sigint_stops_a_docencio_with_a_student_that_never_reads(procs):
    db = str(procs.logdir / "profesor.sqlite3")
    profesor = procs.start("profesor", "profesor", "--port", "0", "--db", db)
    with socket.create_server(("127.0.0.1", 0)) as mute_tareo:  # "Contenido" needs no Tareo
        tareo = f"127.0.0.1:{mute_tareo.getsockname()[1]}"
        docencio = procs.start(
            "docencio",
            "docencio",
            *("--port", "0", "--log-level", "WARNING"),
            *("--tareo", tareo, "--profesor", profesor.address),
        )
        # 200-character ids: ~270-byte answers; 40,000 of them overflow the way back
        questions = b"".join(_question(f"{i:0200d}", "Contenido") for i in range(1000))
        with _never_reading(*docencio.hostport) as flooder:
            _flood(flooder, questions, 40 * len(questions), give_up=20.0)
            time.sleep(0.5)  # let it take what it will of the last part
            stopped = _sigint(docencio)
    stopped()


# --- the load generator itself, as its own process ----------------------------------------------

QUICK = {
    "students": (["--n", "200", "--tipos", "Contenido,Tarea"], {"connect_s", "answer_s"}),
    "connect-rate": (["--workers", "4", "--seconds", "1"], {"rate_per_s", "per_second"}),
    "flood": (
        [
            "--students",
            "2",
            "--seconds",
            "1",
            "--head-start",
            "0.3",
            "--flood-tipo",
            "Contenido",
            "--tipos",
            "Contenido",
            "--flood-questions",
            "20000",
        ],
        {"p50_ms", "max_ms", "lost", "flood_sent"},
    ),
}


def _loadgen(*args: str, timeout: float = 60.0) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", *args, "--json", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scenario", list(QUICK))
def test_loadgen_quick_modes(clase, scenario):
    docencio = clase["docencio"]
    args, keys = QUICK[scenario]
    result = _loadgen(scenario, "--to", docencio.address, "--server-pid", str(docencio.pid), *args)
    assert result["scenario"] == scenario and result["loop"] in ("uvloop", "asyncio")
    assert keys | {"server_rss_peak", "server_threads_peak"} <= set(result), result
    assert result["server_rss_peak"] >= result["server_rss_before"] > 0
    if scenario == "students":
        assert result["answered"] == 200 and result["misrouted"] == 0, result
        assert 0 < result["connect_s"] < 60 and 0 < result["answer_s"] < 60
    elif scenario == "connect-rate":
        assert result["connections"] > 0 and result["rate_per_s"] > 0, result
        assert sum(result["per_second"]) == result["connections"]
    else:
        assert result["asked"] > 0 and result["flood_sent"] > 0, result
        accounted = result["answered"] + result["error_answers"] + result["lost"]
        assert accounted == result["asked"], result
        assert result["p50_ms"] <= result["max_ms"]


@pytest.mark.timeout(60)
def test_loadgen_echo_small_quick_mode(procs):
    eco = procs.start("eco", "eco", "--port", "0", "--log-level", "WARNING")
    result = _loadgen(
        "echo-small", "--to", eco.address, "--sessions", "3", "--rounds", "200", "--warmup", "20"
    )
    assert result["payload_bytes"] == 60 and len(result["sessions"]) == 3, result
    for session in result["sessions"]:
        assert session["ayudantia_us"] > 0 and session["mp_us"] > 0 and session["ratio"] > 0
    assert result["ratio"] == sorted(s["ratio"] for s in result["sessions"])[1]
