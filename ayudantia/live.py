"""``ayudantia run`` seen live in the terminal, and its summary, drawn by ``rich``.

While the class runs: the answers' progress, answers by kind and by who answered, the rate
and the latency percentiles, redrawn in place on a terminal. The numbers come from the
students' answer lines (the progress) and from the Profesor's ``GET /estado`` (the rest:
the same numbers the browser panel shows). When stdout is not a terminal (CI logs, pipes)
it prints plain lines instead, a few per run: at each quarter of the way, or every
:data:`PLAIN_EVERY` seconds when the class has no end (``--questions 0``).

At the end, the summary is a rich table with the facts of the run's JSON report.
"""

from __future__ import annotations

import contextlib
import math
import time
import webbrowser
from typing import Any

import requests
from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from ayudantia.counting import count_matches
from protocol.tls import TlsSettings

PLAIN_EVERY = 15.0  # seconds between plain lines when the class has no end
POLL_EVERY = 0.5  # seconds between two GET /estado


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def ms(seconds: Any) -> str:
    """Seconds as milliseconds; "-" for anything that is not a finite number."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return "-"
    if not math.isfinite(seconds):
        return "-"
    return f"{seconds * 1000:.1f} ms"


def as_map(value: Any) -> dict[str, Any]:
    """``value`` if it is a map, else an empty one: the reports in ``GET /estado`` are
    whatever small plain data the Profesor took, and the view must not trust their shape."""
    return value if isinstance(value, dict) else {}


def counts(items: Any) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(as_map(items).items())) or "-"


# -- the panel ------------------------------------------------------------------------------


def panel_url(profesor: str) -> str:
    return profesor.rstrip("/") + "/panel"


def trust_line(ca_sha256: str, *, private: bool = False) -> str:
    """What a browser needs to open the HTTPS panel: to trust the class's CA, this one."""
    who = (
        "and, with --private, the class's client certificate"
        if private
        else "(no client certificate needed to read it)"
    )
    return f"the browser must trust the class's CA, SHA-256 {ca_sha256} {who}"


def announce_panel(
    profesor: str,
    *,
    open_it: bool,
    console: Console,
    ca_sha256: str | None = None,
    ca_file: str | None = None,
    private: bool = False,
) -> str:
    """Print the panel's URL (and open it in a browser when asked); the URL. Over HTTPS,
    also the CA the browser must trust (its fingerprint, and its file while the run lasts)."""
    url = panel_url(profesor)
    # emoji=False: a fingerprint's ":AB:" is rich's code for an emoji, and a URL may hold one too
    console.print(f"Panel: {url}", markup=False, highlight=False, soft_wrap=True, emoji=False)
    if ca_sha256 is not None:
        console.print(
            f"Panel: {trust_line(ca_sha256, private=private)}"
            + (f"; its file: {ca_file}" if ca_file else ""),
            markup=False,
            highlight=False,
            soft_wrap=True,
            emoji=False,
        )
    if open_it and not webbrowser.open(url):
        console.print(f"(no browser could be opened: open {url} by hand)", markup=False)
    return url


# -- while the class runs -------------------------------------------------------------------


class Estado:
    """``GET /estado`` at most every :data:`POLL_EVERY` seconds; the last state it got."""

    def __init__(
        self, profesor: str, tls: TlsSettings | None = None, key: bytes | None = None
    ) -> None:
        self.url = profesor.rstrip("/") + "/estado"
        self.session = requests.Session()
        # A run --tls Profesor is HTTPS with the run's own CA and asks for a client
        # certificate: without them every poll failed and the view stayed blank.
        self.tls = tls or TlsSettings()
        self.key = key  # run --private --key: the Profesor answers signed reads only
        self.state: dict[str, Any] | None = None
        self._next = 0.0

    def poll(self) -> dict[str, Any] | None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + POLL_EVERY
            headers = {}
            if self.key is not None:
                from roles.profesor_auth import sign_headers

                headers = sign_headers(self.key, "GET", "/estado", b"")
            with contextlib.suppress(requests.RequestException, ValueError):
                self.state = self.session.get(
                    self.url,
                    headers=headers,
                    timeout=0.5,
                    verify=self.tls.requests_verify,
                    cert=self.tls.requests_cert,
                ).json()
        return self.state

    def close(self) -> None:
        self.session.close()


def facts(state: dict[str, Any] | None) -> dict[str, str]:
    """What the live view shows from a ``GET /estado`` state (dashes until there is one)."""
    state = as_map(state)
    roles = as_map(state.get("roles"))
    doc = as_map(as_map(roles.get("docencio")).get("report"))
    latency = as_map(doc.get("latency"))
    history = as_map(state.get("history")).get("rate")
    rates = [r for r in history if isinstance(r, int | float)] if isinstance(history, list) else []
    up = [name for name in ("profesor", "docencio", "tareo") if as_map(roles.get(name)).get("up")]
    down = [n for n in ("docencio", "tareo") if roles and not as_map(roles.get(n)).get("up")]
    return {
        "by kind": counts(doc.get("by_kind")),
        "answered by": counts(doc.get("by_por")),
        "rate": f"{rates[-1]:,.0f} questions/s" if rates else "-",
        "latency": f"p50 {ms(latency.get('p50'))}, p95 {ms(latency.get('p95'))}, "
        f"p99 {ms(latency.get('p99'))} (last 5 s, at the Docencio)",
        "roles": ("up: " + ", ".join(up) if up else "-")
        + ("; DOWN: " + ", ".join(down) if down else ""),
    }


class LiveView:
    """The terminal's live view of a run (a context manager; :meth:`update` as answers come)."""

    def __init__(self, total: int | None, *, console: Console | None = None) -> None:
        self.console = console or Console()
        self.total = total or None
        self.tty = self.console.is_terminal
        self.answers = 0
        self.state: dict[str, Any] | None = None
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("answers"),
            BarColumn(),
            MofNCompleteColumn() if self.total else TextColumn("{task.completed}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self._task = self._progress.add_task("answers", total=self.total)
        self._live: Live | None = None
        self._printed_quarter = 0
        self._last_plain = time.monotonic()

    def __enter__(self) -> LiveView:
        if self.tty:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.stop()
        elif self.answers and self._printed_quarter < 4:
            self._plain()

    def update(self, answers: int, state: dict[str, Any] | None = None) -> None:
        self.answers = answers
        if state is not None:
            self.state = state
        self._progress.update(self._task, completed=answers)
        if self._live is not None:
            self._live.update(self._render())
            return
        if self.total:
            quarter = min(4, 4 * answers // self.total)
            if quarter > self._printed_quarter:
                self._printed_quarter = quarter
                self._plain()
        elif time.monotonic() - self._last_plain >= PLAIN_EVERY:
            self._plain()

    def plain_line(self) -> str:
        done = f"{self.answers}/{self.total}" if self.total else str(self.answers)
        if self.total:
            done += f" ({self.answers / self.total:.0%})"
        shown = facts(self.state)
        return f"answers {done}; " + "; ".join(f"{k} {v}" for k, v in shown.items())

    def _plain(self) -> None:
        self._last_plain = time.monotonic()
        self.console.print(self.plain_line(), markup=False, highlight=False, soft_wrap=True)

    def _render(self) -> Group:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for name, value in facts(self.state).items():
            table.add_row(name, Text(str(value)))  # plain: no markup, no :emoji: codes
        return Group(self._progress, table)


# -- the end --------------------------------------------------------------------------------


def summary_rows(s: dict[str, Any], settings: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """The run's summary as a title and (fact, value) rows: what the JSON report says."""
    chunk = f"{settings['chunk_size']:,} B chunks" if settings["chunk_size"] else "unchunked"
    asked = f"x {settings['questions']} preguntas" if settings["questions"] else "(hasta Ctrl+C)"
    title = f"La clase: {s['students']} estudiantes {asked}, codec {settings['codec']}, {chunk}"
    wire = (
        f"students->Docencio {human_bytes(s['students_bytes_sent'])}, "
        f"Docencio->students {human_bytes(s['students_bytes_received'])}"
    )
    if "tareo_bytes_sent" in s:
        wire += (
            f"; Docencio->Tareo {human_bytes(s['tareo_bytes_sent'])}, "
            f"Tareo->Docencio {human_bytes(s['tareo_bytes_received'])}"
        )
    count = s["profesor_count"]
    in_flight = s.get("in_flight", 0)
    verdict = "OK" if count_matches(count, s["answered"], in_flight) else "MISMATCH"
    if verdict == "OK" and count != s["answered"]:
        verdict += f" ({count - s['answered']} delivered but unread when the students stopped)"
    rows = [
        (
            "questions",
            f"{s['asked']} asked, {s['answered']} answered, {s['errors']} error answers, "
            f"{s['unanswered']} unanswered",
        ),
        (
            "routing",
            f"{s['misrouted']} misrouted, {s['duplicates']} duplicated, "
            f"{s['reconnects']} reconnects",
        ),
        ("by kind", counts(s["by_kind"])),
        ("answered by", counts(s["by_por"])),
        (
            "latency",
            f"p50 {ms(s['latency_p50'])}, p95 {ms(s['latency_p95'])}, p99 {ms(s['latency_p99'])}",
        ),
        ("bytes on wire", wire),
        (
            "throughput",
            f"{s['questions_per_second']:,.0f} questions/s ({s['answered']} answers in "
            f"{s['window_s']:.2f} s, first question to last answer)",
        ),
        (
            "Profesor",
            f"Llevamos: {count} preguntas respondidas; students received "
            f"{s['answered']} answers: {verdict}",
        ),
        *([("security", s["security"])] if s.get("security") else []),
        *([("panel", _panel_fact(s))] if s.get("panel") else []),
        ("result", "OK" if s["ok"] else "FAILED"),
    ]
    return title, rows


def _panel_fact(s: dict[str, Any]) -> str:
    if not s.get("ca_sha256"):
        return str(s["panel"])
    return f"{s['panel']}; {trust_line(s['ca_sha256'], private=bool(s.get('private')))}"


def summary_table(s: dict[str, Any], settings: dict[str, Any]) -> Table:
    title, rows = summary_rows(s, settings)
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("fact", style="bold", no_wrap=True)
    table.add_column("value")
    for name, value in rows:
        style = None
        if name == "result":
            style = "bold green" if s["ok"] else "bold red"
        table.add_row(name, Text(value), style=style)  # a fingerprint's :AB: is no emoji
    return table
