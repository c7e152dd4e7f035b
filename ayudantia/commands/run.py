"""``ayudantia run``: the whole class, as separate processes on loopback, and its summary.

Starts the Profesor (with a fresh SQLite file), the Tareo, the Docencio and N Estudiantes,
in that order, each one waited for until it says it is listening; shows progress as answers
arrive; then checks the outcome: every question answered, every answer at the student who
asked it, and the Profesor's count equal to the answers delivered. Whatever happens, every
child is stopped on the way out (SIGINT, then SIGKILL after a grace period).

The students start together: each connects, then waits on a start barrier (a pipe whose
write end only the run holds) that the run opens once every student is connected. The
throughput is answers over the window from the class's first question to its last answer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ayudantia import chaos, rules
from ayudantia.config import Option, seconds_option, wire_options
from ayudantia.progress import Progress

NAME = "run"
HELP = "the main job: run the whole class (Profesor, Tareo, Docencio, N students) and check it"

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # SIGINT already raises KeyboardInterrupt
_READY = re.compile(rb"listening on (\S+)")
_ANSWER_LINE = re.compile(rb"^(Respuesta recibida|Error recibido)", re.M)
_CONNECTED = re.compile(rb"^Cliente conectado", re.M)


def options() -> list[Option]:
    return [
        Option("students", 3, "students asking at once", rules.integer(1, 1000), "N"),
        Option("questions", 20, "questions per student", rules.integer(0, 1_000_000), "N"),
        Option(
            "interval",
            0.02,
            "students' pace: each waits interval*(1..6) s between questions (0 = none)",
            rules.pace(),
            "S",
        ),
        Option("seed", 1, "seed of the first student (the others: seed+1, ...)", rules.SEED, "N"),
        seconds_option(
            "timeout", 10.0, "the Docencio waits for each Tareo answer", unlimited=False
        ),
        seconds_option("startup_timeout", 30.0, "each role may take to start"),
        *wire_options(needs_maps=True),
        Option("report", None, "also write the summary as JSON to FILE", rules.OUTPUT_FILE, "FILE"),
        Option("keep", None, "keep the roles' logs and database in DIR", rules.OUTPUT_DIR, "DIR"),
        Option(
            "outbox_dir",
            None,
            "the Docencio's outbox goes in DIR (default: the run's directory); emptied first",
            rules.OUTPUT_DIR,
            "DIR",
        ),
        chaos.option(),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


class RunFailed(Exception):
    pass


class Child:
    """One role process, its stdout and stderr in files (a pipe nobody reads can fill up)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        logdir: Path,
        env: dict[str, str],
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.name = name
        self.argv, self.logdir, self.env, self.restarts = argv, logdir, env, 0
        self.out_path = logdir / f"{name}.out"
        self.err_path = logdir / f"{name}.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ayudantia", *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,  # a Ctrl+C reaches us only; we stop children in order
                pass_fds=pass_fds,
            )
        self._offset = 0
        self.answers_seen = 0

    def respawn(self, address: str) -> Child:
        """The same role started again on the port it listened on (after ``--chaos`` killed
        it): same arguments, so the same gradebook and outbox."""
        argv = list(self.argv)
        argv[argv.index("--port") + 1] = address.rpartition(":")[2]
        base = self.name.split("-")[0]
        child = Child(f"{base}-{self.restarts + 2}", argv, self.logdir, self.env)
        child.restarts = self.restarts + 1
        return child

    def output(self) -> bytes:
        try:
            return self.out_path.read_bytes()
        except FileNotFoundError:
            return b""

    def new_answers(self) -> int:
        """Answer lines printed since the last call (for the progress bar)."""
        with self.out_path.open("rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        cut = data.rfind(b"\n") + 1
        self._offset += cut
        n = len(_ANSWER_LINE.findall(data[:cut]))
        self.answers_seen += n
        return n

    def stderr_tail(self, lines: int = 15) -> str:
        try:
            text = self.err_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float) -> str:
        """The address in the child's "listening on ADDR" line; RunFailed if it never comes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _READY.search(self.output())
            if match:
                return match.group(1).decode()
            if self.proc.poll() is not None:
                raise RunFailed(
                    f"{self.name} exited with status {self.proc.returncode} before it was "
                    f"ready:\n{self.stderr_tail()}"
                )
            time.sleep(0.02)
        raise RunFailed(f"{self.name} was not ready within {timeout:g} s:\n{self.stderr_tail()}")

    def stop(self, grace: float = 8.0) -> int | None:
        """SIGINT, then SIGKILL after ``grace`` seconds; the exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class StartBarrier:
    """A pipe the students block on after connecting; closing its write end starts them all.

    Each student gets the read end (``--start-fd``) and waits for end-of-file. The run keeps
    the only write end, so the barrier also opens if the run dies, and every student bounds
    its wait (roles.estudiante.BARRIER_TIMEOUT): nobody waits forever.
    """

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()
        self.released_at: float | None = None

    def forget_read_end(self) -> None:
        """The run's copy of the read end, once every student has inherited its own."""
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1

    def release(self) -> float:
        """Open the barrier (idempotent); the time.time() at which it opened."""
        if self.released_at is None:
            self.released_at = time.time()
            os.close(self._write_fd)
            self.forget_read_end()
        return self.released_at

    def release_when_connected(self, alumnos: list[Child], deadline: float) -> float:
        """Open once every student printed that it connected (or exited), or at ``deadline``."""
        while time.monotonic() < deadline:
            if all(a.proc.poll() is not None or _CONNECTED.search(a.output()) for a in alumnos):
                break
            time.sleep(0.01)
        return self.release()


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def summarize(
    reports: list[dict[str, Any]], count: int | None, expected_students: int, questions: int
) -> dict[str, Any]:
    """Add up the students' reports; ``ok`` is the run's verdict."""
    by_kind: Counter[str] = Counter()
    by_por: Counter[str] = Counter()
    latencies: list[float] = []
    totals = Counter()
    for r in reports:
        by_kind.update(r.get("by_kind", {}))
        by_por.update(r.get("by_por", {}))
        latencies.extend(r.get("latencies", []))
        for key in (
            "questions",
            "answered",
            "errors",
            "unanswered",
            "misrouted",
            "duplicates",
            "reconnects",
            "bytes_sent",
            "bytes_received",
        ):
            totals[key] += int(r.get(key, 0))
    asked_expected = expected_students * questions
    missing_reports = expected_students - len(reports)
    unanswered = totals["unanswered"] + totals["errors"] + (asked_expected - totals["questions"])
    started = min((r["started"] for r in reports), default=0.0)
    finished = max((r["finished"] for r in reports), default=0.0)
    window_s = question_window(reports)
    ok = (
        missing_reports == 0
        and unanswered == 0
        and totals["misrouted"] == 0
        and totals["duplicates"] == 0
        and count == totals["answered"]
    )
    return {
        "ok": ok,
        "students": expected_students,
        "reports": len(reports),
        "asked": totals["questions"],
        "answered": totals["answered"],
        "errors": totals["errors"],
        "unanswered": unanswered,
        "misrouted": totals["misrouted"],
        "duplicates": totals["duplicates"],
        "reconnects": totals["reconnects"],
        "by_kind": dict(by_kind),
        "by_por": dict(by_por),
        "latency_p50": percentile(latencies, 50),
        "latency_p95": percentile(latencies, 95),
        "latency_p99": percentile(latencies, 99),
        "students_bytes_sent": totals["bytes_sent"],
        "students_bytes_received": totals["bytes_received"],
        "seconds": finished - started,
        "window_s": window_s,
        "questions_per_second": totals["answered"] / window_s if window_s > 0 else 0.0,
        "per_student": [
            {key: r.get(key) for key in _PER_STUDENT}
            for r in sorted(reports, key=lambda r: str(r.get("name")))
        ],
        "profesor_count": count,
    }


# What the report keeps of each student: its answers and when (time.time(), so the stamps
# of different processes compare).
_PER_STUDENT = (
    "name",
    "answered",
    "connected_at",
    "released_at",
    "first_question_at",
    "last_answer_at",
)


def question_window(reports: list[dict[str, Any]]) -> float:
    """Seconds from the class's first question to its last answer (0 if nothing was answered)."""
    firsts = [r["first_question_at"] for r in reports if r.get("first_question_at")]
    lasts = [r["last_answer_at"] for r in reports if r.get("last_answer_at")]
    if not firsts or not lasts:
        return 0.0
    return max(max(lasts) - min(firsts), 0.0)


def format_summary(s: dict[str, Any], settings: dict[str, Any]) -> str:
    chunk = f"{settings['chunk_size']:,} B chunks" if settings["chunk_size"] else "unchunked"
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(s["by_kind"].items())) or "-"
    por = ", ".join(f"{k} {v}" for k, v in sorted(s["by_por"].items())) or "-"
    link = ""
    if "tareo_bytes_sent" in s:
        link = (
            f"\n                Docencio->Tareo {_human_bytes(s['tareo_bytes_sent'])}, "
            f"Tareo->Docencio {_human_bytes(s['tareo_bytes_received'])}"
        )
    count = s["profesor_count"]
    count_ok = count == s["answered"]
    return "\n".join(
        [
            f"La clase: {s['students']} estudiantes x {settings['questions']} preguntas, "
            f"codec {settings['codec']}, {chunk}",
            f"questions     {s['asked']} asked, {s['answered']} answered, {s['errors']} error "
            f"answers, {s['unanswered']} unanswered",
            f"routing       {s['misrouted']} misrouted, {s['duplicates']} duplicated, "
            f"{s['reconnects']} reconnects",
            f"by kind       {kinds}",
            f"answered by   {por}",
            f"latency       p50 {_ms(s['latency_p50'])}, p95 {_ms(s['latency_p95'])}, "
            f"p99 {_ms(s['latency_p99'])}",
            f"bytes on wire students->Docencio {_human_bytes(s['students_bytes_sent'])}, "
            f"Docencio->students {_human_bytes(s['students_bytes_received'])}{link}",
            f"throughput    {s['questions_per_second']:,.0f} questions/s "
            f"({s['answered']} answers in {s['window_s']:.2f} s, first question to last answer)",
            f"Profesor      Llevamos: {count} preguntas respondidas; students received "
            f"{s['answered']} answers: {'OK' if count_ok else 'MISMATCH'}",
            f"result        {'OK' if s['ok'] else 'FAILED'}",
        ]
    )


def _profesor_count(url: str, deadline: float, want: int) -> int | None:
    """GET /preguntas until it says ``want`` (the Docencio posts in the background) or time's up."""
    import requests

    from roles.profesor import parse_count

    count: int | None = None
    while True:
        with contextlib.suppress(requests.RequestException, ValueError, KeyError):
            count = parse_count(requests.get(url + "/preguntas", timeout=2).json()["texto"])
        if count == want or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def settle_count(summary: dict[str, Any], count: int | None) -> None:
    """The count read once more after the Docencio stopped (its last posts are in).

    Why: the count is first read until it equals the answers, while the Docencio still
    posts; a count that equalled them for a moment and then grew (a key counted for an
    answer nobody received) passed. Now the later count is the one reported and judged.
    """
    if count is None or count == summary["profesor_count"]:
        return
    summary["profesor_count_before_stop"] = summary["profesor_count"]
    summary["profesor_count"] = count
    summary["ok"] = summary["ok"] and count == summary["answered"]


def merge_stats(summary: dict[str, Any], role: str, stats: dict[str, Any]) -> None:
    """A role's counters into the summary, never over the students' own: the Docencio's
    ``errors`` (its last run's only, under --chaos) used to replace the students' total."""
    for key, value in stats.items():
        name = key if role == "docencio" else f"{role}_{key}"
        summary[f"{role}_{key}" if name in summary else name] = value


def main(settings: dict[str, Any], args: argparse.Namespace) -> int:
    # First of all: a closed terminal (SIGHUP) or a kill (SIGTERM) must still clean up.
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in STOP_SIGNALS}
    students, questions = settings["students"], settings["questions"]
    base = ["--codec", settings["codec"], "--log-level", settings["log_level"]]
    if settings.get("config"):
        base += ["--config", settings["config"]]
    common = [*base, *wire_flags(settings)]
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if settings.get("key"):
        env["AYUDANTIA_KEY"] = str(settings["key"])  # not a flag: flags show in ps
    keep = settings["keep"]
    tmp = None if keep else tempfile.TemporaryDirectory(prefix="ayudantia-run-")
    logdir = Path(keep) if keep else Path(tmp.name)  # type: ignore[union-attr]
    logdir.mkdir(parents=True, exist_ok=True)
    db = logdir / "profesor.sqlite3"
    outbox = Path(settings["outbox_dir"] or logdir) / "docencio.outbox.sqlite3"
    outbox.parent.mkdir(parents=True, exist_ok=True)
    for stale in [*logdir.glob("profesor.sqlite3*"), *outbox.parent.glob(outbox.name + "*")]:
        stale.unlink()  # this class's Profesor starts from zero: so must the outbox
    injector: chaos.Chaos | None = None
    roles: list[Child] = []
    alumnos: list[Child] = []
    barrier = StartBarrier()
    try:
        t0 = time.monotonic()
        start_to = settings["startup_timeout"] or math.inf  # 0 (None): no limit
        profesor = Child(
            "profesor", ["profesor", *base, "--port", "0", "--db", str(db)], logdir, env
        )
        roles.append(profesor)
        url = profesor.wait_ready(start_to)
        tareo = Child(
            "tareo",
            ["tareo", *common, "--port", "0", "--profesor", url, "--stats", str(logdir / "t.json")],
            logdir,
            env,
        )
        roles.append(tareo)
        tareo_at = tareo.wait_ready(start_to)
        docencio = Child(
            "docencio",
            [
                "docencio",
                *common,
                "--port",
                "0",
                "--tareo",
                tareo_at,
                "--profesor",
                url,
                "--timeout",
                str(settings["timeout"]),
                "--stats",
                str(logdir / "d.json"),
                "--outbox",
                str(outbox),
            ],
            logdir,
            env,
        )
        roles.append(docencio)
        docencio_at = docencio.wait_ready(start_to)
        print(
            f"La clase: Profesor {url}, Tareo {tareo_at}, Docencio {docencio_at} "
            f"(ready in {time.monotonic() - t0:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
        for i in range(students):
            name = f"Estudiante-{i + 1}"
            alumnos.append(
                Child(
                    name,
                    [
                        "estudiante",
                        *common,
                        "--docencio",
                        docencio_at,
                        "--questions",
                        str(questions),
                        "--interval",
                        str(settings["interval"]),
                        "--seed",
                        str(settings["seed"] + i),
                        "--name",
                        name,
                        "--timeout",
                        str(settings["timeout"] + 20),  # after the Docencio's own deadline
                        "--report",
                        str(logdir / f"{name}.json"),
                        "--start-fd",
                        str(barrier.read_fd),
                    ],
                    logdir,
                    env,
                    pass_fds=(barrier.read_fd,),
                )
            )
        barrier.forget_read_end()
        released_at = barrier.release_when_connected(alumnos, time.monotonic() + start_to)
        if settings["chaos"]:
            injector = chaos.Chaos(
                settings["chaos"],
                roles,
                {"profesor": url, "tareo": tareo_at, "docencio": docencio_at},
                lambda: sum(a.answers_seen for a in alumnos) / max(1, students * questions),
                seed=settings["seed"],
                startup_timeout=start_to,
                # Faults stop while the students have 20 s of their deadline left on average:
                # their average asking time, plus the Docencio's timeout (see Chaos._calm).
                calm_after=questions * settings["interval"] * 3.5 + settings["timeout"],
            )
            injector.start()
        limit = time.monotonic() + start_to + settings["timeout"] + 30
        limit += questions * settings["interval"] * 6
        with Progress("answers", students * questions) as bar:
            while any(a.proc.poll() is None for a in alumnos):
                if time.monotonic() > limit:
                    raise RunFailed("the students did not finish in time")
                bar.advance(sum(a.new_answers() for a in alumnos))
                time.sleep(0.05)
            bar.advance(sum(a.new_answers() for a in alumnos))
        faults = injector.finish() if injector is not None else None
        profesor, tareo, docencio = roles  # the live ones, after any restarts
        reports = []
        for a in alumnos:
            path = logdir / f"{a.name}.json"
            if path.exists():
                reports.append(json.loads(path.read_text(encoding="utf-8")))
            else:
                print(
                    f"{a.name} exited {a.proc.returncode} without a report:\n{a.stderr_tail()}",
                    file=sys.stderr,
                )
        answered = sum(r.get("answered", 0) for r in reports)
        count = _profesor_count(url, time.monotonic() + 15, answered)
        summary = summarize(reports, count, students, questions)
        summary["barrier_released_at"] = released_at
        if faults is not None:
            summary["faults"] = chaos.as_report(faults)
            summary["ok"] = chaos.verdict(summary)
        docencio.stop()
        tareo.stop()
        settle_count(summary, _profesor_count(url, time.monotonic(), answered))
        for name, path in (("docencio", "d.json"), ("tareo", "t.json")):
            stats = logdir / path
            if stats.exists():
                merge_stats(summary, name, json.loads(stats.read_text(encoding="utf-8")))
        if faults is not None:
            print(chaos.describe(faults), flush=True)
        print(format_summary(summary, settings), flush=True)
        if settings["report"]:
            Path(settings["report"]).write_text(json.dumps(summary, indent=1), encoding="utf-8")
        return 0 if summary["ok"] else 1
    except RunFailed as exc:
        print(f"ayudantia run: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        # A second signal must not cut the cleanup short and leave children behind.
        for sig in (signal.SIGINT, *STOP_SIGNALS):
            signal.signal(sig, signal.SIG_IGN)
        barrier.release()
        if injector is not None:
            with contextlib.suppress(Exception):  # no restart may outlive the cleanup
                injector.finish()
        for child in [*alumnos, *reversed(roles)]:
            child.stop()
        if tmp is not None:
            tmp.cleanup()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wire_flags(settings: dict[str, Any]) -> list[str]:
    """The framed roles' wire settings as flags (the key travels in the environment)."""
    flags = []
    for name in (
        "chunk_size",
        "max_message",
        "read_timeout",
        "idle_timeout",
        "message_timeout",
        "send_timeout",
    ):
        value = settings[name]
        flags += ["--" + name.replace("_", "-"), "0" if value is None else str(value)]
    return flags


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
