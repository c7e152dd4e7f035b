"""The notebook's defects as runnable lessons: ``ayudantia lesson NAME``.

One module per lesson, in the order a student meets them; the interface a lesson module
implements and the runner that measures and renders it are in :mod:`ayudantia.lessons._runner`.
To add a lesson, write its module and add it to :data:`LESSONS`.
"""

from __future__ import annotations

from types import ModuleType

from ayudantia.lessons import (
    chunks,
    copies,
    count,
    header,
    mixup,
    nagle,
    outage,
    pickle,
    recv,
    silence,
    spin,
    threads,
)

LESSONS: tuple[ModuleType, ...] = (
    recv,
    header,
    chunks,
    mixup,
    spin,
    threads,
    silence,
    outage,
    count,
    nagle,
    copies,
    pickle,
)
BY_NAME: dict[str, ModuleType] = {lesson.NAME: lesson for lesson in LESSONS}
