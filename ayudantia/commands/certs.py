"""``ayudantia certs DIR``: a classroom CA and a TLS certificate for every role."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ayudantia import rules
from ayudantia.config import ConfigError, Option

NAME = "certs"
HELP = "make a classroom CA and a certificate per role (localhost, 127.0.0.1) for --tls-*"


def options() -> list[Option]:
    return [
        Option("days", 30, "days the certificates are valid", rules.integer(1, 3650), "N"),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="directory to write them to (created)")


def check(settings: dict[str, Any], args: argparse.Namespace) -> None:
    try:
        args.dir = rules.OUTPUT_DIR(args.dir)
    except rules.Invalid as exc:
        raise ConfigError(f"DIR {args.dir}: {exc}") from None


def main(settings: dict[str, Any], args: argparse.Namespace) -> int:
    from ayudantia.certs import make_class

    try:
        made = make_class(Path(args.dir), days=settings["days"])
    except FileExistsError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"cannot write the certificates in {args.dir}: {exc.strerror}") from None
    for role, files in made.items():
        print(f"{role:<11} {' '.join(files.flags())}")
    print(f"CA {Path(args.dir) / 'ca.pem'} (its key, ca-key.pem, mints certificates: keep it)")
    return 0
