"""The README's settings table is generated from the flags, and it is current."""

from __future__ import annotations

import re

from ayudantia.cli import build_parser
from ayudantia.commands import COMMANDS
from ayudantia.settings_table import README, all_flags, markdown, readme_table


def test_the_readme_table_is_current():
    """If this fails: `uv run python -m ayudantia.settings_table --write`."""
    assert readme_table(README.read_text(encoding="utf-8")) == markdown()


def test_the_table_lists_exactly_what_help_shows():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    table = {(f.command, f.flag) for f in all_flags()}
    for command in COMMANDS:
        shown = set(re.findall(r"^\s+(--[a-z-]+)", sub.choices[command.NAME].format_help(), re.M))
        shown.discard("--help")
        assert shown == {flag for name, flag in table if name == command.NAME}, command.NAME


def test_help_prints_defaults_as_the_user_writes_them():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = " ".join(sub.choices["docencio"].format_help().split())
    assert "default 127.0.0.1:4445" in text and "('127.0.0.1'" not in text
    assert "signed request" in " ".join(sub.choices["profesor"].format_help().split())
