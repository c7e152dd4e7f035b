"""The ``ayudantia`` command line: one subcommand per module in :mod:`ayudantia.commands`.

Exit statuses: 0 when everything asked was done, 1 when a run failed (a question went
unanswered, a peer refused us, a server was unreachable), 2 for a setting that cannot be
used (one line on stderr, before anything starts), 130 when interrupted. ``--find``: 1 when
no server answers, 2 when two match (their table on stdout) or the one found does not match
this client's settings (one line).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from ayudantia.commands import COMMANDS
from ayudantia.config import ConfigError, add_options, resolve, toml_keys
from ayudantia.quijote import BookUnavailable
from protocol.errors import AmbiguousServers, AyudantiaError, DiscoveryError, NoServerFound

CANNOT_LISTEN = {errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES}
USAGE_ERROR = 2
INTERRUPTED = 130
_NEGATIVE = re.compile(r"-\.?\d")  # "-5ms", "-.5s", "-1": a value with a sign, not a flag


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and the way to more help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="ayudantia",
        description="A pluggable-serialization protocol lab: the networking class of Ayudantía 09, "
        "made real. Settings come from flags, else AYUDANTIA_* environment variables, else a "
        "TOML file (--config or AYUDANTIA_CONFIG), else defaults.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.NAME, help=command.HELP, description=command.HELP)
        add_options(p, command.options())
        command.add_arguments(p)
        p.set_defaults(_command=command)
    return parser


def _valued_flags(parser: argparse.ArgumentParser) -> set[str]:
    """Every long flag, in any subcommand, that takes a value."""
    flags: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _valued_flags(sub)
        elif action.nargs != 0:
            flags.update(o for o in action.option_strings if o.startswith("--"))
    return flags


def glue_signed_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``--delay -5ms`` as ``--delay=-5ms``.

    argparse takes ``-5ms`` for an unknown flag and says "expected one argument", which
    hides the real problem; glued, the value reaches its rule and the user reads what is
    wrong with it (a negative duration), in the same one line as every other bad value.
    """
    flags = _valued_flags(parser)
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.extend(args[i:])
            break
        if arg in flags and i + 1 < len(args) and _NEGATIVE.match(args[i + 1]):
            out.append(f"{arg}={args[i + 1]}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def fail(command: str, message: str, status: int = USAGE_ERROR) -> int:
    print(f"ayudantia {command}: {message}", file=sys.stderr, flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = glue_signed_values(parser, sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    command = args._command
    if extra:
        return fail(
            command.NAME,
            f"{command.NAME} does not take {' '.join(extra)} (see ayudantia {command.NAME} --help)",
        )
    try:
        settings = resolve(args, command.options(), role=command.NAME, known=toml_keys(COMMANDS))
        if hasattr(command, "check"):
            command.check(settings, args)
    except ConfigError as exc:
        return fail(command.NAME, str(exc))
    logging.basicConfig(
        level=getattr(logging, settings.get("log_level") or "INFO"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(command.main(settings, args) or 0)
    except KeyboardInterrupt:
        return INTERRUPTED
    except (ConfigError, BookUnavailable) as exc:
        return fail(command.NAME, str(exc))
    except OSError as exc:
        if exc.filename is not None:  # a file or directory the command writes, not the socket
            return fail(command.NAME, f"cannot write {exc.filename}: {exc.strerror or exc}", 1)
        if exc.errno in CANNOT_LISTEN and "port" in settings:
            where = f"{settings['host']}:{settings['port']}"
            return fail(command.NAME, f"cannot listen on {where}: {os.strerror(exc.errno)}", 1)
        return fail(command.NAME, f"{type(exc).__name__}: {exc}", 1)
    except DiscoveryError as exc:
        return discovery_failed(command.NAME, exc)
    except AyudantiaError as exc:
        return fail(command.NAME, f"{type(exc).__name__}: {exc}", 1)


def discovery_failed(command: str, exc: DiscoveryError) -> int:
    """``--find`` did not give one usable server: none is a failed run (1); two candidates
    (listed, not guessed between) or a server this client cannot talk to is a setting to
    change (2)."""
    if isinstance(exc, AmbiguousServers):
        from ayudantia.discovery import local_networks, table

        print(table(exc.found, local_networks()), flush=True)  # type: ignore[arg-type]
    return fail(command, str(exc), 1 if isinstance(exc, NoServerFound) else USAGE_ERROR)


if __name__ == "__main__":
    raise SystemExit(main())
