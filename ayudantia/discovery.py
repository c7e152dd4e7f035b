"""Finding the class on a LAN: DNS-SD over mDNS (``_ayudantia._tcp.local.``), via zeroconf.

Why: a student told ``--docencio 192.0.2.11:4446`` by hand mistypes it, and the address
changes with every room. A server bound to a LAN address announces what a client needs to
know before it connects: its role, its class's name, its codec and encoding, and whether it
wants TLS or the keyed handshake (a 0/1, never the key). A client browses, picks the one
server of its role and class, checks it can talk to it, and connects; two candidates are
listed and refused rather than guessed between, since anyone on the LAN may announce.

Loopback is never announced (a server nobody else can reach has nothing to tell the LAN),
and a wildcard bind (``0.0.0.0``, ``::``) announces the addresses of its interfaces.
zeroconf runs its own event-loop thread; registration (which probes for ~1 s) runs in a
helper thread of :class:`Announcer`, so neither the server's loop nor its ready line waits
for it. A clean shutdown withdraws the service (goodbye packets, TTL 0); a SIGKILLed server
just expires when its records' TTLs run out.

This module lives in the CLI package (``ayudantia``): the roles never import it; the commands
announce around the servers they start.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import ipaddress
import logging
import queue
import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from protocol import codecs, encodings
from protocol.errors import (
    AmbiguousServers,
    BadAnnouncement,
    NoServerFound,
    ServerMismatch,
    UnknownCodec,
)

SERVICE_TYPE = "_ayudantia._tcp.local."
TXT_KEYS = ("role", "class", "codec", "encoding", "tls", "key", "version")
ROLES = ("profesor", "tareo", "docencio")
DEFAULT_TIMEOUT = 3.0  # mDNS answers within ~120 ms of a query; 3 s covers a second query
# The server's records live 120 s (zeroconf's PTR/TXT default is 75 min). A fresh browse
# (find, --find) never lists a SIGKILLed server, which sends no goodbye; a browser already
# running keeps the shared service-type record longer (about 20 min, measured in review).
ANNOUNCE_TTL = 120
MAX_TXT_VALUE = 64  # a class name, a codec, a version: longer is a forged record
WITHDRAW_TIMEOUT = 2.0  # goodbye packets go out in ~0.5 s; the rest is margin
_LABEL = re.compile(r"[^A-Za-z0-9-]+")
log = logging.getLogger("ayudantia.discovery")


def version() -> str:
    """This install's version, announced so a mismatch can be seen in ``ayudantia find``."""
    try:
        return importlib.metadata.version("ayudantia")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def default_class() -> str:
    """A class is named after the host that runs it unless ``--class`` says otherwise."""
    return socket.gethostname().split(".")[0] or "ayudantia"


@dataclass(frozen=True)
class Announcement:
    """What one server tells the LAN about itself (TXT) and where it is (SRV/A records)."""

    role: str
    class_name: str
    codec: str
    encoding: str
    tls: bool
    key: bool
    version: str
    addresses: tuple[str, ...] = ()
    port: int = 0
    name: str = ""  # the DNS-SD instance name it was found under ("" before registering)

    def txt(self) -> dict[str, str]:
        """The TXT record: every key of :data:`TXT_KEYS`, booleans as 0/1."""
        return {
            "role": self.role,
            "class": self.class_name,
            "codec": self.codec,
            "encoding": self.encoding,
            "tls": "1" if self.tls else "0",
            "key": "1" if self.key else "0",
            "version": self.version,
        }

    @classmethod
    def from_txt(
        cls,
        properties: Mapping[bytes | str, bytes | str | None],
        *,
        addresses: Iterable[str] = (),
        port: int = 0,
        name: str = "",
    ) -> Announcement:
        """Parse a TXT record; :class:`BadAnnouncement` names the key that is wrong."""
        txt: dict[str, str] = {}
        for raw_key, raw_value in properties.items():
            key = raw_key.decode("utf-8", "replace") if isinstance(raw_key, bytes) else raw_key
            if raw_value is None:
                continue
            try:
                value = raw_value.decode("utf-8") if isinstance(raw_value, bytes) else raw_value
            except UnicodeDecodeError:
                raise BadAnnouncement(f"{name or 'an announcement'}: {key} is not UTF-8") from None
            txt[key.lower()] = value
        who = (name if name.isprintable() else repr(name)) if name else "an announcement"
        missing = [k for k in TXT_KEYS if not txt.get(k)]
        if missing:
            raise BadAnnouncement(f"{who}: TXT lacks {', '.join(missing)}")
        for k in TXT_KEYS:  # any host may announce: its text reaches a student's terminal
            if len(txt[k]) > MAX_TXT_VALUE or not txt[k].isprintable():
                raise BadAnnouncement(
                    f"{who}: {k}={txt[k][:MAX_TXT_VALUE]!r} is not a short printable value"
                )
        if txt["role"] not in ROLES:
            raise BadAnnouncement(f"{who}: role={txt['role']!r} is not one of {', '.join(ROLES)}")
        flags = {}
        for k in ("tls", "key"):
            if txt[k] not in ("0", "1"):
                raise BadAnnouncement(f"{who}: {k}={txt[k]!r}, expected 0 or 1")
            flags[k] = txt[k] == "1"
        if not 1 <= port <= 65535:
            raise BadAnnouncement(f"{who}: port {port} is not a TCP port")
        usable = tuple(a for a in addresses if _reachable(a))
        if not usable:  # loopback or 0.0.0.0 would make a student dial their own machine
            raise BadAnnouncement(f"{who}: no usable address in {list(addresses)!r}")
        return cls(
            role=txt["role"],
            class_name=txt["class"],
            codec=txt["codec"],
            encoding=txt["encoding"],
            tls=flags["tls"],
            key=flags["key"],
            version=txt["version"],
            addresses=usable,
            port=port,
            name=name,
        )

    def address(self, local: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()) -> str:
        """``HOST:PORT`` to dial: an announced address on one of ``local``'s networks first
        (a laptop on two networks announces both; only one may be ours), else the first."""
        if not self.addresses:
            return f"?:{self.port}"
        host = pick_address(self.addresses, local)
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def endpoint(self) -> tuple[str, int]:
        """(host, port) to connect to, from this host (see :meth:`address`)."""
        return pick_address(self.addresses, local_networks()), self.port


# -- addresses ---------------------------------------------------------------------------------


def _usable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """An address another host can dial (a link-local IPv6 needs a scope a TXT cannot carry)."""
    return not (ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_link_local)


def interface_addresses(
    version: int | None = None,
) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """Every usable (address, prefix length) of this host's interfaces (via ifaddr)."""
    import ifaddr

    found = []
    for adapter in ifaddr.get_adapters():
        for entry in adapter.ips:
            raw = entry.ip if entry.is_IPv4 else entry.ip[0]
            try:
                ip = ipaddress.ip_address(raw)
            except ValueError:
                continue
            if _usable(ip) and (version is None or ip.version == version):
                found.append((ip, entry.network_prefix))
    return found


def local_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks this host is on, to prefer an announced address it can reach directly."""
    return [
        ipaddress.ip_interface(f"{ip}/{prefix}").network for ip, prefix in interface_addresses()
    ]


def announce_addresses(host: str) -> list[str]:
    """The addresses a server bound to ``host`` announces: none for loopback, the interfaces'
    for a wildcard, else what ``host`` is (an address, or a name resolved)."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror:
            return []
        ips = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        return sorted({str(i) for i in ips if _usable(i)}, key=_order)
    if ip.is_unspecified:
        version = 4 if ip.version == 4 else None  # "::" is dual-stack on Linux
        return sorted({str(i) for i, _ in interface_addresses(version)}, key=_order)
    return [str(ip)] if _usable(ip) else []


def _order(address: str) -> tuple[int, ipaddress.IPv4Address | ipaddress.IPv6Address]:
    ip = ipaddress.ip_address(address)
    return (ip.version, ip)  # type: ignore[return-value]


def _reachable(address: str) -> bool:
    """An address another host can be told to dial: not loopback, wildcard or multicast."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_unspecified or ip.is_multicast)


def pick_address(
    addresses: Sequence[str], local: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str:
    """The first of ``addresses`` on one of the ``local`` networks, else the first IPv4 one."""
    ordered = sorted(addresses, key=_order)
    for address in ordered:
        ip = ipaddress.ip_address(address)
        if any(ip.version == net.version and ip in net for net in local):
            return address
    return ordered[0]


# -- the table, picking, checking ------------------------------------------------------------

COLUMNS = ("class", "role", "address", "codec", "TLS", "key")


def table(found: Sequence[Announcement], local: Sequence = ()) -> str:
    """The servers as aligned text columns (class, role, address, codec, TLS, key)."""
    rows = [COLUMNS] + [
        (
            a.class_name,
            a.role,
            a.address(local),
            a.codec if a.encoding == "none" else f"{a.codec}+{a.encoding}",
            "yes" if a.tls else "no",
            "yes" if a.key else "no",
        )
        for a in sorted(
            found,
            key=lambda a: (
                a.class_name,
                ROLES.index(a.role) if a.role in ROLES else 9,
                a.address(local),
            ),
        )
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def pick(found: Sequence[Announcement], role: str, class_name: str | None = None) -> Announcement:
    """The one server of ``role`` (in ``class_name``, if given); else a typed error:
    :class:`NoServerFound`, or :class:`AmbiguousServers` with every candidate."""
    matches = tuple(
        a for a in found if a.role == role and (class_name is None or a.class_name == class_name)
    )
    where = f" of class {class_name!r}" if class_name is not None else ""
    if not matches:
        others = sorted({a.class_name for a in found if a.role == role})
        seen = f" (classes seen: {', '.join(others)})" if others else ""
        raise NoServerFound(f"no {role}{where} answered{seen}")
    if len(matches) > 1:
        classes = {a.class_name for a in matches}
        why = (
            f"{len(matches)} {role}s announce class {next(iter(classes))!r}"
            if len(classes) == 1
            else f"{len(matches)} {role}s answered in classes {', '.join(sorted(classes))}"
        )
        raise AmbiguousServers(
            f"{why}: give one --find CLASS, or the classes distinct --class names", matches
        )
    return matches[0]


def _encoding_ok(name: str) -> bool:
    return name == encodings.NONE or name in encodings.DEFAULT_ACCEPT


def check(found: Announcement, *, codec: str, compress: str, tls: bool, key: bool) -> None:
    """:class:`ServerMismatch` (one line, every difference) unless a client with these
    settings can talk to ``found``: each side must accept the other's codec and encoding,
    and both must agree on TLS and on the key (one side alone fails at the first frame)."""
    problems = []
    try:
        theirs = codecs.accept_for(found.codec, warn=False)
        if codec not in theirs or found.codec not in codecs.accept_for(codec, warn=False):
            problems.append(f"it speaks codec {found.codec}, this client --codec {codec}")
    except UnknownCodec:
        problems.append(f"it speaks codec {found.codec}, which is not installed here")
    if not _encoding_ok(found.encoding):
        problems.append(f"it compresses with {found.encoding}, which this client cannot read")
    if not _encoding_ok(compress):
        problems.append(f"this client compresses with {compress}, which it may not read")
    if found.tls != tls:
        problems.append(
            "it serves TLS: give --tls-ca (the class's CA)"
            if found.tls
            else "it serves plain TCP: drop --tls-ca/--tls-cert"
        )
    if found.key != key:
        problems.append(
            "it requires the class key: give --key or AYUDANTIA_KEY"
            if found.key
            else "it has no key: drop --key"
        )
    if problems:
        raise ServerMismatch(
            f"the {found.role} of class {found.class_name!r} at {found.address()} does not "
            f"match this client: {'; '.join(problems)}"
        )


# -- announcing --------------------------------------------------------------------------------


def _quiet_zeroconf() -> None:
    """zeroconf logs a traceback for each socket that cannot send (a link down, no multicast
    route); the commands say what matters in one line (nothing answered), so its warnings
    show only with ``--log-level DEBUG``."""
    if not log.isEnabledFor(logging.DEBUG):  # zeroconf sets its own level (WARNING) on import
        logging.getLogger("zeroconf").setLevel(logging.ERROR)


def _label(text: str) -> str:
    return _LABEL.sub("-", text).strip("-")[:40] or "ayudantia"


class Announcer:
    """Registers one server's announcement in the background; :meth:`close` withdraws it.

    Use as a context manager around serving. Nothing is registered when ``announcement`` has
    no addresses (a loopback bind): :attr:`active` says whether anything was.
    """

    def __init__(self, announcement: Announcement) -> None:
        self.announcement = announcement
        self.active = bool(announcement.addresses)
        self.registered = threading.Event()
        self._zc = None
        self._info = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> Announcer:
        """Start registering (returns at once; zeroconf probes for the name meanwhile)."""
        if self.active and self._thread is None:
            self._thread = threading.Thread(
                target=self._register, name="mdns-announce", daemon=True
            )
            self._thread.start()
        return self

    def _service_info(self):  # type: ignore[no-untyped-def]
        from zeroconf import ServiceInfo

        a = self.announcement
        first = a.addresses[0]
        # The SRV target names this host and address: two hosts with one host name (two
        # namespaces, two cloned laptops) must not merge their A records under one name.
        server = (
            f"{_label(default_class())}-{_label(first.replace('.', '-').replace(':', '-'))}.local."
        )
        instance = _label(f"{a.class_name} {a.role} {first} {a.port}")
        return ServiceInfo(
            SERVICE_TYPE,
            f"{instance}.{SERVICE_TYPE}",
            port=a.port,
            properties=a.txt(),
            server=server,
            parsed_addresses=list(a.addresses),
            host_ttl=ANNOUNCE_TTL,
            other_ttl=ANNOUNCE_TTL,
        )

    def _register(self) -> None:
        from zeroconf import InterfaceChoice, IPVersion, Zeroconf

        _quiet_zeroconf()
        a = self.announcement
        v6 = any(":" in addr for addr in a.addresses)
        v4 = any(":" not in addr for addr in a.addresses)
        ip_version = IPVersion.All if v4 and v6 else IPVersion.V6Only if v6 else IPVersion.V4Only
        try:
            info = self._service_info()
            with self._lock:
                if self._closed:
                    return
                interfaces = list(a.addresses) if len(a.addresses) == 1 else InterfaceChoice.All
                self._zc = Zeroconf(interfaces=interfaces, ip_version=ip_version)
            self._zc.register_service(info, allow_name_change=True)
            self._info = info
            self.registered.set()
            log.info("announced %s as %s on %s", a.role, info.name, ", ".join(a.addresses))
        except Exception as exc:  # a LAN without multicast must not stop the server
            if not self._closed:  # else: closed while probing, nothing to say
                log.warning("cannot announce %s on the LAN (mDNS): %s", a.role, exc)

    def close(self, timeout: float = WITHDRAW_TIMEOUT) -> None:
        """Withdraw the announcement (goodbye packets) and stop zeroconf, within ``timeout``."""
        with self._lock:
            if self._closed:
                return  # idempotent: at the signal, and again when serving ends
            self._closed = True
            zc = self._zc
        if self._thread is not None:
            self._thread.join(timeout / 2)
        if zc is None:
            return
        done = threading.Thread(target=zc.close, name="mdns-withdraw", daemon=True)
        done.start()
        done.join(timeout / 2 if self.registered.is_set() else 0.5)

    def __enter__(self) -> Announcer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- browsing ----------------------------------------------------------------------------------


def browse(timeout: float = DEFAULT_TIMEOUT) -> list[Announcement]:
    """Every announcement seen within ``timeout`` seconds, on every interface.

    The whole timeout is spent listening: a client that picks must know every candidate,
    not only the first to answer. Malformed announcements are logged and skipped.
    """
    from zeroconf import InterfaceChoice, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

    names: queue.SimpleQueue[tuple[str, bool]] = queue.SimpleQueue()

    def changed(zeroconf, service_type, name, state_change) -> None:  # type: ignore[no-untyped-def]
        names.put((name, state_change is not ServiceStateChange.Removed))

    _quiet_zeroconf()
    found: dict[str, Announcement] = {}
    pending: set[str] = set()
    deadline = time.monotonic() + timeout
    zc = Zeroconf(interfaces=InterfaceChoice.All)
    browser = None
    try:
        browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[changed])
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with contextlib.suppress(queue.Empty):
                name, present = names.get(timeout=min(left, 0.1) if pending else left)
                if present:
                    pending.add(name)
                else:
                    pending.discard(name)
                    found.pop(name, None)
            for name in list(pending):
                info = ServiceInfo(SERVICE_TYPE, name)
                wait_ms = int(max(0.05, min(0.5, deadline - time.monotonic())) * 1000)
                if info.request(zc, wait_ms) and info.parsed_addresses():
                    pending.discard(name)
                    try:
                        found[name] = Announcement.from_txt(
                            info.properties,
                            addresses=info.parsed_addresses(),
                            port=info.port or 0,
                            name=name,
                        )
                    except BadAnnouncement as exc:
                        log.warning("ignoring %s", exc)
    finally:
        if browser is not None:
            browser.cancel()
        zc.close()
    return list(found.values())


def find(
    role: str,
    class_name: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    codec: str,
    compress: str,
    tls: bool,
    key: bool,
) -> Announcement:
    """The one ``role`` server (of ``class_name``) a client with these settings can use.

    Raises :class:`NoServerFound`, :class:`AmbiguousServers` or :class:`ServerMismatch`;
    dial what it returns with :meth:`Announcement.endpoint`.
    """
    found = browse(timeout)
    if not found:
        raise NoServerFound(f"no ayudantia server answered within {timeout:g} s (mDNS)")
    chosen = pick(found, role, class_name)
    check(chosen, codec=codec, compress=compress, tls=tls, key=key)
    return chosen
