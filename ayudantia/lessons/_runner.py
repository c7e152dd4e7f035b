"""What every lesson shares: measurements, the side-by-side result, rendering and cleanup.

A lesson measures; the runner renders. A lesson module declares:

* ``NAME``: the word after ``ayudantia lesson``;
* ``SECTION``: the notebook section(s) its pattern comes from, as the notebook titles them;
* ``PATTERN``: one English sentence (a catalog id) naming the notebook's pattern;
* ``DEFECT`` and ``FIX``: what each scenario does (catalog ids);
* ``WHY``: why the defect happens (catalog id);
* ``FIX_AT``: where the fix lives (file and function; code names, not translated);
* ``HEADLINE``: the key of the row that sums the lesson up in ``ayudantia lesson all``;
* ``run(ctx: Context) -> Outcome``: runs the notebook's pattern (the defect) and the same
  scenario over ayudantia (the fix), and returns what it measured.

``run`` prints nothing and never translates: it returns :class:`Row` values (numbers with
units, or :class:`Text`) and notes; :func:`render` turns an :class:`Outcome` into lines in
any language, so a test runs a lesson once and reads it in Spanish and in English. Every
sentence is a catalog id marked with :func:`T` (``msgid`` = the English text); numbers and
units are formatted here, for the reader's language.

Cleanup: anything a lesson opens goes on ``ctx.stack`` (sockets, servers, the temporary
directory), which the runner unwinds on success, failure and Ctrl+C alike; the threads a
lesson starts with :meth:`Context.thread` are joined after that, once closing their sockets
has woken them, so Ctrl+C does not wait for a thread's deadline.
Lessons are bounded: ``ctx.budget`` is 3 s in quick mode and 15 s otherwise, and every
wait in them is cut by a deadline taken from it.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from babel.numbers import format_decimal

from ayudantia import i18n
from protocol.errors import AyudantiaError

QUICK_BUDGET = 3.0
FULL_BUDGET = 15.0
JOIN_GRACE = 5.0  # all of a lesson's threads, together, once their sockets are closed
TMP_PREFIX = "ayudantia-lesson-"  # every lesson's temporary directory starts so
Translate = Callable[[str], str]


def N_(msgid: str) -> str:
    """Marks a catalog id that is translated later (a module constant, a label)."""
    return msgid


@dataclass(frozen=True)
class Text:
    """A sentence to translate later: a catalog id and the values of its ``{fields}``."""

    msgid: str
    params: dict[str, Any] = field(default_factory=dict)

    def render(self, _: Translate, lang: str) -> str:
        values = {k: show(v, _, lang) for k, v in self.params.items()}
        return _(self.msgid).format(**values)


def T(msgid: str, **params: Any) -> Text:
    """A sentence for the reader: ``T("{n} answers lost", n=Q(3))``."""
    return Text(msgid, params)


@dataclass(frozen=True)
class Q:
    """A measured quantity with its unit: ``Q(4096, "B")``, ``Q(0.042, "s")``."""

    value: float | int
    unit: str = ""


Cell = Q | Text | str | None


def _number(value: float, lang: str, digits: int = 2) -> str:
    pattern = "#,##0" + ("." + "#" * digits if digits else "")
    return format_decimal(value, format=pattern, locale=lang)


def _significant(value: float) -> int:
    """Decimals that keep about three significant digits."""
    size = abs(value)
    return 0 if size >= 100 else 1 if size >= 10 else 2 if size >= 1 or size == 0 else 3


def show_quantity(q: Q, lang: str) -> str:
    """A number in the reader's convention, scaled to a readable unit."""
    value, unit = q.value, q.unit
    if unit == "bytes":  # exact, for a length the student should compare digit by digit
        return f"{_number(value, lang, 0)} B"
    if unit == "B":
        for scale, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
            if abs(value) >= scale:
                return f"{_number(value / scale, lang, _significant(value / scale))} {name}"
        return f"{_number(value, lang, 0)} B"
    if unit == "s":
        for scale, name in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if abs(value) >= scale or name == "µs":
                scaled = value / scale
                return f"{_number(scaled, lang, _significant(scaled))} {name}"
    if unit == "B/s":
        return show_quantity(Q(value, "B"), lang) + "/s"
    if unit == "MiB":
        return f"{_number(value, lang, 1)} MiB"
    if isinstance(value, int) and not isinstance(value, bool):
        text = _number(value, lang, 0)
    else:
        text = _number(value, lang, _significant(value))
    return f"{text} {unit}".rstrip() if unit != "%" else f"{text} %"


def show(value: Any, _: Translate, lang: str) -> str:
    """Any cell or parameter as text for the reader."""
    if value is None:
        return "-"
    if isinstance(value, Q):
        return show_quantity(value, lang)
    if isinstance(value, Text):
        return value.render(_, lang)
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if isinstance(value, int | float):
        return show_quantity(Q(value), lang)
    return str(value)


@dataclass(frozen=True)
class Row:
    """One measurement, side by side: ``key`` for code and tests, ``label`` for the reader."""

    key: str
    label: str  # a catalog id
    defect: Cell
    fix: Cell


@dataclass
class Outcome:
    """What a lesson measured: rows, what happened, and whether it behaved as taught."""

    rows: list[Row]
    defect_showed: bool
    fix_held: bool
    notes: list[Text] = field(default_factory=list)
    error: str | None = None  # the lesson itself failed (a bug, not a verdict)

    @property
    def ok(self) -> bool:
        return self.defect_showed and self.fix_held and self.error is None

    def row(self, key: str) -> Row:
        for row in self.rows:
            if row.key == key:
                return row
        raise KeyError(key)

    def value(self, key: str, side: str) -> Any:
        """The raw number of a row's side (``side`` is "defect" or "fix"), for tests."""
        cell = getattr(self.row(key), side)
        return cell.value if isinstance(cell, Q) else cell


@dataclass
class Context:
    """What a lesson gets: the mode, its budget, the output, and a place for cleanup."""

    quick: bool = False
    _: Translate = field(default=lambda s: s)
    say: Callable[[str], None] = lambda line: None
    options: dict[str, Any] = field(default_factory=dict)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _tmp: Path | None = None
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def budget(self) -> float:
        return QUICK_BUDGET if self.quick else FULL_BUDGET

    def pick(self, quick: Any, full: Any) -> Any:
        """A size for this mode: ``ctx.pick(20, 100)`` students."""
        return quick if self.quick else full

    def deadline(self, seconds: float) -> float:
        """A monotonic instant ``seconds`` from now, never past the lesson's budget."""
        return time.monotonic() + min(seconds, self.budget)

    @property
    def tmp(self) -> Path:
        """A temporary directory for this lesson, removed when it ends."""
        if self._tmp is None:
            holder = self.stack.enter_context(tempfile.TemporaryDirectory(prefix=TMP_PREFIX))
            self._tmp = Path(holder)
        return self._tmp

    def thread(self, target: Callable[..., Any], *args: Any, name: str) -> threading.Thread:
        """Start a daemon thread that the cleanup joins after closing everything on the stack.

        A socket closed under a thread ends its wait with an OSError: that is how cleanup
        stops it, not a failure, so the thread ends quietly instead of printing a traceback.
        """
        worker = threading.Thread(
            target=_until_closed, args=(target, *args), name=f"lesson-{name}", daemon=True
        )
        worker.start()
        self._threads.append(worker)
        return worker

    def join_threads(self, grace: float = JOIN_GRACE) -> None:
        """Join the lesson's threads, ``grace`` seconds for all of them together."""
        until = time.monotonic() + grace
        for worker in self._threads:
            worker.join(max(0.0, until - time.monotonic()))


def _until_closed(target: Callable[..., Any], *args: Any) -> None:
    with contextlib.suppress(OSError, AyudantiaError):
        target(*args)


# -- running and rendering ------------------------------------------------------------------


def run_lesson(lesson: ModuleType, ctx: Context) -> Outcome:
    """Run one lesson; everything it opened is closed before this returns or raises.

    The stack first (sockets, servers, stop flags: what wakes the lesson's threads), then
    the threads are joined.
    """
    try:
        with ctx.stack:
            try:
                return lesson.run(ctx)
            except Exception as exc:  # a lesson that crashes did not behave as taught
                return Outcome([], False, False, error=f"{type(exc).__name__}: {exc}")
    finally:
        ctx.join_threads()


def heading(lesson: ModuleType, _: Translate) -> list[str]:
    """What the student reads before the lesson runs."""
    return [
        _("Lesson {name}: {pattern}").format(name=lesson.NAME, pattern=_(lesson.PATTERN)),
        "  " + _("notebook section: {section}").format(section=lesson.SECTION),
        "  " + _("defect (the notebook's pattern):") + " " + _(lesson.DEFECT),
        "  " + _("fix (ayudantia):") + " " + _(lesson.FIX),
    ]


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        (indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))).rstrip()
        for r in rows
    ]


def verdict(outcome: Outcome, _: Translate) -> str:
    if outcome.ok:
        return _("as taught")
    if outcome.error is not None:
        return _("the lesson failed")
    if not outcome.defect_showed:
        return _("NOT AS TAUGHT: the defect did not show")
    return _("NOT AS TAUGHT: the fix did not hold")


def results(lesson: ModuleType, outcome: Outcome, _: Translate, lang: str) -> list[str]:
    """What the student reads after the lesson ran: both sides, what happened, why."""
    lines: list[str] = []
    if outcome.rows:
        header = [_("measured"), _("defect"), _("fix")]
        body = [[_(r.label), show(r.defect, _, lang), show(r.fix, _, lang)] for r in outcome.rows]
        lines += _table([header, *body])
    for note in outcome.notes:
        lines.append("  " + _("happened:") + " " + note.render(_, lang))
    if outcome.error is not None:
        lines.append("  " + _("the lesson itself failed: {error}").format(error=outcome.error))
    lines.append("  " + _("why:") + " " + _(lesson.WHY))
    lines.append("  " + _("the fix lives in:") + " " + lesson.FIX_AT)
    lines.append("  " + _("result:") + " " + verdict(outcome, _))
    return lines


def render(lesson: ModuleType, outcome: Outcome, lang: str) -> list[str]:
    """The whole lesson's text in ``lang`` (heading and results), from one run."""
    _ = i18n.translator(lang)
    return heading(lesson, _) + results(lesson, outcome, _, lang)


def summary_table(done: list[tuple[ModuleType, Outcome]], lang: str) -> list[str]:
    """``ayudantia lesson all``'s closing table: lesson, defect, fix, result."""
    _ = i18n.translator(lang)
    rows = [[_("lesson"), _("defect measured"), _("fix measured"), _("result")]]
    for lesson, outcome in done:
        try:
            row = outcome.row(lesson.HEADLINE)
            cells = [show(row.defect, _, lang), show(row.fix, _, lang)]
        except KeyError:
            cells = ["-", "-"]
        rows.append([lesson.NAME, *cells, verdict(outcome, _)])
    return _table(rows, indent="")


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Silence a logger for the lesson's duration: what it would say is the lesson's output."""
    import logging

    log = logging.getLogger(name)
    before = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        log.setLevel(before)
