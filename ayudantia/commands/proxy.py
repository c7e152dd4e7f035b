"""``ayudantia proxy``: a TCP proxy that emulates a link (latency, bandwidth, faults)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ayudantia import netem, rules
from ayudantia.config import ConfigError, Option, config_option, log_level_option, loop_option
from ayudantia.netem import Link, Proxy

NAME = "proxy"
HELP = "a TCP proxy that shapes its link: delay, jitter, rate, resets and stalls"


def options() -> list[Option]:
    return [
        Option(
            "listen",
            "127.0.0.1:0",
            "HOST:PORT to listen on (port 0: any free one)",
            rules.Rule(rules.HOSTPORT.allowed, _listen),
            "HOST:PORT",
        ),
        Option(
            "to",
            None,
            "the server to forward to, HOST:PORT (required)",
            rules.HOSTPORT,
            "HOST:PORT",
        ),
        Option(
            "delay",
            "0ms",
            "one-way latency of every byte, e.g. 20ms: a minimum, never less (up to ~1 ms more)",
            netem.DURATION,
            "T",
        ),
        Option(
            "jitter",
            "0ms",
            "latency varies by up to this much (never reorders)",
            netem.DURATION,
            "T",
        ),
        Option("rate", None, "bandwidth both ways, e.g. 100mbit, 1gbit, 12MB/s", netem.RATE, "R"),
        Option("up_rate", None, "bandwidth client->server (overrides --rate)", netem.RATE, "R"),
        Option("down_rate", None, "bandwidth server->client (overrides --rate)", netem.RATE, "R"),
        Option(
            "reset_after",
            None,
            "reset each connection once this many bytes have passed, both directions "
            "counted together (up + down)",
            netem.BYTES,
            "BYTES",
        ),
        Option(
            "stall_every",
            None,
            "stall all forwarding every S (with --stall-for)",
            netem.DURATION,
            "S",
        ),
        Option("stall_for", None, "how long each stall lasts", netem.DURATION, "S"),
        Option(
            "pcap",
            None,
            "write everything forwarded, both directions, to FILE as a pcap (Wireshark, tshark)",
            rules.OUTPUT_FILE,
            "FILE",
        ),
        loop_option(),
        log_level_option("WARNING"),
        config_option(),
    ]


def _listen(raw: Any) -> tuple[str, int]:
    """HOST:PORT where port 0 is allowed (HOSTPORT itself wants a real port to reach)."""
    text = str(raw).strip()
    if text.endswith(":0"):
        return rules.HOST(text[:-2].strip("[]")), 0
    return rules.HOSTPORT(raw)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def link_from(settings: dict[str, Any]) -> Link:
    """The emulated link, or a ConfigError in the user's terms."""
    if (settings["stall_every"] is None) != (settings["stall_for"] is None):
        raise ConfigError("--stall-every and --stall-for go together")
    try:
        return Link(**netem.link_kwargs(settings))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def check(settings: dict[str, Any], args: argparse.Namespace) -> None:
    if settings["to"] is None:
        raise ConfigError("--to HOST:PORT is required: the server the proxy forwards to")
    link_from(settings)


def main(settings: dict[str, Any], args: argparse.Namespace) -> int:
    proxy = Proxy(
        settings["listen"],
        settings["to"],
        link_from(settings),
        settings["loop"],
        pcap=settings["pcap"],
    )
    target = "{}:{}".format(*settings["to"])

    def ready() -> None:
        host, port = proxy.address
        print(f"proxy listening on {host}:{port} -> {target} (loop {proxy.loop_name})")
        print(f"link: {proxy.link.describe()}", flush=True)
        if proxy.capture is not None:
            print(f"capture: {proxy.capture.path}", flush=True)

    try:
        proxy.start()
    except OSError as exc:
        if exc.filename is not None:  # the capture file, opened before the socket
            print(
                f"ayudantia proxy: cannot write {exc.filename}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 1
        where = "{}:{}".format(*settings["listen"])
        print(f"ayudantia proxy: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    status = proxy.serve_until_signal(ready)
    print(f"proxy: {proxy.stats.describe()}", flush=True)
    if proxy.capture is not None:
        capture = proxy.capture
        if capture.error is not None:
            print(f"ayudantia proxy: writing {capture.path}: {capture.error}", file=sys.stderr)
            return 1
        print(f"capture: {capture.packets} packets in {capture.path}", flush=True)
    return status
