"""Discovery with DNS-SD over mDNS (ayudantia/discovery.py).

Unit tests first: the TXT record both ways, the table, picking among candidates (one, none,
two of one class) and the check that a client can talk to what it found. Then the real thing
on a LAN of network namespaces (tests/netns.py): servers announce, ``ayudantia find`` and
``--find`` see them from another host; skipped where ``ip netns`` is not allowed.
"""

from __future__ import annotations

import ipaddress
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from netns import Lan
from roles_helpers import Procs, Role, wait_for

from ayudantia.discovery import (
    COLUMNS,
    Announcement,
    Announcer,
    announce_addresses,
    check,
    pick,
    pick_address,
    table,
)
from protocol.errors import AmbiguousServers, BadAnnouncement, NoServerFound, ServerMismatch


def _ann(role="docencio", cls="aula-3", *, addresses=("198.18.0.12",), port=4446, **kw):
    fields = {"codec": "json", "encoding": "none", "tls": False, "key": False, "version": "0.1.0"}
    fields.update(kw)
    return Announcement(role, cls, addresses=tuple(addresses), port=port, **fields)


# --- the TXT record ---------------------------------------------------------------------


def test_txt_has_every_key_and_no_secret():
    txt = _ann(key=True, tls=True).txt()
    assert set(txt) == {"role", "class", "codec", "encoding", "tls", "key", "version"}
    assert txt["tls"] == "1" and txt["key"] == "1"
    assert all(isinstance(v, str) for v in txt.values())


@pytest.mark.parametrize("tls,key", [(False, False), (True, False), (False, True), (True, True)])
def test_txt_round_trips_as_zeroconf_hands_it_back(tls, key):
    ann = _ann(tls=tls, key=key, codec="msgpack", encoding="zstd")
    wire = {k.encode(): v.encode() for k, v in ann.txt().items()}  # zeroconf gives bytes
    back = Announcement.from_txt(wire, addresses=ann.addresses, port=ann.port)
    assert back == ann


def test_a_txt_without_a_key_is_refused_naming_it():
    wire = {k.encode(): v.encode() for k, v in _ann().txt().items() if k != "codec"}
    with pytest.raises(BadAnnouncement, match="lacks codec"):
        Announcement.from_txt(wire, name="x")


@pytest.mark.parametrize("bad", [b"yes", b"", b"2"])
def test_a_flag_that_is_not_0_or_1_is_refused(bad):
    wire = {k.encode(): v.encode() for k, v in _ann().txt().items()}
    wire[b"tls"] = bad
    with pytest.raises(BadAnnouncement, match="tls"):
        Announcement.from_txt(wire)


def test_a_valueless_txt_key_counts_as_missing():
    wire: dict = {k.encode(): v.encode() for k, v in _ann().txt().items()}
    wire[b"role"] = None
    with pytest.raises(BadAnnouncement, match="role"):
        Announcement.from_txt(wire)


# --- what is announced where ------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_announces_nothing(host):
    assert announce_addresses(host) == []
    announcer = Announcer(_ann(addresses=announce_addresses(host)))
    assert not announcer.active
    with announcer:  # starts and closes without a thread or a zeroconf instance
        assert announcer._thread is None


def test_a_given_address_is_announced_as_is():
    assert announce_addresses("198.18.0.12") == ["198.18.0.12"]


def test_a_wildcard_announces_interface_addresses_never_loopback():
    addrs = announce_addresses("0.0.0.0")
    for a in addrs:
        ip = ipaddress.ip_address(a)
        assert ip.version == 4 and not ip.is_loopback and not ip.is_unspecified


def test_the_address_on_a_local_network_is_dialled_first():
    local = [ipaddress.ip_network("198.18.0.0/24")]
    assert pick_address(["10.0.0.5", "198.18.0.12"], local) == "198.18.0.12"
    assert pick_address(["198.18.0.12", "10.0.0.5"], []) == "10.0.0.5"  # ordered: first v4
    ann = _ann(addresses=("10.0.0.5", "198.18.0.12"))
    assert ann.address(local) == "198.18.0.12:4446"
    assert _ann(addresses=("fd00::7",)).address() == "[fd00::7]:4446"


# --- the table --------------------------------------------------------------------------


def test_the_table_lists_class_role_address_codec_tls_key():
    rows = table(
        [
            _ann("docencio", "b", tls=True, key=True),
            _ann("tareo", "a", addresses=("198.18.0.11",), port=4445, encoding="zstd"),
        ]
    ).splitlines()
    assert rows[0].split() == list(COLUMNS)
    assert rows[1].split() == ["a", "tareo", "198.18.0.11:4445", "json+zstd", "no", "no"]
    assert rows[2].split() == ["b", "docencio", "198.18.0.12:4446", "json", "yes", "yes"]
    assert len({r.index(r.split()[2]) for r in rows}) == 1  # the address column is aligned


# --- picking ----------------------------------------------------------------------------


def test_the_one_server_of_the_role_is_picked():
    found = [_ann("tareo", port=4445), _ann("docencio")]
    assert pick(found, "docencio").port == 4446
    assert pick(found, "docencio", "aula-3").role == "docencio"


def test_no_server_of_the_role_or_class_is_not_found_and_says_what_was_seen():
    found = [_ann("docencio", "aula-1")]
    with pytest.raises(NoServerFound, match="aula-1"):
        pick(found, "docencio", "aula-9")
    with pytest.raises(NoServerFound, match="no tareo"):
        pick(found, "tareo")


def test_two_servers_of_one_class_are_listed_not_guessed():
    one = _ann(addresses=("198.18.0.12",))
    two = _ann(addresses=("198.18.0.13",))
    with pytest.raises(AmbiguousServers, match="2 docencios announce class 'aula-3'") as exc:
        pick([one, two, _ann("tareo")], "docencio", "aula-3")
    assert set(exc.value.found) == {one, two}


def test_two_classes_without_a_class_asked_for_are_ambiguous_and_a_class_picks():
    a, b = _ann(cls="a"), _ann(cls="b", addresses=("198.18.0.13",))
    with pytest.raises(AmbiguousServers, match="classes a, b"):
        pick([a, b], "docencio")
    assert pick([a, b], "docencio", "b") is b


# --- can this client talk to it ---------------------------------------------------------

PLAIN = {"codec": "json", "compress": "none", "tls": False, "key": False}


@pytest.mark.parametrize(
    "ann,client",
    [
        (_ann(), PLAIN),
        (_ann(codec="msgpack"), PLAIN),  # each side accepts the other's codec
        (_ann(encoding="zstd"), {**PLAIN, "compress": "lz4"}),  # receivers read every one
        (_ann(tls=True, key=True), {**PLAIN, "tls": True, "key": True}),
    ],
)
def test_a_server_the_client_can_talk_to_passes(ann, client):
    check(ann, **client)


@pytest.mark.parametrize(
    "ann,client,says",
    [
        (_ann(tls=True), PLAIN, "serves TLS: give --tls-ca"),
        (_ann(), {**PLAIN, "tls": True}, "plain TCP"),
        (_ann(key=True), PLAIN, "requires the class key"),
        (_ann(), {**PLAIN, "key": True}, "has no key"),
        (_ann(codec="pickle"), PLAIN, "codec pickle, this client --codec json"),
        (_ann(codec="no-such-codec"), PLAIN, "not installed here"),
        (_ann(encoding="brotli-9000"), PLAIN, "cannot read"),
    ],
)
def test_a_mismatch_is_one_line_that_says_what_differs(ann, client, says):
    with pytest.raises(ServerMismatch, match=says) as exc:
        check(ann, **client)
    assert "\n" not in str(exc.value) and "198.18.0.12:4446" in str(exc.value)


def test_every_difference_is_in_the_one_line():
    with pytest.raises(ServerMismatch) as exc:
        check(_ann(tls=True, key=True), **PLAIN)
    assert "TLS" in str(exc.value) and "key" in str(exc.value)


# --- on a LAN of network namespaces (tests/netns.py) -------------------------------------

AY = (sys.executable, "-m", "ayudantia")
UNREACHABLE = "198.18.0.99"  # inside the LAN's subnet, no host: connects there just fail
# Prints every add and removal of an _ayudantia._tcp service it hears, until killed.
WATCH = (
    "import time\n"
    "from zeroconf import ServiceBrowser, Zeroconf\n"
    "zc = Zeroconf()\n"
    "def on(zeroconf, service_type, name, state_change):\n"
    "    print(state_change.name, name, flush=True)\n"
    "ServiceBrowser(zc, '_ayudantia._tcp.local.', handlers=[on])\n"
    "time.sleep(120)\n"
)


def _find(net: Lan, host: str, timeout: str = "2") -> subprocess.CompletedProcess:
    return net.run(host, *AY, "find", "--timeout", timeout, timeout=30)


def _rows(out: str) -> list[list[str]]:
    """The table's rows after its header, each split into its cells."""
    lines = out.strip().splitlines()
    assert lines and lines[0].split() == list(COLUMNS), out
    return [line.split() for line in lines[1:]]


def _where(role: Role) -> str:
    return role.address.removeprefix("http://")


def _heard(net: Lan, host: str, rows: int, role: str) -> list[list[str]]:
    """Run ``ayudantia find`` from ``host`` until ``rows`` servers of ``role`` are listed
    (registration probes its name for a second or two after the server's ready line)."""
    seen: list[list[str]] = []

    def enough() -> bool:
        out = _find(net, host)
        seen[:] = _rows(out.stdout) if out.returncode == 0 else []
        return sum(r[1] == role for r in seen) >= rows

    assert wait_for(enough, 40, interval=0.2), seen
    return seen


def _docencio(procs: Procs, net: Lan, tmp: Path, host: str, *flags: str) -> Role:
    """A Docencio on ``host`` whose Tareo and Profesor are nowhere: enough to be found."""
    return procs.start(
        host,
        *("docencio", "--port", "0", "--tareo", f"{UNREACHABLE}:9"),
        *("--profesor", f"http://{UNREACHABLE}:9", "--outbox", str(tmp / f"{host}.sqlite3")),
        *flags,
        prefix=net.cmd(host),
    )


@pytest.mark.timeout(150)
def test_find_lists_the_class_and_estudiante_find_asks_its_docencio(make_lan, procs, tmp_path):
    """Profesor, Tareo and Docencio on three hosts, class 'aula'; the Docencio finds its
    Tareo with --find; a student's host lists all three and asks the Docencio it finds."""
    net: Lan = make_lan("profesor", "tareo", "docencio", "alumno")

    def here(host: str) -> tuple[str, ...]:
        return ("--host", net.address[host], "--port", "0")

    profesor = procs.start(
        "profesor",
        *("profesor", *here("profesor"), "--db", str(tmp_path / "p.sqlite3"), "--class", "aula"),
        prefix=net.cmd("profesor"),
    )
    tareo = procs.start(
        "tareo",
        *("tareo", *here("tareo"), "--profesor", profesor.address, "--class", "aula"),
        prefix=net.cmd("tareo"),
    )
    _heard(net, "docencio", 1, "tareo")
    docencio = procs.start(  # no --tareo, no --class: both from the Tareo's announcement
        "docencio",
        *("docencio", *here("docencio"), "--find", "aula", "--profesor", profesor.address),
        *("--outbox", str(tmp_path / "outbox.sqlite3")),
        prefix=net.cmd("docencio"),
    )
    assert f"found the tareo of class 'aula' at {_where(tareo)}" in docencio.stderr()
    rows = _heard(net, "alumno", 1, "docencio")
    listed = {(r[0], r[1], r[2]) for r in rows}
    assert listed == {
        ("aula", "profesor", _where(profesor)),
        ("aula", "tareo", _where(tareo)),
        ("aula", "docencio", _where(docencio)),
    }, rows
    assert all(r[3:] == ["json", "no", "no"] for r in rows), rows

    asks = ("--questions", "6", "--interval", "0", "--quiet", "--name", "Ana", "--timeout", "20")
    out = net.run("alumno", *AY, "estudiante", "--find", "aula", *asks, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Ana: 6/6 respondidas, 0 errores" in out.stdout, out.stdout
    assert f"found the docencio of class 'aula' at {_where(docencio)}" in out.stderr

    # a client whose settings do not match what is announced: one line, exit 2
    out = net.run("alumno", *AY, "estudiante", "--find", *asks, "--key", "k", timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and "has no key: drop --key" in out.stderr, out.stderr
    out = net.run("alumno", *AY, "estudiante", "--find", "aula-9", *asks, timeout=60)
    assert out.returncode == 1 and "no docencio of class 'aula-9'" in out.stderr, out.stderr


@pytest.mark.timeout(150)
def test_two_docencios_of_one_class_are_listed_and_refused(make_lan, procs, tmp_path):
    net: Lan = make_lan("d1", "d2", "alumno")
    one = _docencio(procs, net, tmp_path, "d1", "--host", net.address["d1"], "--class", "aula")
    two = _docencio(procs, net, tmp_path, "d2", "--host", net.address["d2"], "--class", "aula")
    _heard(net, "alumno", 2, "docencio")
    out = net.run("alumno", *AY, "estudiante", "--find", "aula", "--questions", "1", timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    listed = {r[2] for r in _rows(out.stdout)}
    assert listed == {_where(one), _where(two)}, out.stdout
    assert "2 docencios announce class 'aula'" in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1, out.stderr


@pytest.mark.timeout(150)
def test_quiet_and_loopback_servers_announce_nothing_and_sigterm_withdraws(
    make_lan, procs, tmp_path
):
    """--announce off and a loopback bind are never heard; an announcing server is, until
    SIGTERM, whose goodbye removes it at once (its records' TTL is 120 s or more)."""
    net: Lan = make_lan("quiet", "loop", "ctl", "alumno")
    _docencio(procs, net, tmp_path, "quiet", "--host", net.address["quiet"], "--announce", "off")
    _docencio(procs, net, tmp_path, "loop")  # the default: 127.0.0.1
    watch_log = (tmp_path / "watch.out").open("w")
    net.popen("alumno", sys.executable, "-c", WATCH, stdout=watch_log, stderr=subprocess.STDOUT)
    control = _docencio(procs, net, tmp_path, "ctl", "--host", net.address["ctl"])
    rows = _heard(net, "alumno", 1, "docencio")
    assert [r[2] for r in rows] == [_where(control)], rows  # only the one that announces

    def watched() -> str:
        return (tmp_path / "watch.out").read_text(encoding="utf-8")

    assert wait_for(lambda: "Added" in watched(), 20), watched()
    assert watched().count("Added") == 1, watched()
    assert control.stop(signal.SIGTERM) == 0, control.stderr()
    assert wait_for(lambda: "Removed" in watched(), 10), watched()
    out = _find(net, "alumno")
    assert out.returncode == 1 and out.stdout == "", out.stdout
    assert out.stderr.count("\n") == 1 and "no ayudantia server answered" in out.stderr


def _tls(certs: Path, role: str) -> tuple[str, ...]:
    cert, key, ca = certs / f"{role}.pem", certs / f"{role}-key.pem", certs / "ca.pem"
    return ("--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca))


@pytest.mark.timeout(150)
def test_a_closed_class_is_found_and_only_a_client_with_its_ca_and_key_may_use_it(
    make_lan, procs, tmp_path
):
    """TLS and the key, on the TA's host (Profesor and Tareo on its loopback, the Docencio on
    its LAN address): the table says TLS yes, key yes; a student with the CA, a certificate
    and the key finds and asks it; one with neither is told what differs (exit 2)."""
    net: Lan = make_lan("ta", "alumno")
    certs = tmp_path / "certs"
    made = subprocess.run(
        [*AY, "certs", str(certs), "--host", net.address["ta"]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    key = ("--key", "aula-secret")
    on_ta = {"prefix": net.cmd("ta")}
    profesor = procs.start(
        "profesor",
        *("profesor", "--port", "0", "--db", str(tmp_path / "p.sqlite3"), *key),
        *_tls(certs, "profesor"),
        **on_ta,
    )
    tareo = procs.start(
        "tareo",
        *("tareo", "--port", "0", "--profesor", profesor.address),
        *(*key, *_tls(certs, "tareo")),
        **on_ta,
    )
    docencio = procs.start(
        "docencio",
        *("docencio", "--host", net.address["ta"], "--port", "0", "--tareo", tareo.address),
        *("--profesor", profesor.address, "--class", "cerrada"),
        *("--outbox", str(tmp_path / "outbox.sqlite3"), *key, *_tls(certs, "docencio")),
        **on_ta,
    )
    rows = _heard(net, "alumno", 1, "docencio")
    assert rows == [["cerrada", "docencio", _where(docencio), "json", "yes", "yes"]], rows

    asks = ("--questions", "6", "--interval", "0", "--quiet", "--name", "Ana", "--timeout", "20")
    out = net.run(
        "alumno",
        *(*AY, "estudiante", "--find", "cerrada", *asks, *key, *_tls(certs, "estudiante")),
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Ana: 6/6 respondidas, 0 errores" in out.stdout, out.stdout
    out = net.run("alumno", *AY, "estudiante", "--find", "cerrada", *asks, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "serves TLS: give --tls-ca" in out.stderr, out.stderr
    assert "requires the class key" in out.stderr and out.stderr.count("\n") == 1, out.stderr


@pytest.mark.timeout(60)
def test_find_on_a_host_whose_link_is_down_says_one_line(make_lan):
    """No route for multicast: zeroconf's send errors are not a traceback, just 'none'."""
    net: Lan = make_lan("alumno")
    net.down("alumno")
    out = net.run("alumno", *AY, "find", "--timeout", "1")
    assert out.returncode == 1 and out.stdout == "", out.stdout
    assert out.stderr.count("\n") == 1 and "no ayudantia server answered" in out.stderr, out.stderr
    out = net.run("alumno", *AY, "estudiante", "--find", "--find-timeout", "1")
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and "no ayudantia server answered" in out.stderr, out.stderr


# --- hostile announcements (any host on the LAN may announce) ----------------------------


def _wire(**overrides: str) -> dict[bytes, bytes]:
    wire = {k.encode(): v.encode() for k, v in _ann().txt().items()}
    wire.update({k.encode(): v.encode() for k, v in overrides.items()})
    return wire


@pytest.mark.parametrize(
    "key,value",
    [
        ("class", "\x1b[31mRED\x1b[0m"),
        ("class", "aula\nfake row"),
        ("codec", "evil\x07codec"),
        ("class", "x" * 240),
        ("version", "1\r"),
    ],
)
def test_an_escape_code_newline_or_long_value_is_refused_not_printed(key, value):
    with pytest.raises(BadAnnouncement, match=key) as info:
        Announcement.from_txt(_wire(**{key: value}), addresses=("198.18.0.12",), port=4446)
    assert "\x1b" not in str(info.value) and "\n" not in str(info.value)


def test_a_role_outside_the_three_is_refused():
    with pytest.raises(BadAnnouncement, match="role"):
        Announcement.from_txt(_wire(role="hacker"), addresses=("198.18.0.12",), port=4446)


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_a_port_that_cannot_be_dialled_is_refused(port):
    with pytest.raises(BadAnnouncement, match="port"):
        Announcement.from_txt(_wire(), addresses=("198.18.0.12",), port=port)


def test_loopback_wildcard_and_multicast_addresses_are_dropped():
    addrs = ("127.0.0.1", "0.0.0.0", "224.0.0.251", "::1", "198.18.0.12", "nonsense")
    ann = Announcement.from_txt(_wire(), addresses=addrs, port=4446)
    assert ann.addresses == ("198.18.0.12",)
    with pytest.raises(BadAnnouncement, match="no usable address"):
        Announcement.from_txt(_wire(), addresses=("127.0.0.1", "::"), port=4446)


def test_a_non_printable_instance_name_is_quoted_in_the_warning():
    wire = _wire()
    del wire[b"codec"]
    with pytest.raises(BadAnnouncement) as info:
        Announcement.from_txt(wire, name="x\x1b[2Jy", addresses=("198.18.0.12",), port=4446)
    assert "\x1b" not in str(info.value)
