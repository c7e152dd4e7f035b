"""What the class's role commands share: upstream options, the ready line, serving, stats."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ayudantia import rules
from ayudantia.config import Option, seconds_option
from roles.signals import handle_signals
from roles.wire import WireSettings

if TYPE_CHECKING:  # the servers' module is imported by the commands that serve
    import argparse

    from ayudantia.discovery import Announcement, Announcer
    from roles.base import Server


def upstream_option(name: str, default: str, what: str) -> Option:
    if name == "profesor":
        return Option(name, default, f"{what} base URL", rules.URL, "URL")
    return Option(name, default, f"{what} HOST:PORT", rules.HOSTPORT, "HOST:PORT")


def timeout_option(default: float, what: str) -> Option:
    """``--timeout`` of a server: a per-request deadline, which must end (0 is refused)."""
    return seconds_option("timeout", default, f"to wait for {what}", unlimited=False)


def stats_option() -> Option:
    return Option(
        "stats", None, "write counters as JSON to FILE on exit", rules.OUTPUT_FILE, "FILE"
    )


def announce(role: str, where: str, codec: str) -> None:
    """The line ``ayudantia run`` (and a human) waits for before starting the next role."""
    print(f"{role} listening on {where} (codec {codec}, pid {os.getpid()})", flush=True)


def write_stats(path: str | None, stats: dict[str, Any]) -> None:
    if path:
        tmp = Path(path + ".tmp")
        tmp.write_text(json.dumps(stats, indent=1), encoding="utf-8")
        tmp.replace(path)


def serve_after(
    server: Server, ready: Callable[[], None], before_stop: Callable[[], None] | None = None
) -> int:
    """Call ``ready`` (print the "listening" line), then serve until SIGINT or SIGTERM.

    Whoever started us may signal as soon as it reads that line (``run``, a test). The
    signals are ours before the line is printed: one that comes before
    ``serve_until_signal`` takes them over stops the server too, instead of raising
    KeyboardInterrupt (exit 130) in the gap. ``before_stop`` runs when the signal comes,
    before the server stops (see :meth:`Server.serve_until_signal`).
    """
    done = threading.Event()
    with handle_signals() as early:

        def stop_if_signalled() -> None:
            early.wait()
            if not done.is_set():
                if before_stop is not None:
                    before_stop()
                server.stop()

        watcher = threading.Thread(target=stop_if_signalled, name="early-signal", daemon=True)
        watcher.start()
        ready()
        try:
            return server.serve_until_signal(before_stop)
        finally:
            done.set()
            early.set()
            watcher.join(5.0)


def serve_announced(
    role: str, server: Server, settings: dict[str, Any], stats: Callable[[], dict[str, Any]]
) -> int:
    """Announce a started server, serve until SIGINT/SIGTERM, then write its counters.

    With ``--announce on`` and a non-loopback bind it is also announced on the LAN (mDNS),
    and withdrawn as soon as serving ends, before the counters are written.
    """
    host, port = server.address
    where, codec = f"{host}:{port}", f"{settings['codec']}, loop {server.loop_name}"
    tls = server.wire.tls is not None and server.wire.tls.serves
    with lan_announcer(
        role, host, port, settings, tls=tls, key=server.wire.key is not None
    ) as lan:  # withdrawn at the signal, before a stop that may flush for seconds
        status = serve_after(server, lambda: announce(role, where, codec), lan.close)
    write_stats(settings["stats"], stats())
    return status


def lan_announcer(
    role: str, host: str, port: int, settings: dict[str, Any], *, tls: bool, key: bool
) -> Announcer:
    """The server's mDNS announcement (a context manager; inactive for a loopback bind, and
    for ``--announce off``). TXT says whether TLS and a key are needed, never the key."""
    from ayudantia import discovery

    addresses = discovery.announce_addresses(host) if settings.get("announce") == "on" else []
    return discovery.Announcer(
        discovery.Announcement(
            role=role,
            class_name=settings.get("class") or discovery.default_class(),
            codec=settings["codec"],
            encoding=settings.get("compress") or "none",
            tls=tls,
            key=key,
            version=discovery.version(),
            addresses=tuple(addresses),
            port=int(port),  # waitress reports its port as text
        )
    )


def add_find_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--find [CLASS]``: locate ``what`` by its mDNS announcement instead of an address."""
    parser.add_argument(
        "--find",
        nargs="?",
        const="",
        default=None,
        metavar="CLASS",
        help=f"locate {what} on the LAN by its mDNS announcement (of class CLASS, else the "
        "only one): two candidates are listed and refused (exit 2), none is exit 1",
    )


def check_find(args: argparse.Namespace, upstream: str) -> None:
    """``--find`` and ``--UPSTREAM`` on one command line contradict each other; CLASS is a
    name like ``--class``'s."""
    if args.find is None:
        return
    from ayudantia.config import ConfigError

    if getattr(args, upstream, None) is not None:
        raise ConfigError(f"--find locates the {upstream}; give --{upstream} or --find, not both")
    if args.find:
        try:
            args.find = rules.NAME(args.find)
        except rules.Invalid:
            raise ConfigError(f"--find {args.find!r}: a class is {rules.NAME.allowed}") from None


def locate(role: str, wanted: str | None, settings: dict[str, Any]) -> Announcement:
    """The one ``role`` server of class ``wanted`` (None: any) that these settings can talk
    to, found by mDNS; raises the typed errors of :func:`ayudantia.discovery.find`."""
    from ayudantia import discovery

    wire = wire_settings(settings)
    return discovery.find(
        role,
        wanted or None,
        timeout=settings["find_timeout"],
        codec=wire.codec,
        compress=wire.compress,
        tls=wire.tls_on,
        key=wire.key is not None,
    )


def server_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments every role server takes from its command's settings."""
    return {
        "wire": wire_settings(settings),
        "max_clients": settings["max_clients"],
        "loop": settings["loop"],
    }


def serve_reporting(
    role: str,
    server: Server,
    settings: dict[str, Any],
    report: Callable[[Server], dict[str, Any]],
) -> int:
    """:func:`serve_announced`, while ``report(server)`` goes to the Profesor's panel.

    The panel's numbers are signed and sent over TLS like the count's posts.
    """
    from roles.informante import Informante

    with Informante(
        settings["profesor"],
        role,
        lambda: report(server),
        key=server.wire.key,
        tls=server.wire.tls,
    ):
        return serve_announced(role, server, settings, server.stats)


def wire_settings(settings: dict[str, Any]) -> WireSettings:
    """The command's WireSettings (a timeout of 0, resolved to None, means no limit)."""
    return WireSettings.from_settings(settings)
