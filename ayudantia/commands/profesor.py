"""``ayudantia profesor``: the Flask app of the notebook, served by waitress."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ayudantia import rules
from ayudantia.commands._roles import announce
from ayudantia.config import (
    Option,
    codec_option,
    config_option,
    listen_options,
    log_level_option,
)
from ayudantia.rules import Rule
from roles.clase import PROFESOR_PORT

NOT_SIGNED = Rule(
    "",
    rules.refuse(
        "the Profesor's HTTP API is not signed yet (signed Profesor requests come with the "
        "outsiders issue); run it without --key"
    ),
)

NAME = "profesor"
HELP = "the Profesor: HTTP API (GET /, /respuesta, GET|POST /preguntas), count in SQLite"


def options() -> list[Option]:
    return [
        *listen_options(PROFESOR_PORT),
        dataclasses.replace(
            codec_option(), help="bodies it may answer in besides json; pickle lets peers run code"
        ),
        log_level_option(),
        config_option(),
        Option(
            "db",
            None,
            "SQLite file for the count (default: the user data dir)",
            rules.DATABASE,
            "PATH",
        ),
        Option("threads", 8, "waitress worker threads", rules.integer(1, 1024), "N"),
        Option("key", None, "", NOT_SIGNED, toml=False, secret=True, hidden=True),
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
