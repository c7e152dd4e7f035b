"""Where the book comes from: ``--file``, else ``AYUDANTIA_QUIJOTE``, else a one-time download.

The project never ships the 2.1 MB text. On a machine without it, Project Gutenberg's
EBook #2000 is downloaded once into the user cache, with a progress bar on stderr, and
written atomically so an interrupted download never leaves half a book behind.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import platformdirs

ENV_VAR = "AYUDANTIA_QUIJOTE"
GUTENBERG_URL = "https://www.gutenberg.org/cache/epub/2000/pg2000.txt"
CACHE_NAME = "quijote-pg2000.txt"

NOTEBOOK_MESSAGE = {
    "titulo": "Don Quijote de la mancha",
    "año": 1605,
    "Texto": "En un lugar de la Mancha, de cuyo nombre no quiero acordarme...",
}


class BookUnavailable(RuntimeError):
    """The book is not on disk and could not be downloaded."""


def cache_path() -> Path:
    return Path(platformdirs.user_cache_dir("ayudantia")) / CACHE_NAME


def book_path(path: str | os.PathLike[str] | None = None, *, url: str = GUTENBERG_URL) -> Path:
    """The book's path: the argument, else $AYUDANTIA_QUIJOTE, else the cached download."""
    chosen = path or os.environ.get(ENV_VAR)
    if chosen:
        found = Path(chosen).expanduser()
        if not found.is_file():
            source = "--file" if path else ENV_VAR
            raise BookUnavailable(f"{source} points at {found}, which is not a file")
        return found
    cached = cache_path()
    if not cached.is_file():
        download(url, cached)
    return cached


def download(url: str, dest: Path, *, timeout: float = 30.0) -> Path:
    """Fetch ``url`` to ``dest`` atomically, showing progress on stderr."""
    import requests  # only here: every command imports this module, few download

    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"Downloading Don Quijote (Project Gutenberg #2000) to {dest}", file=sys.stderr)
    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            total = int(response.headers.get("Content-Length") or 0) or None
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
            try:
                with os.fdopen(fd, "wb") as out, download_bar() as bar:
                    task = bar.add_task("download", total=total)
                    for block in response.iter_content(64 * 1024):
                        out.write(block)
                        bar.advance(task, len(block))
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except requests.RequestException as exc:
        raise BookUnavailable(
            f"could not download the book from {url} ({type(exc).__name__}: {exc}). "
            f"Offline? Point --file or {ENV_VAR} at a copy of Project Gutenberg's #2000."
        ) from exc
    return dest


def download_bar() -> Any:
    """A rich progress bar on stderr (drawn in place on a terminal, once at the end if not)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        console=Console(stderr=True),
    )


def load_text(path: str | os.PathLike[str] | None = None) -> str:
    """The whole book as one str (UTF-8; a BOM, if any, is dropped)."""
    return book_path(path).read_text(encoding="utf-8-sig")


def book_message(text: str) -> dict[str, object]:
    """The notebook's message with the whole book as "Texto"."""
    return {**NOTEBOOK_MESSAGE, "Texto": text}


def sha256_file(path: Path, block: int = 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()
