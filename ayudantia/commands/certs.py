"""``ayudantia certs DIR``: a classroom CA and a TLS certificate for every role.

``--host`` adds the LAN names and addresses clients dial to the roles' certificates,
``--student NAME`` issues one student laptop's client certificate from the same CA, and
``--show`` prints what a directory (or one PEM file) holds, fingerprints included.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import Any

from ayudantia import rules
from ayudantia.config import ConfigError, Option

NAME = "certs"
HELP = (
    "make a classroom CA and a certificate per role (localhost, 127.0.0.1 and each --host) "
    "for --tls-*; --student NAME adds a student's client certificate, --show lists them"
)


def options() -> list[Option]:
    return [
        Option("days", 30, "days the certificates are valid", rules.integer(1, 3650), "N"),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="directory to write them to (created)")
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME_OR_IP",
        help="a LAN name or address the roles serve on, added to their certificates "
        "(repeatable; localhost, 127.0.0.1 and ::1 stay)",
    )
    parser.add_argument(
        "--student",
        metavar="NAME",
        default=None,
        help="issue student-NAME.pem, a client certificate for one student's laptop, from "
        "DIR's CA (never over an existing one)",
    )
    parser.add_argument(
        "--show",
        action="store_true",
        help="print each certificate's names, expiry and SHA-256 fingerprint (DIR may be "
        "one PEM file, e.g. the ca.pem you were handed)",
    )


def check(settings: dict[str, Any], args: argparse.Namespace) -> None:
    from ayudantia.certs import CertsError, host_name, student_name

    if args.student is not None and args.host:
        raise ConfigError(
            "--host names the roles' server certificates; a --student certificate is a "
            "client's and names no host (give them in two commands)"
        )
    try:
        args.host = [host_name(h) for h in args.host]
        if args.student is not None:
            args.student = student_name(args.student)
    except CertsError as exc:
        raise ConfigError(str(exc)) from None
    if args.show and not args.host and args.student is None:
        return  # only reading: DIR may be a file, and must exist
    try:
        args.dir = rules.OUTPUT_DIR(args.dir)
    except rules.Invalid as exc:
        raise ConfigError(f"DIR {args.dir}: {exc}") from None


def _make(settings: dict[str, Any], args: argparse.Namespace) -> None:
    from ayudantia.certs import make_class, make_student

    directory = Path(args.dir)
    if args.student is not None:
        files = make_student(directory, args.student, days=settings["days"])
        print(f"{args.student:<11} {' '.join(files.flags())}")
        return
    made = make_class(directory, days=settings["days"], hosts=tuple(args.host))
    for role, files in made.items():
        print(f"{role:<11} {' '.join(files.flags())}")
    print(f"CA {directory / 'ca.pem'} (its key, ca-key.pem, mints certificates: keep it)")


def _show(where: Path) -> None:
    from ayudantia.certs import describe

    now = datetime.datetime.now(datetime.UTC)
    for info in describe(where):
        kind = "CA" if info.is_ca else "certificate"
        left = (info.expires - now).days
        state = f"in {left} days" if info.expires > now else "EXPIRED"
        print(f"{info.file}  ({kind}: {info.subject})")
        print(f"  names    {', '.join(info.names) or '-'}")
        print(f"  expires  {info.expires:%Y-%m-%d %H:%M} UTC ({state})")
        print(f"  SHA-256  {info.sha256}")


def main(settings: dict[str, Any], args: argparse.Namespace) -> int:
    from ayudantia.certs import CertsError

    try:
        if args.host or args.student is not None or not args.show:
            _make(settings, args)
        if args.show:
            _show(Path(args.dir).expanduser())
    except (FileExistsError, CertsError) as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"cannot write the certificates in {args.dir}: {exc.strerror}") from None
    return 0
