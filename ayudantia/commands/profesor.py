"""``ayudantia profesor``: the Flask app of the notebook, served by waitress."""

from __future__ import annotations

import argparse
from typing import Any

from ayudantia.commands._roles import announce
from ayudantia.config import Option, wire_options
from roles.clase import PROFESOR_PORT

NAME = "profesor"
HELP = "the Profesor: HTTP API (GET /, /respuesta, GET|POST /preguntas), count in SQLite"


def options() -> list[Option]:
    return [
        *wire_options(port=PROFESOR_PORT),
        Option("db", None, "SQLite file for the count (default: user data dir)", str, "PATH"),
        Option("threads", 8, "waitress worker threads", int, "N"),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def main(settings: dict[str, Any], args: argparse.Namespace) -> int:
    from roles.profesor import create_app, default_db_path, serve

    db = settings["db"] or default_db_path()
    app = create_app(db, settings["codec"])
    return serve(
        app,
        settings["host"],
        settings["port"],
        threads=settings["threads"],
        ready=lambda host, port: announce(NAME, f"http://{host}:{port}", settings["codec"]),
    )
