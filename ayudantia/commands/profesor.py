"""``ayudantia profesor``: the Flask app of the notebook, served by waitress."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

from ayudantia import rules
from ayudantia.commands._roles import announce, lan_announcer
from ayudantia.config import (
    ConfigError,
    Option,
    announce_options,
    codec_option,
    config_option,
    key_option,
    listen_options,
    log_level_option,
    tls_options,
)
from roles.clase import PROFESOR_PORT
from roles.wire import tls_settings

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
        *tls_options(),
        dataclasses.replace(
            key_option(),
            help="shared HMAC-SHA256 key: every write must be a signed request, else 401 "
            "(prefer the environment variable: a flag shows in ps)",
        ),
        *announce_options(),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--private",
        action="store_true",
        help="keep reads closed: with --tls-ca no request without the client certificate "
        "(else a browser may read GET /panel and /estado without one); with a key reads "
        "must be signed too",
    )


def check(settings: dict[str, Any], args: argparse.Namespace) -> None:
    if args.private and not settings.get("key") and not settings.get("tls_ca"):
        raise ConfigError(
            "--private needs a key (--key or AYUDANTIA_KEY) or --tls-ca to check requests with"
        )


def main(settings: dict[str, Any], args: argparse.Namespace) -> int:
    from roles.profesor import create_app, default_db_path, serve

    db = settings["db"] or default_db_path()
    key = str(settings["key"]).encode("utf-8") if settings.get("key") else None
    app = create_app(db, settings["codec"], key=key, private=args.private)
    tls = tls_settings(settings)
    with contextlib.ExitStack() as stack:

        def ready(scheme: str) -> Callable[[str, int], None]:
            def said(host: str, port: int) -> None:
                announce(NAME, f"{scheme}://{host}:{port}", settings["codec"])
                lan = lan_announcer(NAME, host, port, settings, tls=tls is not None, key=bool(key))
                stack.enter_context(lan)  # withdrawn when serving ends

            return said

        if tls is not None:
            from roles.profesor_tls import serve_tls

            if not tls.serves:
                raise ConfigError("HTTPS needs --tls-cert and --tls-key (--tls-ca adds mutual TLS)")
            return serve_tls(
                app,
                settings["host"],
                settings["port"],
                tls=tls,
                threads=settings["threads"],
                ready=ready("https"),
                private=args.private,
            )
        return serve(
            app,
            settings["host"],
            settings["port"],
            threads=settings["threads"],
            ready=ready("http"),
        )
