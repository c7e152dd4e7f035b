"""The class seen live: what the Docencio and the Tareo report, how, and what the Profesor keeps.

Three parts of one idea:

* :class:`Cronometro` runs on the Docencio's loop. It times each question from the moment
  it arrives to the moment its answer leaves (the only place that sees both ends of every
  question, whoever answered it) and counts answers by kind and by who answered.
* :class:`~roles.informante.Informante` (in :mod:`roles.informante`: it is the Profesor's
  client, and the Profesor imports this module) is a daemon thread in a role's process.
  Every :data:`REPORT_EVERY` seconds it POSTs a snapshot of the role's counters (built by
  :func:`docencio_report` or :func:`tareo_report`) to the Profesor's ``/estado``.
* :class:`Estado` lives in the Profesor: the last report of each role, a minute of history
  for the charts, and the whole class as the JSON of ``GET /estado`` (shape in the README).
  A role whose last report is older than :data:`DOWN_AFTER` seconds is down.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported by the thread that posts: ``ayudantia run`` only needs the maths
    pass

REPORT_EVERY = 0.5  # seconds between two reports of one role
DOWN_AFTER = 1.25  # a role silent this long is down: two reports missed, shown within 2 s
HISTORY_SECONDS = 60.0  # the charts' minute
SAMPLE_EVERY = 0.5  # seconds between two points of the history
LATENCY_WINDOW = 5.0  # the latency percentiles cover the answers of the last 5 s
REPORTING_ROLES = ("docencio", "tareo")
ANSWERERS = ("Docencio", "Tareo", "Profesor")  # who may answer; any other "por" is "otro"
MAX_REPORT_BYTES = 16 * 1024
JSON_HEADERS = {"Content-Type": "application/json"}
MAX_LATENCY = 86_400.0  # seconds: a latency the charts draw; beyond it is a gap, not a point
_MAX_KEYS = 48
_MAX_TEXT = 120
_MAX_DEPTH = 3

log = logging.getLogger("ayudantia.estado")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """p50, p95 and p99 of ``values`` in seconds (None when there are none), and how many."""
    ordered = sorted(values)
    out: dict[str, float | int | None] = {"n": len(ordered)}
    for p in (50, 95, 99):
        out[f"p{p}"] = percentile(ordered, p) if ordered else None
    return out


def wire_facts(wire: Any) -> dict[str, Any]:
    """Codec, content encoding and chunk size a role speaks with (what the panel shows)."""
    encoding = getattr(wire, "compress", None) or getattr(wire, "encoding", None) or "none"
    return {"codec": wire.codec, "encoding": str(encoding), "chunk_size": wire.chunk_size}


def link_bytes(conns: Iterable[Any], closed: tuple[int, int] = (0, 0)) -> dict[str, int]:
    """Bytes sent and received over ``conns`` plus those of links already closed."""
    sent, received = closed
    for conn in conns:
        sent += conn.bytes_sent
        received += conn.bytes_received
    return {"sent": sent, "received": received}


def copy_of(items: Any) -> list[Any]:
    """A copy of a set the loop's thread changes, taken from another thread."""
    for _ in range(5):
        try:
            return list(items)
        except RuntimeError:  # changed size while being copied: try again
            continue
    return []


# -- on the Docencio's loop --------------------------------------------------------------


class Cronometro:
    """Per question: arrival to answer-out. Per answer: its kind and who answered it.

    :meth:`start`, :meth:`stop` and :meth:`forget` run on the loop's thread; :meth:`report`
    on the reporter's (the lock guards what both touch, for microseconds). Memory is
    bounded: at most ``max_open`` open questions per student, the latest ``max_samples``
    latencies.
    """

    def __init__(self, *, max_open: int = 4096, max_samples: int = 20_000) -> None:
        self.max_open = max_open
        self._open: dict[Any, dict[Any, tuple[float, str]]] = {}
        self._lock = threading.Lock()
        self._samples: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=max_samples
        )
        self.by_kind: collections.Counter[str] = collections.Counter()
        self.by_por: collections.Counter[str] = collections.Counter()
        self.answers = 0
        self.errors = 0
        self._closed = [0, 0]  # bytes of students' links already closed

    def start(self, conn: Any, pregunta: dict[str, Any]) -> None:
        """A question arrived on ``conn``: its clock starts."""
        open_here = self._open.setdefault(conn, {})
        if len(open_here) < self.max_open:
            open_here[_key(pregunta.get("id"))] = (time.perf_counter(), str(pregunta["tipo"]))

    def stop(self, conn: Any, reply: dict[str, Any]) -> None:
        """``reply`` left for the student on ``conn``: count it and stop its question's clock."""
        now = time.perf_counter()
        open_here = self._open.get(conn)
        started = None
        if open_here is not None:
            started = open_here.pop(_key(reply.get("id")), None)
            if not open_here:  # an idle student keeps no dict (5,000 of them: 1 MB)
                del self._open[conn]
        with self._lock:
            if "error" in reply:
                self.errors += 1
                return
            self.answers += 1
            por = reply.get("por")
            self.by_por[por if por in ANSWERERS else "otro"] += 1  # the Tareo's text: bounded
            if started is not None:
                self.by_kind[started[1]] += 1
                self._samples.append((now, now - started[0]))

    def forget(self, conn: Any) -> None:
        """The student on ``conn`` left: drop its open clocks, keep its link's bytes."""
        self._open.pop(conn, None)
        with self._lock:
            self._closed[0] += conn.bytes_sent
            self._closed[1] += conn.bytes_received

    def report(self, window: float = LATENCY_WINDOW) -> dict[str, Any]:
        """Counts so far and the latency percentiles of the last ``window`` seconds."""
        since = time.perf_counter() - window
        with self._lock:
            recent = [lat for at, lat in self._samples if at >= since]
            out = {
                "answers": self.answers,
                "errors": self.errors,
                "by_kind": dict(self.by_kind),
                "by_por": dict(self.by_por),
            }
            closed = (self._closed[0], self._closed[1])
        out["latency"] = percentiles(recent)
        out["closed_bytes"] = closed
        return out


def _key(qid: Any) -> Any:
    return qid if isinstance(qid, str | int) else repr(qid)


def docencio_report(docencio: Any) -> dict[str, Any]:
    """What the Docencio can honestly tell: its students, its answers, its two links."""
    students = copy_of(docencio.clients)
    crono = docencio.cronometro.report()
    link = docencio.upstream
    closed = crono.pop("closed_bytes")
    return {
        **crono,
        "students": len(students),
        "late": link.late,
        "reconnects": max(link.connections - 1, 0),
        "tareo_link_up": link.up,
        "links": {
            "estudiantes": link_bytes(students, closed),
            "tareo": {"sent": link.bytes_sent, "received": link.bytes_received},
        },
        "wire": wire_facts(docencio.wire),
        "stats": docencio.stats(),
    }


def tareo_report(tareo: Any) -> dict[str, Any]:
    """What the Tareo can honestly tell: its answers, hard questions waiting, its links."""
    links = copy_of(tareo.clients)
    return {
        "links_open": len(links),
        "in_flight": len(tareo._waiting),
        "links": {"docencio": link_bytes(links)},
        "wire": wire_facts(tareo.wire),
        "stats": tareo.stats(),
    }


# -- in the Profesor ------------------------------------------------------------------------


class BadReport(ValueError):
    """A POST /estado body that is not a role's report."""


class _Last:
    __slots__ = ("at", "bye", "pid", "report")

    def __init__(self, at: float, report: dict[str, Any] | None, pid: Any, bye: bool) -> None:
        self.at, self.report, self.pid, self.bye = at, report, pid, bye


class Estado:
    """The Profesor's picture of the class: last reports, and a minute of history.

    Thread-safe (waitress serves from several threads). ``clock`` is monotonic: ages and
    the history's times do not jump when the wall clock does.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, _Last] = {}
        self._history: collections.deque[tuple[float, int, dict[str, Any] | None]] = (
            collections.deque()
        )
        self.reports = 0

    def accept(self, body: Any, count: int) -> None:
        """Take a role's report (:class:`BadReport` if it is not one) and sample the count."""
        if not isinstance(body, dict):
            raise BadReport("a report is a map")
        role = body.get("role")
        if role not in REPORTING_ROLES:
            raise BadReport(f"'role' must be one of {', '.join(REPORTING_ROLES)}")
        pid = body.get("pid")
        if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool)):
            raise BadReport("'pid' must be an int")
        bye = body.get("bye") is True
        report = None if bye else _clean(body.get("report"), "report", 0)
        if not bye and not isinstance(report, dict):
            raise BadReport("'report' must be a map")
        now = self.clock()
        with self._lock:
            previous = self._last.get(str(role))
            if bye and previous is not None:
                report = previous.report  # keep the last numbers; only the state changes
            self._last[str(role)] = _Last(now, report, pid, bye)
            self.reports += 1
            self._sample(now, count)

    def snapshot(self, count: int) -> dict[str, Any]:
        """The whole class, as ``GET /estado`` returns it."""
        now = self.clock()
        with self._lock:
            self._sample(now, count)
            roles: dict[str, Any] = {
                "profesor": {"up": True, "age": 0.0, "pid": os.getpid(), "report": None}
            }
            for role in REPORTING_ROLES:
                last = self._last.get(role)
                if last is None:
                    roles[role] = {"up": False, "age": None, "pid": None, "report": None}
                    continue
                age = now - last.at
                roles[role] = {
                    "up": not last.bye and age <= DOWN_AFTER,
                    "age": round(age, 3),
                    "pid": last.pid,
                    "report": last.report,
                }
            history = self._series(now)
        return {
            "version": 1,
            "time": time.time(),
            "count": count,
            "down_after": DOWN_AFTER,
            "roles": roles,
            "history": history,
        }

    def _latency_now(self, now: float) -> dict[str, Any] | None:
        last = self._last.get("docencio")
        if last is None or last.bye or now - last.at > DOWN_AFTER or last.report is None:
            return None
        latency = last.report.get("latency")
        return latency if isinstance(latency, dict) else None

    def _sample(self, now: float, count: int) -> None:
        """One point of history every SAMPLE_EVERY seconds; points older than a minute go."""
        if self._history and now - self._history[-1][0] < SAMPLE_EVERY:
            return
        self._history.append((now, count, self._latency_now(now)))
        while self._history and now - self._history[0][0] > HISTORY_SECONDS:
            self._history.popleft()

    def _series(self, now: float) -> dict[str, list[Any]]:
        """The charts' series: questions/s between points, and the latency at each point."""
        series: dict[str, list[Any]] = {"t": [], "rate": [], "p50": [], "p95": [], "p99": []}
        points = list(self._history)
        for (t0, c0, _), (t1, c1, latency) in itertools.pairwise(points):
            series["t"].append(round(t1 - now, 2))
            series["rate"].append(round(max(c1 - c0, 0) / (t1 - t0), 2))
            for p in ("p50", "p95", "p99"):
                series[p].append(_seconds(latency.get(p) if latency else None))
        return series


def _seconds(value: Any) -> float | None:
    """A latency fit for the charts: a number of seconds from 0 to a day (else a gap)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if 0 <= value <= MAX_LATENCY else None


def _clean(value: Any, where: str, depth: int) -> Any:
    """``value`` if it is small plain data (numbers, short text, small maps and pairs)."""
    if value is None or isinstance(value, bool | str | int | float):
        if isinstance(value, str):
            _check_text(value, where, _MAX_TEXT)
        if isinstance(value, float) and not math.isfinite(value):
            raise BadReport(f"{where}: not a finite number")
        return value
    if depth >= _MAX_DEPTH:
        raise BadReport(f"{where}: nested too deep")
    if isinstance(value, list) and len(value) <= 4:
        return [_clean(v, where, depth + 1) for v in value]
    if isinstance(value, dict) and len(value) <= _MAX_KEYS:
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise BadReport(f"{where}: keys are text of at most 40 characters")
            _check_text(key, f"{where} key", 40)
            out[key] = _clean(item, f"{where}.{key}", depth + 1)
        return out
    raise BadReport(f"{where}: not small plain data")


def _check_text(text: str, where: str, limit: int) -> None:
    """Short text that UTF-8 can carry: a lone surrogate (valid JSON, ``"\\ud800"``) would
    make every later ``GET /estado`` fail to encode, blanking every open panel."""
    if len(text) > limit:
        raise BadReport(f"{where}: text longer than {limit} characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadReport(f"{where}: text that is not valid Unicode (a lone surrogate)") from None
