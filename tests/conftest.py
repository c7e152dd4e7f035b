"""Shared fixtures: the notebook's message and, when available, the whole book."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK_MESSAGE = {
    "titulo": "Don Quijote de la mancha",
    "año": 1605,
    "Texto": "En un lugar de la Mancha, de cuyo nombre no quiero acordarme...",
}


@pytest.fixture
def notebook_message() -> dict:
    """The message the class notebook sends (a fresh copy per test)."""
    return dict(NOTEBOOK_MESSAGE)


@pytest.fixture(scope="session")
def quijote_text() -> str:
    """The whole Quijote, from the file named by AYUDANTIA_QUIJOTE."""
    path = os.environ.get("AYUDANTIA_QUIJOTE")
    if not path:
        pytest.skip("AYUDANTIA_QUIJOTE is not set: no path to the full Quijote text")
    return Path(path).read_text(encoding="utf-8")


# --- the class's roles (tests/test_roles_*.py, test_profesor.py, test_run.py) ----------------


@pytest.fixture
def procs(tmp_path: Path):
    """Starts ``ayudantia`` role processes; every one is stopped (then killed) at teardown."""
    from roles_helpers import Procs

    manager = Procs(tmp_path)
    try:
        yield manager
    finally:
        manager.close()


# --- hosts as network namespaces (tests/netns.py): make_lan("a", "b", ...) -----------------

from netns import make_lan  # noqa: E402, F401  (a fixture, shared with every test module)


@pytest.fixture(autouse=True, scope="session")
def _private_data_dir(tmp_path_factory: pytest.TempPathFactory):
    """The roles' default files (the Docencio's outbox, the Profesor's gradebook) go to a
    directory of this session, never the user's: tests leave nothing behind."""
    saved = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    yield
    if saved is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = saved
