"""``ayudantia run``: the main job. Until the class exists, the Quijote round trip per codec."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from ayudantia.commands.quijote import eco_target, round_trip_message
from ayudantia.config import Option, wire_options
from ayudantia.quijote import load_text
from protocol import codecs
from roles.base import WireSettings

NAME = "run"
HELP = "the main job: send Don Quijote through the eco server in every safe codec"


def options() -> list[Option]:
    return [*wire_options(), Option("file", None, "the book", str, "PATH", True)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def main(settings: dict[str, Any], args: argparse.Namespace) -> int:
    text = load_text(settings["file"])
    ok = True
    for name in [n for n in codecs.available() if n != "raw" and codecs.get(n).safe]:
        wire = WireSettings.for_codec(
            name, chunk_size=settings["chunk_size"], max_message=settings["max_message"]
        )
        with (
            eco_target(None, wire) as (host, port),
            contextlib.closing(wire.connect(host, port)) as conn,
        ):
            result = round_trip_message(conn, text, 3)
        print(result.report(), end="\n\n", flush=True)
        ok = ok and result.verified
    return 0 if ok else 1
