"""``ayudantia wireshark``: where the Wireshark dissector is, and installing it for the user.

The dissector (``ayudantia/wireshark/ayudantia.lua``) ships inside the package, so the
version that reads a capture is the one that wrote it. Wireshark loads Lua plug-ins from a
personal folder without root: ``~/.local/lib/wireshark/plugins`` on Linux and macOS,
``%APPDATA%\\Wireshark\\plugins`` on Windows (Help > About Wireshark > Folders shows it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from ayudantia.config import ConfigError, Option

NAME = "wireshark"
HELP = "the Wireshark dissector for AY frames: --print-path shows it, --install copies it"


def options() -> list[Option]:
    return []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--print-path", action="store_true", help="print where the dissector (a .lua file) is"
    )
    what.add_argument(
        "--install",
        action="store_true",
        help="copy it into your Wireshark personal plugin folder and say where",
    )


def check(settings: dict[str, Any], args: argparse.Namespace) -> None:
    if not (args.print_path or args.install):
        raise ConfigError("say --print-path or --install")


def dissector_path() -> Path:
    """The dissector shipped in this package (a real file: the package is not zipped)."""
    return Path(str(resources.files("ayudantia") / "wireshark" / "ayudantia.lua"))


def plugin_dir() -> Path:
    """Wireshark's personal Lua plug-in folder for this user."""
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "Wireshark" / "plugins"
    return Path.home() / ".local" / "lib" / "wireshark" / "plugins"


def install(target_dir: Path | None = None) -> Path:
    """Copy the dissector into ``target_dir`` (default: :func:`plugin_dir`); the new path."""
    folder = target_dir or plugin_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / dissector_path().name
    shutil.copyfile(dissector_path(), target)
    return target


def main(settings: dict[str, Any], args: argparse.Namespace) -> int:
    if args.print_path:
        print(dissector_path())
        return 0
    try:
        target = install()
    except OSError as exc:
        raise ConfigError(f"cannot install into {plugin_dir()}: {exc.strerror or exc}") from None
    print(f"installed {target}")
    print("Wireshark loads it at its next start (Analyze > Reload Lua Plugins, if it is open);")
    print("tshark too. Filter on 'ay' to see the frames.")
    return 0
