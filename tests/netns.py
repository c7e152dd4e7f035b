"""A small LAN of network namespaces for tests: one host per role, joined by a real bridge.

Why: loopback never exercises binding to a real address, names in certificates, ARP, a link
that goes away and comes back. A namespace per host gives each role its own interface and
address (198.18.0.0/24, the benchmarking range) on one machine, with nothing added to the root
namespace: every address, route and link lives inside namespaces this module creates and
deletes. Names carry a prefix plus the pid, so parallel runs never clash, and leftovers of a
dead run (its pid gone) are removed by the next one.

Use :func:`lan` (a context manager) or the ``make_lan`` fixture; run a role inside a host with
:meth:`Lan.cmd` (an ``ip netns exec`` prefix) or :meth:`Lan.popen`; take a host off the LAN
with :meth:`Lan.down` and bring it back with :meth:`Lan.up`.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

PREFIX = "aytest-"
SUBNET = "198.18.0"
FIRST_HOST = 10  # hosts get 198.18.0.10, .11, ...; .1-.9 stay free for anything else
_counter = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def _namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> None:
    """Delete namespaces of our prefix whose creating pid is gone (a run killed mid-test)."""
    for name in _namespaces():
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            _ip("netns", "del", name, check=False)


def unavailable() -> str | None:
    """Why namespaces cannot be used here, or None when they can (probed, not guessed)."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "`ip netns` needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    probe = f"{PREFIX}{os.getpid()}-probe{next(_counter)}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` is not allowed here: {made.stderr.strip()}"
    try:
        link = _ip("-n", probe, "link", "add", "br0", "type", "bridge", check=False)
        if link.returncode != 0:
            return f"cannot create a bridge in a namespace: {link.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def require() -> None:
    """Skip the calling test where namespaces are not allowed; with env CI set, fail instead
    (CI runs as root, so a missing capability there is a broken runner, not a reason)."""
    reason = unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and network namespaces are required: {reason}")
    pytest.skip(reason)


@dataclass
class Lan:
    """A bridge namespace and one namespace per host; ``address[host]`` is its IPv4 address."""

    tag: str
    hosts: list[str]
    address: dict[str, str] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    started: list[subprocess.Popen] = field(default_factory=list)

    @property
    def bridge_ns(self) -> str:
        return f"{self.tag}-br"

    def ns(self, host: str) -> str:
        """The namespace name of ``host``."""
        return f"{self.tag}-{self.hosts.index(host)}"

    def build(self) -> None:
        _ip("netns", "add", self.bridge_ns)
        self.namespaces.append(self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        _ip("-n", self.bridge_ns, "link", "set", "lo", "up")
        for i, host in enumerate(self.hosts):
            ns = self.ns(host)
            _ip("netns", "add", ns)
            self.namespaces.append(ns)
            # Made inside the bridge's namespace with its peer moved straight into the host's:
            # the pair never exists in the root namespace, so no name there can clash.
            port = f"p{i}"
            _ip("-n", self.bridge_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0")
            _ip("-n", self.bridge_ns, "link", "set", "eth0", "netns", ns)
            _ip("-n", self.bridge_ns, "link", "set", port, "master", "br0")
            _ip("-n", self.bridge_ns, "link", "set", port, "up")
            addr = f"{SUBNET}.{FIRST_HOST + i}"
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            self.address[host] = addr

    def cmd(self, host: str, *argv: str) -> list[str]:
        """``argv`` run inside ``host`` (``ip netns exec`` execs it: the pid is the command's)."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def popen(self, host: str, *argv: str, **kw) -> subprocess.Popen:
        """Start ``argv`` inside ``host``; it is reaped when the LAN is torn down."""
        proc = subprocess.Popen(self.cmd(host, *argv), **kw)
        self.started.append(proc)
        return proc

    def run(self, host: str, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run ``argv`` inside ``host`` to the end (bounded by ``timeout``)."""
        return subprocess.run(
            self.cmd(host, *argv), capture_output=True, text=True, timeout=timeout
        )

    def down(self, host: str) -> None:
        """Take ``host`` off the LAN: its interface goes down (its sockets stay open)."""
        _ip("-n", self.ns(host), "link", "set", "eth0", "down")

    def up(self, host: str) -> None:
        """Bring ``host`` back: the interface comes up and its subnet route with it."""
        _ip("-n", self.ns(host), "link", "set", "eth0", "up")

    def close(self) -> None:
        """Reap every process started here, then delete every namespace (idempotent)."""
        for proc in reversed(self.started):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.started.clear()
        for ns in reversed(self.namespaces):
            _ip("netns", "del", ns, check=False)
        self.namespaces.clear()


@contextlib.contextmanager
def lan(*hosts: str) -> Iterator[Lan]:
    """A LAN of ``hosts`` (names of your choosing), torn down on exit even on failure.

    Skips (or fails under CI) where namespaces are not allowed."""
    require()
    remove_leftovers()
    net = Lan(f"{PREFIX}{os.getpid()}-{next(_counter)}", list(hosts))
    atexit.register(net.close)  # a KeyboardInterrupt past the finally still cleans up
    try:
        net.build()
        yield net
    finally:
        net.close()
        atexit.unregister(net.close)


@pytest.fixture
def make_lan():
    """A factory fixture: ``make_lan("profesor", "tareo", ...)`` builds a LAN of those hosts;
    every LAN it made is torn down at teardown."""
    with contextlib.ExitStack() as stack:
        yield lambda *hosts: stack.enter_context(lan(*hosts))
