"""``ayudantia find``: the classes announced on the LAN (DNS-SD over mDNS), as a table."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ayudantia.config import Option, config_option, find_timeout_option, log_level_option

NAME = "find"
HELP = (
    "list the ayudantia servers announced on the LAN (mDNS, _ayudantia._tcp): class, role, "
    "address, codec, TLS, key; exit 1 when none answers"
)


def options() -> list[Option]:
    return [
        find_timeout_option("timeout", "(all of them: every server is heard, not the first)"),
        log_level_option("WARNING"),
        config_option(),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def main(settings: dict[str, Any], args: argparse.Namespace) -> int:
    from ayudantia import discovery

    found = discovery.browse(settings["timeout"])
    if not found:
        print(
            f"ayudantia {NAME}: no ayudantia server answered within {settings['timeout']:g} s "
            "(servers announce only when bound to a LAN address; mDNS is UDP 5353 to "
            "224.0.0.251)",
            file=sys.stderr,
            flush=True,
        )
        return 1
    print(discovery.table(found, discovery.local_networks()), flush=True)
    return 0
