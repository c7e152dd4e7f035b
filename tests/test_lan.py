"""The class across real interfaces: each role on its own host (a network namespace, see
tests/netns.py), bound to its 198.18.0.x address, talking over a real bridge.

Why: loopback hides what a LAN shows: binding to a non-loopback address, names in TLS
certificates, a link that goes away and comes back. Skipped where ``ip netns`` is not allowed,
a failure when CI is set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from netns import Lan
from roles_helpers import Procs, Role, wait_for

STUDENTS = 3
HOSTS = ("profesor", "tareo", "docencio", *(f"alumno-{i}" for i in range(STUDENTS)))


# --- the helper itself --------------------------------------------------------------------

# A connect to a closed port: refused (an RST came back) means the host is reachable; a
# timeout or "unreachable" means it is not. No ping binary needed, no listener to reap.
PROBE = (
    "import socket,sys\n"
    "try: socket.create_connection((sys.argv[1], 9), timeout=2)\n"
    "except ConnectionRefusedError: sys.exit(0)\n"
    "except OSError: sys.exit(1)\n"
)


def _reaches(net: Lan, src: str, dst: str) -> bool:
    return net.run(src, sys.executable, "-c", PROBE, net.address[dst]).returncode == 0


@pytest.mark.timeout(60)
def test_hosts_reach_each_other_and_the_root_namespace_is_untouched(make_lan):
    before = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    net: Lan = make_lan("a", "b")
    assert net.address["a"] != net.address["b"]
    assert wait_for(lambda: _reaches(net, "a", "b"), 20)
    after = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    assert "198.18." not in after and before == after
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    assert "198.18." not in routes
    net.down("b")
    assert not _reaches(net, "a", "b")
    net.up("b")
    assert wait_for(lambda: _reaches(net, "a", "b"), 20)


@pytest.mark.timeout(60)
def test_the_lan_is_gone_after_the_block_even_on_failure():
    from netns import lan

    names: list[str] = []
    with pytest.raises(RuntimeError), lan("a", "b") as net:
        names = list(net.namespaces)
        proc = net.popen("a", "sleep", "30")
        raise RuntimeError("a failing test")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert names and not any(n in listed for n in names)
    assert proc.poll() is not None  # reaped


# --- the class on the LAN -----------------------------------------------------------------


def _class_on_lan(
    procs: Procs, net: Lan, tmp: Path, flags: tuple[str, ...] = (), per: dict | None = None
) -> dict[str, Role]:
    """Profesor, Tareo, Docencio each on its own host, bound to that host's address."""
    per = per or {}

    def start(name: str, *args: str) -> Role:
        here = ("--host", net.address[name], "--port", "0")
        return procs.start(name, *args, *flags, *per.get(name, ()), *here, prefix=net.cmd(name))

    profesor = start("profesor", "profesor", "--db", str(tmp / "profesor.sqlite3"))
    tareo = start("tareo", "tareo", "--profesor", profesor.address, "--timeout", "5")
    docencio = start(
        "docencio",
        *("docencio", "--tareo", tareo.address, "--profesor", profesor.address),
        *("--timeout", "10", "--outbox", str(tmp / "outbox.sqlite3")),
    )
    return {"profesor": profesor, "tareo": tareo, "docencio": docencio}


def _students(
    procs: Procs,
    net: Lan,
    tmp: Path,
    docencio: Role,
    questions: int,
    interval: str,
    flags: tuple[str, ...] = (),
    per: dict | None = None,
) -> tuple[list[Role], list[Path]]:
    per = per or {}
    students, paths = [], []
    for i in range(STUDENTS):
        name = f"alumno-{i}"
        paths.append(tmp / f"{name}.json")
        students.append(
            procs.start(
                name,
                *("estudiante", "--docencio", docencio.address, "--questions", str(questions)),
                *("--interval", interval, "--name", f"Alumno-{i}", "--timeout", "30"),
                *("--report", str(paths[-1]), *flags, *per.get(name, ())),
                ready=False,
                prefix=net.cmd(name),
            )
        )
    return students, paths


def _reports(students: list[Role], paths: list[Path]) -> list[dict]:
    for s in students:
        s.proc.wait(90)
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths]


def _certs(net: Lan, tmp: Path) -> dict[str, tuple[str, ...]]:
    """A CA and certificates naming every host's address; the TLS flags of each host."""
    certs = tmp / "certs"
    hosts = [a for h in ("profesor", "tareo", "docencio") for a in ("--host", net.address[h])]
    made = subprocess.run(
        [sys.executable, "-m", "ayudantia", "certs", str(certs), *hosts],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    return {name: _tls_flags(certs, name) for name in HOSTS}


def _tls_flags(certs: Path, host: str) -> tuple[str, ...]:
    role = host.split("-")[0]
    if role == "alumno":
        role = "estudiante"
    cert, key = certs / f"{role}.pem", certs / f"{role}-key.pem"
    if not cert.exists():
        found = sorted(p.name for p in certs.iterdir())
        raise AssertionError(f"no certificate for {role} in {found}")
    return ("--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(certs / "ca.pem"))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("secure", [False, True], ids=["plain", "tls-key"])
def test_the_class_with_every_role_on_its_own_host(make_lan, procs, tmp_path, secure):
    """Every question is answered across the bridge and the Profesor's count is exact."""
    net: Lan = make_lan(*HOSTS)
    flags: tuple[str, ...] = ("--key", "lan-secret") if secure else ()
    per = _certs(net, tmp_path) if secure else {}
    roles = _class_on_lan(procs, net, tmp_path, flags, per)
    for name in ("profesor", "tareo", "docencio"):
        assert net.address[name] in roles[name].address, roles[name].address
    students, paths = _students(procs, net, tmp_path, roles["docencio"], 30, "0", flags, per)
    reports = _reports(students, paths)
    answered = sum(r["answered"] for r in reports)
    for r, s in zip(reports, students, strict=True):
        assert r["questions"] == 30 and r["unanswered"] == 0, (r, s.stderr())
        assert r["misrouted"] == 0 and r["duplicates"] == 0, r
    assert answered > 0
    assert wait_for(lambda: _count(net, roles["profesor"], per) == answered, 20), (
        _count(net, roles["profesor"], per),
        answered,
    )


def _count(net: Lan, profesor: Role, per: dict) -> int:
    """The Profesor's count, read over HTTP from a student's host (the root namespace has no
    route to the LAN); with TLS the Profesor asks for a client certificate, so one is shown."""
    url = profesor.address + "/preguntas"
    tls = dict(zip(per["docencio"][::2], per["docencio"][1::2], strict=True)) if per else {}
    how = (
        f"cert=({tls['--tls-cert']!r},{tls['--tls-key']!r}),verify={tls['--tls-ca']!r},"
        if tls
        else ""
    )
    script = (
        "import requests;from roles.profesor import parse_count;"
        f"r=requests.get({url!r},{how}timeout=5);print(parse_count(r.json()['texto']))"
    )
    out = net.run("alumno-0", sys.executable, "-c", script)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("victim", ["docencio", "tareo"])
def test_a_host_taken_down_mid_class_keeps_the_count_exact(make_lan, procs, tmp_path, victim):
    """The victim's link goes down for a while, then up: the students ride through (TCP
    retransmits or they reconnect), every question is answered and the count is exact."""
    net: Lan = make_lan(*HOSTS)
    roles = _class_on_lan(procs, net, tmp_path)
    students, paths = _students(procs, net, tmp_path, roles["docencio"], 300, "0.002")
    for s in students:  # connected (and asking) before the link goes
        assert wait_for(lambda s=s: "Cliente conectado" in s.stdout(), 20), s.stderr()
    net.down(victim)
    try:
        downtime = wait_for(lambda: all(s.proc.poll() is not None for s in students), 2.0)
        assert not downtime, "the class ended before the link came back: nothing was tested"
    finally:
        net.up(victim)
    reports = _reports(students, paths)
    answered = sum(r["answered"] for r in reports)
    assert answered > 0
    for r, s in zip(reports, students, strict=True):
        assert r["questions"] == 300 and r["unanswered"] == 0, (r, s.stderr())
        assert r["misrouted"] == 0 and r["duplicates"] == 0, r
    assert wait_for(lambda: _count(net, roles["profesor"], {}) == answered, 30), (
        _count(net, roles["profesor"], {}),
        answered,
    )


# Round trips through the proxy, from the client's host: prints the shortest in seconds.
RTT = (
    "import sys,time\n"
    "from roles.base import WireSettings\n"
    "host,port=sys.argv[1].rsplit(':',1)\n"
    "c=WireSettings.for_codec('json').connect(host,int(port))\n"
    "best=1e9\n"
    "for i in range(5):\n"
    "    t=time.monotonic();c.send({'i':i});got=c.recv();best=min(best,time.monotonic()-t)\n"
    "    assert got=={'i':i},got\n"
    "print(best)\n"
)


@pytest.mark.timeout(90)
def test_the_proxy_between_two_hosts_shapes_the_link(make_lan, procs):
    """client -> proxy (its own host, --delay 50ms --rate 1mbit) -> eco: every message comes
    back, and no round trip is shorter than twice the one-way delay."""
    net: Lan = make_lan("client", "proxy", "server")
    eco = procs.start(
        "eco", "eco", "--host", net.address["server"], "--port", "0", prefix=net.cmd("server")
    )
    proxy = procs.start(
        "proxy",
        *("proxy", "--listen", f"{net.address['proxy']}:0", "--to", eco.address),
        *("--delay", "50ms", "--rate", "1mbit", "--log-level", "INFO"),
        prefix=net.cmd("proxy"),
    )
    assert net.address["proxy"] in proxy.address, proxy.address
    out = net.run("client", sys.executable, "-c", RTT, proxy.address)
    assert out.returncode == 0, out.stderr + proxy.stderr()
    assert float(out.stdout) >= 2 * 0.050, out.stdout
