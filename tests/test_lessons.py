"""Every lesson in quick mode: the defect is measured, the fix is measured, in both languages.

Each lesson runs once; the same measurements are rendered in Spanish and in English. The
checks read the numbers, not the exit code: a lesson that printed "as taught" over a
defect it never measured would fail here.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir

from ayudantia import i18n
from ayudantia.lessons import BY_NAME, LESSONS
from ayudantia.lessons._runner import Context, Outcome, render, run_lesson

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def _warm_event_loop():
    """The first event loop of a process opens a pipe it keeps (once): not a lesson's leak."""
    from roles.tareo import Tareo

    server = Tareo(profesor="http://127.0.0.1:9")
    server.start()
    server.stop()


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _lesson_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t is not threading.main_thread()}


def _settled(before: set[threading.Thread], seconds: float = 3.0) -> set[threading.Thread]:
    """Threads started during a lesson that are still alive after ``seconds``."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        stray = {t for t in _lesson_threads() - before if t.is_alive()}
        if not stray:
            return set()
        time.sleep(0.05)
    return stray


def _value(outcome: Outcome, key: str, side: str):
    return outcome.value(key, side)


def _text(outcome: Outcome, key: str, side: str) -> str:
    cell = getattr(outcome.row(key), side)
    return cell.render(lambda s: s, "en") if hasattr(cell, "render") else str(cell)


def check_recv(o: Outcome) -> None:
    assert _value(o, "first_read", "defect") <= 4096 < _value(o, "sent", "defect")
    assert "JSONDecodeError" in _text(o, "decoded", "defect")
    assert _value(o, "first_read", "fix") == _value(o, "sent", "fix")
    assert _text(o, "decoded", "fix") == "equal to what was sent"


def check_header(o: Outcome) -> None:
    assert _value(o, "length", "defect") > 1 << 20  # the bogus length
    assert _text(o, "intact", "defect").startswith("0 of")
    assert _value(o, "first_question", "defect") == "'Ta'"
    assert _text(o, "intact", "fix") == "3 of 3"
    runs = _text(o, "splits", "fix").split(" of ")
    assert runs[0] == runs[1] and int(runs[0]) > 50


def check_chunks(o: Outcome) -> None:
    size = _value(o, "size", "defect")
    assert _value(o, "sent", "defect") > 2 * size  # the same 4 KiB, resent
    assert _text(o, "finished", "defect").startswith("no")
    assert _text(o, "finished", "fix").startswith("yes")
    assert _value(o, "held", "fix") <= 4096
    assert size < _value(o, "sent", "fix") < size * 1.01


def check_spin(o: Outcome) -> None:
    assert _value(o, "cpu", "defect") > 0.25  # ~1 CPU s/s when it gets a core
    assert _value(o, "empty", "defect") > 1000
    assert _value(o, "cpu", "fix") < 0.05
    assert _value(o, "seen", "fix") == "ConnectionClosed"
    assert _value(o, "clients", "fix") == 0


def check_pickle(o: Outcome) -> None:
    assert _value(o, "code_ran", "defect") == 2
    assert _value(o, "code_ran", "fix") == 0
    assert _text(o, "signed", "fix") == "3 of 3"
    assert _text(o, "eval", "fix") == "ForbiddenGlobal: nothing ran"


CHECKS: dict[str, Callable[[Outcome], None]] = {
    "recv": check_recv,
    "header": check_header,
    "chunks": check_chunks,
    "spin": check_spin,
    "pickle": check_pickle,
}


def test_every_lesson_has_its_checks():
    assert set(CHECKS) == set(BY_NAME)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", list(BY_NAME))
def test_lesson_measures_defect_and_fix_in_both_languages(name):
    lesson = BY_NAME[name]
    fds, threads = _open_fds(), _lesson_threads()
    ctx = Context(quick=True)
    outcome = run_lesson(lesson, ctx)
    assert outcome.error is None, outcome.error
    CHECKS[name](outcome)
    assert outcome.ok
    # nothing left behind: no thread, no descriptor (socket, file), no temporary directory
    assert not _settled(threads)
    assert _open_fds() <= fds
    assert ctx._tmp is None or not ctx._tmp.exists()
    es, en = render(lesson, outcome, "es"), render(lesson, outcome, "en")
    assert "resultado: como se enseña" in es[-1]
    assert "result: as taught" in en[-1]
    assert es[0].startswith(f"Lección {name}:") and en[0].startswith(f"Lesson {name}:")
    for row in outcome.rows:  # every label reads in Spanish
        assert i18n.translator("es")(row.label) != row.label or row.label.isupper()


def test_every_sentence_is_in_the_catalogs():
    keywords = {"N_": None, "T": None, "_": None}
    used = {
        msg[2]
        for folder in ("ayudantia/lessons", "ayudantia/commands")
        for msg in extract_from_dir(ROOT / folder, keywords=keywords)
    }
    catalog = i18n.catalog_ids("es")
    assert used - set(catalog) == set()
    assert all(catalog[m] for m in used)


def test_lessons_are_listed_in_display_order():
    assert [lesson.NAME for lesson in LESSONS][:2] == ["recv", "header"]
    for lesson in LESSONS:
        for attr in ("SECTION", "PATTERN", "DEFECT", "FIX", "WHY", "FIX_AT", "HEADLINE"):
            assert getattr(lesson, attr), f"{lesson.NAME} lacks {attr}"
