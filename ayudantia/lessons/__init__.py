"""The notebook's defects as runnable lessons: ``ayudantia lesson NAME``.

One module per lesson, in the order a student meets them; the interface a lesson module
implements and the runner that measures and renders it are in :mod:`ayudantia.lessons._runner`.
To add a lesson, write its module and add its name to :data:`NAMES`.

The modules are imported when first asked for (``LESSONS``, ``BY_NAME``, :func:`load`):
they bring servers, Flask and requests with them, and every other ``ayudantia`` command
starts without paying for that.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

NAMES: tuple[str, ...] = (
    "recv",
    "header",
    "chunks",
    "mixup",
    "spin",
    "threads",
    "silence",
    "outage",
    "count",
    "nagle",
    "copies",
    "pickle",
    "compression",
)


def load(name: str) -> ModuleType:
    """The lesson module called ``name`` (one of :data:`NAMES`)."""
    if name not in NAMES:
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}")


def __getattr__(attr: str) -> Any:
    """``LESSONS`` (every lesson module, in display order) and ``BY_NAME``, on first use."""
    if attr == "LESSONS":
        return tuple(load(name) for name in NAMES)
    if attr == "BY_NAME":
        return {name: load(name) for name in NAMES}
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
