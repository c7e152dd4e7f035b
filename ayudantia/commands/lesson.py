"""``ayudantia lesson [NAME|all]``: the notebook's defects, each measured beside its fix.

With no name it lists the lessons; ``all`` runs every one and ends with a table. The text
is in the reader's language (``--lang``, else the locale); see :mod:`ayudantia.lessons`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from types import ModuleType
from typing import Any

from ayudantia import i18n, rules
from ayudantia.config import Option, key_option, log_level_option
from ayudantia.lessons import NAMES, load
from ayudantia.lessons._runner import (
    Context,
    Outcome,
    heading,
    results,
    run_lesson,
    summary_table,
)

NAME = "lesson"
HELP = (
    "the notebook's defects as lessons on loopback, each measured beside its fix "
    "(no name: list them; all: run every one)"
)
INTERRUPTED = 130


def options() -> list[Option]:
    return [
        Option(
            "lang",
            None,
            "language of the lesson text (default: from LC_ALL, LC_MESSAGES or LANG: "
            "Spanish when it starts with es, else English)",
            rules.choice(i18n.languages(), case=str.lower),
            "{" + ",".join(i18n.languages()) + "}",
        ),
        dataclasses.replace(
            key_option(),
            help="shared HMAC key for the pickle lesson's signed-frames step "
            "(default: random; never printed)",
        ),
        log_level_option("WARNING"),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name",
        nargs="?",
        choices=[*NAMES, "all"],
        metavar="NAME",
        help=f"the lesson: {', '.join(NAMES)}, or all (none: list them)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller scenarios: each lesson in at most 3 s"
    )


def _say(line: str = "") -> None:
    print(line, flush=True)


def teach(lesson: ModuleType, ctx: Context, lang: str) -> Outcome:
    """Print the heading, run the lesson, print what it measured."""
    for line in heading(lesson, ctx._):
        _say(line)
    outcome = run_lesson(lesson, ctx)
    for line in results(lesson, outcome, ctx._, lang):
        _say(line)
    _say()
    return outcome


def main(settings: dict[str, Any], args: argparse.Namespace) -> int:
    lang = settings.get("lang") or i18n.default_lang()
    _ = i18n.translator(lang)
    try:
        return _list(lang) if args.name is None else _teach_all(settings, args, lang)
    except KeyboardInterrupt:  # also while the lessons load or the table prints
        print(_("interrupted: everything the lesson opened is closed"), file=sys.stderr)
        return INTERRUPTED


def _list(lang: str) -> int:
    """One line per lesson: its name, the notebook's pattern, the notebook section."""
    _ = i18n.translator(lang)
    width = max(len(name) for name in NAMES)
    for lesson in map(load, NAMES):
        _say(f"{lesson.NAME.ljust(width)}  {_(lesson.PATTERN)}  ({lesson.SECTION})")
    return 0


def _teach_all(settings: dict[str, Any], args: argparse.Namespace, lang: str) -> int:
    """Run the chosen lesson (or all, then the closing table); 1 if one did not behave."""
    _ = i18n.translator(lang)
    chosen = [load(name) for name in (NAMES if args.name == "all" else (args.name,))]
    key = settings["key"].encode("utf-8") if settings.get("key") else None
    done: list[tuple[ModuleType, Outcome]] = []
    for lesson in chosen:
        ctx = Context(quick=args.quick, _=_, say=_say, options={"key": key})
        done.append((lesson, teach(lesson, ctx, lang)))
    if args.name == "all":
        for line in summary_table(done, lang):
            _say(line)
    return 0 if all(outcome.ok for _lesson, outcome in done) else 1
