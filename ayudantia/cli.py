"""The ``ayudantia`` command line: one subcommand per module in :mod:`ayudantia.commands`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ayudantia.commands import COMMANDS
from ayudantia.config import ConfigError, add_options, resolve
from ayudantia.quijote import BookUnavailable
from protocol.errors import AyudantiaError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ayudantia",
        description="A pluggable-serialization protocol lab: the networking class of Ayudantía 09, "
        "made real. Settings come from flags, else AYUDANTIA_* environment variables, else a "
        "TOML file (--config), else defaults.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.NAME, help=command.HELP, description=command.HELP)
        add_options(p, command.options())
        command.add_arguments(p)
        p.set_defaults(_command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args._command
    try:
        settings = resolve(args, command.options(), role=command.NAME)
    except ConfigError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=getattr(logging, settings.get("log_level", "INFO"), logging.INFO),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(command.main(settings, args) or 0)
    except KeyboardInterrupt:
        return 130
    except BookUnavailable as exc:
        print(f"ayudantia: {exc}", file=sys.stderr)
        return 2
    except (AyudantiaError, OSError) as exc:
        print(f"ayudantia {command.NAME}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
