"""``ayudantia estudiante``: asks the Docencio questions and checks every answer is its own."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from typing import Any

from ayudantia import rules
from ayudantia.commands._roles import (
    add_find_argument,
    check_find,
    locate,
    upstream_option,
    wire_settings,
    write_stats,
)
from ayudantia.config import Option, find_timeout_option, seconds_option, wire_options
from roles.clase import DOCENCIO_PORT
from roles.signals import handle_signals

INTERRUPTED = 130  # the shell's status for SIGINT: the run was not completed
NAME = "estudiante"
HELP = "a student: asks N questions, prints the notebook's traces, exits 0 if all were answered"


def options() -> list[Option]:
    return [
        *wire_options(needs_maps=True),
        upstream_option("docencio", f"127.0.0.1:{DOCENCIO_PORT}", "the Docencio's"),
        Option(
            "questions",
            10,
            "questions to ask (0 = until stopped)",
            rules.integer(0, 1_000_000),
            "N",
        ),
        Option(
            "interval",
            1.0,
            "pace: waits interval*(1..6) s between questions (1 = the notebook's 1-6 s; 0 = none)",
            rules.pace(),
            "S",
        ),
        Option("seed", None, "random seed for the kinds and waits", rules.SEED, "N"),
        Option("name", None, "the student's name (default Estudiante-<pid>)", rules.NAME, "NAME"),
        seconds_option("timeout", 30.0, "to wait for answers after the last question"),
        Option("report", None, "write a JSON report to FILE at the end", rules.OUTPUT_FILE, "FILE"),
        find_timeout_option(),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no per-question traces")
    parser.add_argument(
        "--json-summary", action="store_true", help="print the report as one JSON line at the end"
    )
    add_find_argument(parser, "the Docencio")
    # Internal, for ayudantia run: the read end of its start barrier (see roles.estudiante).
    parser.add_argument("--start-fd", type=int, default=None, help=argparse.SUPPRESS)


def check(settings: dict[str, Any], args: argparse.Namespace) -> None:
    check_find(args, "docencio")


def main(settings: dict[str, Any], args: argparse.Namespace) -> int:
    from roles.estudiante import Estudiante

    host, port = settings["docencio"]
    if args.find is not None:
        docencio = locate("docencio", args.find, settings)
        host, port = docencio.endpoint()
        logging.getLogger("ayudantia.estudiante").info(
            "found the docencio of class %r at %s:%s", docencio.class_name, host, port
        )
    alumno = Estudiante(
        host,
        port,
        wire=wire_settings(settings),
        name=settings["name"],
        questions=settings["questions"],
        interval=settings["interval"],
        seed=settings["seed"],
        timeout=settings["timeout"],
        quiet=args.quiet,
        start_fd=args.start_fd,
    )
    with handle_signals() as stop:
        interrupted = threading.Event()
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["informe"] = alumno.run(stop)
            except BaseException as exc:
                result["error"] = exc

        worker = threading.Thread(target=work, name="estudiante", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.1)
            # the student sets the same event when it gives up: that is no interruption
            if stop.is_set() and not interrupted.is_set() and alumno.gave_up is None:
                interrupted.set()
                alumno.close()
    if "error" in result:
        raise result["error"]
    informe = result["informe"]
    data = informe.as_dict()
    write_stats(settings["report"], data)
    if args.json_summary:
        print(json.dumps(data), flush=True)
    print(
        f"{informe.name}: {informe.answered}/{alumno.questions or informe.questions} respondidas, "
        f"{informe.errors} errores, {informe.misrouted} ajenas, {informe.duplicates} repetidas",
        flush=True,
    )
    if interrupted.is_set():
        return INTERRUPTED
    if alumno.gave_up:
        print(f"ayudantia {NAME}: gave up: {alumno.gave_up}", file=sys.stderr, flush=True)
        return 1
    return 0 if informe.ok and informe.questions == alumno.questions else 1
