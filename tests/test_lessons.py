"""Every lesson in quick mode: the defect is measured, the fix is measured, in both languages.

Each lesson runs once; the same measurements are rendered in Spanish and in English. The
checks read the numbers, not the exit code: a lesson that printed "as taught" over a
defect it never measured would fail here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from babel.messages.extract import extract_from_dir

from ayudantia import i18n
from ayudantia.lessons import BY_NAME, LESSONS
from ayudantia.lessons import _loopback as lo
from ayudantia.lessons._runner import TMP_PREFIX, Context, Outcome, render, run_lesson

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def _warm_event_loop():
    """The first event loop of a process opens a pipe it keeps (once): not a lesson's leak."""
    from roles.tareo import Tareo

    server = Tareo(profesor="http://127.0.0.1:9")
    server.start()
    server.stop()


def _open_fds() -> set[str]:
    """This process's open sockets and files (pipes are the runtime's, opened once)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(("socket:", "/")):
            found.add(f"{fd}:{target}")
    return found


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
    # ~1 CPU s/s when it gets a core; on a loaded machine, runnable all the time instead
    runnable = _value(o, "runnable", "defect")
    assert _value(o, "cpu", "defect") > 0.25 or (runnable is not None and runnable > 80)
    assert _value(o, "empty", "defect") > 1000
    assert _value(o, "cpu", "fix") < 0.05
    assert _value(o, "empty", "fix") == 0
    assert _value(o, "seen", "fix") == "ConnectionClosed"
    assert _value(o, "clients", "fix") == 0


def check_pickle(o: Outcome) -> None:
    assert _value(o, "code_ran", "defect") == 2
    assert _value(o, "code_ran", "fix") == 0
    assert _text(o, "signed", "fix") == "3 of 3"
    assert _text(o, "eval", "fix") == "ForbiddenGlobal: nothing ran"


def check_mixup(o: Outcome) -> None:
    assert _value(o, "misrouted", "defect") > 0  # answers delivered to another student
    assert _value(o, "misrouted", "fix") == 0
    assert _value(o, "none", "fix") == 0
    assert _value(o, "right", "fix") == _value(o, "asked", "fix")


def check_threads(o: Outcome) -> None:
    students, questions = (int(x) for x in _value(o, "load", "defect").split(" x "))
    assert _value(o, "threads", "defect") >= students + questions
    assert _value(o, "threads", "fix") <= 2
    assert _value(o, "answered", "fix") == students * questions


def check_silence(o: Outcome) -> None:
    assert _text(o, "answers", "defect") == "0 of 2"
    assert _text(o, "waited", "defect").endswith("and gave up")
    assert _text(o, "answers", "fix") == "2 of 2"
    assert _value(o, "ids", "fix") == "7, 8"


def check_outage(o: Outcome) -> None:
    assert _text(o, "down", "defect").startswith("none")
    assert _text(o, "handler", "defect") == "dead: ConnectionError"
    assert _text(o, "back", "defect").startswith("none")
    assert _text(o, "down", "fix").startswith("an error answer for id 1")
    assert _text(o, "back", "fix") == "an answer from the Profesor"


def check_count(o: Outcome) -> None:
    answers = _value(o, "answers", "defect")
    assert _value(o, "before", "defect") == answers + 1  # the retried POST, counted twice
    assert _value(o, "after_restart", "defect") == 0  # the restart lost the count
    assert _value(o, "before", "fix") == answers
    assert _value(o, "after_restart", "fix") == answers


def check_nagle(o: Outcome) -> None:
    # the delayed-ACK timer (~40 ms): load only adds to it, so this cannot pass by luck
    assert _value(o, "round_trip", "defect") > 0.010
    assert _value(o, "rounds", "defect") >= 5
    # the fix, from the kernel and the socket, not from a stopwatch
    assert (_value(o, "writes", "defect"), _value(o, "writes", "fix")) == (2, 1)
    assert (_value(o, "nodelay", "defect"), _value(o, "nodelay", "fix")) == (False, True)


def check_copies(o: Outcome) -> None:
    size = _value(o, "size", "defect")
    assert _value(o, "size", "fix") == size
    assert _value(o, "copied", "defect") > 20 * size  # the square law of bytes +=
    assert _value(o, "rate", "fix") > _value(o, "rate", "defect")


def check_compression(o: Outcome) -> None:
    assert _value(o, "wire", "fix") < 0.6 * _value(o, "wire", "defect")  # zstd on prose
    assert _value(o, "loopback", "fix") > _value(o, "loopback", "defect")  # only costs here
    assert _value(o, "link", "fix") < _value(o, "link", "defect")  # pays at 100 Mbit/s


CHECKS: dict[str, Callable[[Outcome], None]] = {
    "mixup": check_mixup,
    "threads": check_threads,
    "silence": check_silence,
    "outage": check_outage,
    "count": check_count,
    "nagle": check_nagle,
    "copies": check_copies,
    "recv": check_recv,
    "header": check_header,
    "chunks": check_chunks,
    "spin": check_spin,
    "pickle": check_pickle,
    "compression": check_compression,
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


@pytest.mark.timeout(30)
def test_cleanup_wakes_the_lessons_threads_before_joining_them():
    """Ctrl+C does not wait for a thread's deadline: closing its socket wakes it first.

    Both threads below would wait forever (no timeout); the cleanup must end them, quietly.
    """
    started = threading.Barrier(3, timeout=10)

    def run(ctx: Context) -> Outcome:
        server = lo.listener(ctx)
        lo.connect(ctx, server.getsockname(), timeout=None)
        peer = lo.accept(ctx, server)
        peer.settimeout(None)
        server.settimeout(None)
        for name, wait in (("reader", lambda: peer.recv(1)), ("acceptor", server.accept)):
            ctx.thread(lambda wait=wait: (started.wait(), wait()), name=name)
        started.wait()
        time.sleep(0.1)  # both are now blocked in the kernel
        raise KeyboardInterrupt

    ctx = Context(quick=True)
    with pytest.raises(KeyboardInterrupt):
        run_lesson(SimpleNamespace(run=run), ctx)
    assert len(ctx._threads) == 2
    assert not [t.name for t in ctx._threads if t.is_alive()]


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


# -- the command ----------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    base = {k: v for k, v in os.environ.items() if k not in ("LC_ALL", "LC_MESSAGES", "LANG")}
    return subprocess.run(
        [sys.executable, "-m", "ayudantia", "lesson", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**base, **(env or {})},
    )


@pytest.mark.timeout(60)
def test_the_list_follows_the_locale():
    es = _cli(env={"LANG": "es_CL.UTF-8"})
    en = _cli(env={"LANG": "C.UTF-8"})
    assert es.returncode == en.returncode == 0
    assert [line.split()[0] for line in es.stdout.splitlines()] == list(BY_NAME)
    assert len(en.stdout.splitlines()) == len(LESSONS)
    assert "un solo recv(4096) tomado como la respuesta completa" in es.stdout
    assert "one recv(4096) taken as the whole reply" in en.stdout
    forced = _cli("--lang", "en", env={"LANG": "es_CL.UTF-8"})
    assert forced.stdout == en.stdout


@pytest.mark.timeout(120)
def test_all_runs_every_lesson_and_ends_with_a_table():
    before = set(Path(tempfile.gettempdir()).glob(TMP_PREFIX + "*"))
    proc = _cli("all", "--quick", "--lang", "es", timeout=110)
    table = proc.stdout.splitlines()[-len(LESSONS) - 1 :]
    assert proc.returncode == 0, "\n".join(table) + proc.stderr[-3000:]
    assert table[0].split()[:2] == ["lección", "defecto"]
    for line, lesson in zip(table[1:], LESSONS, strict=True):
        assert line.startswith(lesson.NAME) and line.endswith("como se enseña")
    assert proc.stdout.count("resultado: como se enseña") == len(LESSONS)
    assert (
        set(Path(tempfile.gettempdir()).glob(TMP_PREFIX + "*")) <= before
    )  # no temporary directory


@pytest.mark.timeout(60)
def test_ctrl_c_cleans_up_and_exits_130():
    before = set(Path(tempfile.gettempdir()).glob(TMP_PREFIX + "*"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ayudantia", "lesson", "spin", "--lang", "en"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # the heading: the lesson has started
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["interrupted: everything the lesson opened is closed"]
    assert set(Path(tempfile.gettempdir()).glob(TMP_PREFIX + "*")) <= before
