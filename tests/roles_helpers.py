"""Real role processes for the class's tests: started, waited for, and always reaped.

Output goes to files (a pipe that nobody reads fills up and stalls the child). Every process
a :class:`Procs` starts is stopped at teardown: SIGINT, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from protocol.transport import Connection

READY = re.compile(r"listening on (\S+)")


class Role:
    def __init__(
        self,
        name: str,
        args: list[str],
        logdir: Path,
        env: dict[str, str] | None,
        prefix: list[str] | None = None,
    ):
        self.name = name
        self.prefix = list(prefix or [])
        self.args = args
        self.out = logdir / f"{name}-{time.monotonic_ns()}.out"
        self.err = self.out.with_suffix(".err")
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "ayudantia", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        self.address = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self.out.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = READY.search(self.stdout())
            if m:
                self.address = m.group(1)
                return self.address
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.stderr()}")
            time.sleep(0.02)
        raise AssertionError(f"{self.name} not ready in {timeout} s:\n{self.stderr()}")

    @property
    def hostport(self) -> tuple[str, int]:
        host, _, port = self.address.removeprefix("http://").rpartition(":")
        return host, int(port)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # with PYTHONFAULTHANDLER: every thread's stack
            time.sleep(0.5)
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"{self.name} did not exit within {timeout} s of signal {sig}:\n{self.stderr()}"
            ) from None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()


class Procs:
    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.started: list[Role] = []

    def start(
        self,
        name: str,
        *args: str,
        env: dict[str, str] | None = None,
        ready=True,
        prefix: list[str] | None = None,
    ) -> Role:
        """Start ``ayudantia ARGS``; ``prefix`` runs it under a wrapper (e.g. ``ip netns exec``
        from tests/netns.py, to put the role on another host)."""
        role = Role(name, list(args), self.logdir, env, prefix)
        self.started.append(role)
        if ready:
            role.wait_ready()
        return role

    def clase(
        self,
        codec: str = "json",
        *,
        db: Path | None = None,
        timeout: float = 10.0,
        profesor_timeout: float = 5.0,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> dict[str, Role]:
        """Profesor, Tareo and Docencio on free loopback ports, in order, each ready."""
        db = db or self.logdir / "profesor.sqlite3"
        wire = ["--codec", codec, *extra]
        profesor = self.profesor(db, *wire, env=env)
        tareo = self.start(
            "tareo",
            "tareo",
            *wire,
            "--port",
            "0",
            "--profesor",
            profesor.address,
            "--timeout",
            str(profesor_timeout),
            env=env,
        )
        docencio = self.docencio(tareo, profesor.address, *wire, "--timeout", str(timeout), env=env)
        return {"profesor": profesor, "tareo": tareo, "docencio": docencio}

    def profesor(self, db: Path, *flags: str, env: dict[str, str] | None = None) -> Role:
        """A Profesor on a free loopback port, counting in the SQLite file ``db``."""
        return self.start("profesor", "profesor", *flags, "--port", "0", "--db", str(db), env=env)

    def docencio(
        self,
        tareo: Role,
        profesor: str,
        *flags: str,
        name: str = "docencio",
        env: dict[str, str] | None = None,
    ) -> Role:
        """A Docencio on a free loopback port, asking ``tareo`` and reporting to ``profesor``."""
        where = ("--port", "0", "--tareo", tareo.address, "--profesor", profesor)
        return self.start(name, "docencio", *flags, *where, env=env)

    def close(self) -> None:
        for role in reversed(self.started):
            if role.proc.poll() is None:
                with contextlib.suppress(AssertionError):
                    role.stop(timeout=5)


def connect(role: Role, codec: str = "json", **kw: Any) -> Connection:
    from roles.base import WireSettings

    host, port = role.hostport
    return WireSettings.for_codec(codec, **kw).connect(host, port)


def ask(conn: Connection, qid: str, tipo: str, de: str = "test") -> None:
    conn.send({"id": qid, "tipo": tipo, "de": de})


def recv_all(conn: Connection, n: int, timeout: float = 20.0) -> list[dict]:
    conn.sock.settimeout(timeout)
    conn.idle_timeout = timeout
    return [conn.recv() for _ in range(n)]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def profesor_count(url: str) -> int:
    import requests

    from roles.profesor import parse_count

    return parse_count(requests.get(url + "/preguntas", timeout=5).json()["texto"])


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
