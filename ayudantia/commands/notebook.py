"""``ayudantia notebook DIR``: the course notebook redone on ayudantia, copied for a student.

Both languages (``ayudantia-09.ipynb`` in Spanish, ``ayudantia-09.en.ipynb`` in English)
ship inside the package (the wheel puts ``notebooks/`` at ``ayudantia/notebooks/``); from a
clone they are read from the repository's ``notebooks/``, where ``notebooks/_build.py``
writes them. An existing copy is never overwritten without ``--force``: it may hold the
student's own work.
"""

from __future__ import annotations

import argparse
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from ayudantia.config import ConfigError, Option

NAME = "notebook"
HELP = "copy the course notebook redone on ayudantia (Spanish and English) into DIR"
FILES = ("ayudantia-09.ipynb", "ayudantia-09.en.ipynb")


def options() -> list[Option]:
    return []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="where to put the notebooks (made if missing)")
    parser.add_argument("--force", action="store_true", help="overwrite notebooks already in DIR")


def source_dir() -> Path:
    """Where the notebooks are: in the installed package, else in the repository checkout."""
    packaged = Path(str(resources.files("ayudantia") / "notebooks"))
    if all((packaged / name).is_file() for name in FILES):
        return packaged
    return Path(__file__).resolve().parents[2] / "notebooks"


def copy(target: Path, *, force: bool = False) -> list[Path]:
    """Copy both notebooks into ``target``; ConfigError if one is there and not ``force``."""
    source = source_dir()
    missing = [name for name in FILES if not (source / name).is_file()]
    if missing:
        raise ConfigError(f"the notebooks are not in this installation ({source})")
    existing = [target / name for name in FILES if (target / name).exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} already exists; --force overwrites it")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} is not a directory")
    try:
        target.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.copyfile(source / name, target / name)) for name in FILES]
    except OSError as exc:
        raise ConfigError(f"cannot write into {target}: {exc.strerror or exc}") from None


def main(settings: dict[str, Any], args: argparse.Namespace) -> int:
    target = Path(args.dir).expanduser()
    for path in copy(target, force=args.force):
        print(f"copied {path}")
    print("open them with:")
    print(f"  uv run --with jupyterlab jupyter lab {target}")
    print("(run it inside your ayudantia checkout, so the kernel can import ayudantia; or open")
    print(" them with any Jupyter whose Python has ayudantia installed)")
    return 0
