"""``ayudantia docencio``: the students' server, and the Tareo's client."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ayudantia import rules
from ayudantia.commands._roles import (
    add_find_argument,
    check_find,
    locate,
    serve_reporting,
    server_settings,
    stats_option,
    timeout_option,
    upstream_option,
)
from ayudantia.config import (
    Option,
    announce_options,
    find_timeout_option,
    server_options,
    wire_options,
)
from roles.clase import DOCENCIO_PORT, PROFESOR_PORT, TAREO_PORT

NAME = "docencio"
HELP = "the Docencio: answers 'Contenido', forwards the rest to the Tareo, routes answers by id"


def options() -> list[Option]:
    return [
        *wire_options(port=DOCENCIO_PORT),
        upstream_option("tareo", f"127.0.0.1:{TAREO_PORT}", "the Tareo's"),
        upstream_option("profesor", f"http://127.0.0.1:{PROFESOR_PORT}", "the Profesor's"),
        timeout_option(10.0, "the Tareo's answer to each question"),
        *server_options("students served at once"),
        stats_option(),
        *announce_options(),
        find_timeout_option(),
        Option(
            "outbox",
            None,
            "SQLite file of count keys the Profesor has not acknowledged yet (default: the "
            "user data dir, docencio-PORT.outbox.sqlite3, PORT the one it listens on)",
            rules.DATABASE,
            "PATH",
        ),
        Option(
            "outbox_sync",
            "normal",
            "normal: each group commit survives any crash of this process (SIGKILL, OOM) but "
            "not a power cut, and costs no fsync; full: fsync each group commit (survives a "
            "power cut, one fsync per group)",
            rules.choice(("full", "normal"), case=str.lower),
            "MODE",
        ),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_find_argument(parser, "the Tareo")


def check(settings: dict[str, Any], args: argparse.Namespace) -> None:
    check_find(args, "tareo")


def main(settings: dict[str, Any], args: argparse.Namespace) -> int:
    from roles.docencio import Docencio

    if args.find is not None:
        # The Tareo's class is ours unless --class says otherwise: one class, one name.
        tareo = locate("tareo", args.find, settings)
        settings["tareo"] = tareo.endpoint()
        settings["class"] = settings["class"] or tareo.class_name
        logging.getLogger("ayudantia.docencio").info(
            "found the tareo of class %r at %s:%s", tareo.class_name, *settings["tareo"]
        )
    server = Docencio(
        settings["host"],
        settings["port"],
        **server_settings(settings),
        tareo=settings["tareo"],
        profesor=settings["profesor"],
        timeout=settings["timeout"],
        outbox=settings["outbox"],
        outbox_sync=settings["outbox_sync"],
    )
    server.start()
    if not server.wait_upstream(2.0):
        server.log.warning("el Tareo (%s) aún no responde; sigo intentando", server.upstream.where)
    from roles.estado import docencio_report

    return serve_reporting(NAME, server, settings, docencio_report)
