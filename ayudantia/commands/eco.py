"""``ayudantia eco``: the echo server the notebook's first clients talk to."""

from __future__ import annotations

import argparse
from typing import Any

from ayudantia.commands._roles import serve_after, wire_settings
from ayudantia.config import Option, server_options, wire_options
from roles.eco import Eco

NAME = "eco"
HELP = "echo server: answers every message with itself, same codec and chunking"


def options() -> list[Option]:
    return [
        *wire_options(port=12345),
        *server_options("clients served at once"),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def main(settings: dict[str, Any], args: argparse.Namespace) -> int:
    wire = wire_settings(settings)
    server = Eco(
        settings["host"],
        settings["port"],
        wire=wire,
        max_clients=settings["max_clients"],
        loop=settings["loop"],
    )
    host, port = server.start()
    accepts = ", ".join(sorted(wire.accept))
    signed = "; signed frames only" if wire.key else ""
    line = (
        f"eco listening on {host}:{port} (codec {wire.codec}; accepts {accepts}{signed}; "
        f"loop {server.loop_name})"
    )
    return serve_after(server, lambda: print(line, flush=True))
