"""``ayudantia tareo``: the multi-client server that answers homework and asks the Profesor."""

from __future__ import annotations

import argparse
from typing import Any

from ayudantia import rules
from ayudantia.commands._roles import (
    serve_reporting,
    server_settings,
    stats_option,
    timeout_option,
    upstream_option,
)
from ayudantia.config import Option, announce_options, server_options, wire_options
from roles.clase import PROFESOR_PORT, TAREO_PORT

NAME = "tareo"
HELP = "the Tareo: answers 'Tarea', asks the Profesor for 'Pregunta Dificil'"


def options() -> list[Option]:
    return [
        *wire_options(port=TAREO_PORT),
        upstream_option("profesor", f"http://127.0.0.1:{PROFESOR_PORT}", "the Profesor's"),
        timeout_option(5.0, "each Profesor call"),
        *server_options("clients served at once"),
        Option("workers", 16, "threads asking the Profesor at once", rules.integer(1, 1024), "N"),
        stats_option(),
        *announce_options(),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def main(settings: dict[str, Any], args: argparse.Namespace) -> int:
    from roles.tareo import Tareo

    server = Tareo(
        settings["host"],
        settings["port"],
        **server_settings(settings),
        profesor=settings["profesor"],
        profesor_timeout=settings["timeout"],
        workers=settings["workers"],
    )
    server.start()
    from roles.estado import tareo_report

    return serve_reporting(NAME, server, settings, tareo_report)
