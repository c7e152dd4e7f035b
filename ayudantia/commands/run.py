"""``ayudantia run``: the whole class, as separate processes on loopback, and its summary.

Starts the Profesor (with a fresh SQLite file), the Tareo, the Docencio and N Estudiantes,
in that order, each one waited for until it says it is listening; shows the class live as
answers arrive (:mod:`ayudantia.live`); then checks the outcome: every question answered,
every answer at the student who asked it, and the Profesor's count equal to the answers
delivered. Whatever happens, every child is stopped on the way out (SIGINT, then SIGKILL
after a grace period).

The students start together: each connects, then waits on a start barrier (a pipe whose
write end only the run holds) that the run opens once every student is connected. The
throughput is answers over the window from the class's first question to its last answer.

With ``--questions 0`` the students ask until Ctrl+C; then the run stops them, and checks
and sums up what they asked (a SIGTERM or SIGHUP still just stops everything).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import ctypes
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ayudantia import chaos, netem, rules
from ayudantia.chaos import calm_after
from ayudantia.config import ConfigError, Option, seconds_option, wire_options
from ayudantia.counting import count_matches
from ayudantia.procs import terminate
from roles.estado import percentile

if TYPE_CHECKING:  # rich is imported when a class runs, not by every command's start
    from rich.console import Console

    from protocol.tls import TlsSettings
from ayudantia.run_secure import SecureClass

NAME = "run"
HELP = "the main job: run the whole class (Profesor, Tareo, Docencio, N students) and check it"

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # SIGINT already raises KeyboardInterrupt
_READY = re.compile(rb"listening on (\S+)")
_ANSWER_LINE = re.compile(rb"^(Respuesta recibida|Error recibido)", re.M)
_CONNECTED = re.compile(rb"^Cliente conectado", re.M)


def options() -> list[Option]:
    return [
        Option("students", 3, "students asking at once", rules.integer(1, 1000), "N"),
        Option(
            "questions",
            20,
            "questions per student (0 = ask until Ctrl+C)",
            rules.integer(0, 1_000_000),
            "N",
        ),
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
        *wire_options(needs_maps=True, tls=False),
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
        Option(
            "network",
            None,
            "a proxy on each TCP hop emulating this link, e.g. delay=5ms,rate=100mbit",
            netem.LINK_RULE,
            "SPEC",
        ),
        Option(
            "pcap",
            None,
            "write each TCP hop's traffic to DIR/<hop>.pcap (a proxy on each hop)",
            rules.OUTPUT_DIR,
            "DIR",
        ),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--panel", action="store_true", help="print the live panel's URL")
    parser.add_argument(
        "--open", action="store_true", help="open the live panel in a browser (implies --panel)"
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="TLS on every hop: a classroom CA and a certificate per role, made for this run "
        "(with --key: the class closed to outsiders)",
    )
    parser.add_argument(
        "--private",
        action="store_true",
        help="keep the Profesor's reads closed: with --tls the panel needs the class's client "
        "certificate too (else a browser reads it with the CA alone); with --key reads are signed",
    )


def check(settings: dict[str, Any], args: argparse.Namespace) -> None:
    if args.private and not args.tls and not settings.get("key"):
        raise ConfigError("--private needs --tls or a key (--key or AYUDANTIA_KEY)")


class RunFailed(Exception):
    pass


_PR_SET_PDEATHSIG = 1


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when ``run`` dies, even by SIGKILL.

    Without it a SIGKILLed ``run`` (no handler runs) leaves every role listening, holding
    ports and the gradebook. Linux's PR_SET_PDEATHSIG fires when the *thread* that forked
    exits; so every role is started from one spawner thread that lives as long as ``run``
    (:func:`_spawn`), never from the ``--chaos`` thread that respawns a killed one.
    libc is looked up here, in the parent: the hook itself only calls into it. Elsewhere,
    or without libc, None (the children then rely on ``run``'s own signal handlers).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # run died between fork and prctl: nobody will tell us
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


_SPAWNER: list[concurrent.futures.ThreadPoolExecutor] = []


def _spawn(**popen: Any) -> subprocess.Popen:
    """``subprocess.Popen(**popen)`` forked by the one spawner thread (see above)."""
    if not _SPAWNER:
        _SPAWNER.append(concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="spawner"))
    return _SPAWNER[0].submit(subprocess.Popen, **popen).result()


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
            self.proc = _spawn(
                args=[sys.executable, "-m", "ayudantia", *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,  # a Ctrl+C reaches us only; we stop children in order
                pass_fds=pass_fds,
                preexec_fn=_die_with_parent_hook(),
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
        terminate(self.proc, grace)
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
            "overdue",
        ):
            totals[key] += int(r.get(key, 0))
    open_ended = questions == 0  # asked until Ctrl+C: what was asked is what was expected
    asked_expected = totals["questions"] if open_ended else expected_students * questions
    missing_reports = expected_students - len(reports)
    unanswered = totals["unanswered"] + totals["errors"] + (asked_expected - totals["questions"])
    started = min((r["started"] for r in reports), default=0.0)
    finished = max((r["finished"] for r in reports), default=0.0)
    window_s = question_window(reports)
    # asking when Ctrl+C stopped them; a question that waited past the timeout was not
    in_flight = totals["unanswered"] - totals["overdue"] if open_ended else 0
    ok = (
        missing_reports == 0
        and unanswered - in_flight == 0
        and totals["misrouted"] == 0
        and totals["duplicates"] == 0
        and count_matches(count, totals["answered"], in_flight)
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
        "in_flight": in_flight,
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


def _profesor_count(url: str, deadline: float, want: int, secure: SecureClass) -> int | None:
    """GET /preguntas until it says ``want`` (the Docencio posts in the background) or time's up."""
    import requests

    from protocol.errors import AyudantiaError

    client = secure.profesor(url)
    count: int | None = None
    while True:
        with contextlib.suppress(requests.RequestException, ValueError, KeyError, AyudantiaError):
            count = client.count()
        if (count is not None and count >= want) or time.monotonic() > deadline:
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
    in_flight = summary.get("in_flight", 0)  # an endless class stopped by Ctrl+C
    summary["ok"] = summary["ok"] and count_matches(count, summary["answered"], in_flight)


def merge_stats(summary: dict[str, Any], role: str, stats: dict[str, Any]) -> None:
    """A role's counters into the summary, never over the students' own: the Docencio's
    ``errors`` (its last run's only, under --chaos) used to replace the students' total."""
    for key, value in stats.items():
        name = key if role == "docencio" else f"{role}_{key}"
        summary[f"{role}_{key}" if name in summary else name] = value


@dataclass
class ClassRun:
    """What one ``ayudantia run`` holds from its first step to its cleanup.

    Every step of :func:`main` reads and fills it, so each step is a small function and
    the cleanup knows what exists whichever step failed. ``roles`` is the list ``--chaos``
    replaces restarted roles in: [profesor, tareo, docencio], the live ones.
    """

    settings: dict[str, Any]
    args: argparse.Namespace
    base: list[str]  # flags every role takes
    common: list[str]  # ...and every role that speaks the wire format
    env: dict[str, str]
    logdir: Path
    db: Path
    outbox: Path
    tmp: tempfile.TemporaryDirectory | None
    barrier: StartBarrier
    hops: netem.Hops
    secure: SecureClass
    start_to: float
    roles: list[Child] = field(default_factory=list)
    alumnos: list[Child] = field(default_factory=list)
    injector: chaos.Chaos | None = None
    url: str = ""
    tareo_real: str = ""
    tareo_at: str = ""  # where the Docencio reaches the Tareo (its --network proxy, if any)
    docencio_real: str = ""
    docencio_at: str = ""
    released_at: float | None = None
    console: Console | None = None

    def child(self, name: str, argv: list[str], **kwargs: Any) -> Child:
        return Child(name, argv, self.logdir, self.env, **kwargs)


def main(settings: dict[str, Any], args: argparse.Namespace) -> int:
    """The class, step by step; whatever happens, every child is stopped on the way out."""
    # First of all: a closed terminal (SIGHUP) or a kill (SIGTERM) must still clean up.
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in STOP_SIGNALS}
    run = prepare(settings, args)
    try:
        t0 = time.monotonic()
        start_roles(run)
        print(
            f"La clase: Profesor {run.url}, Tareo {run.tareo_at}, Docencio {run.docencio_at} "
            f"(ready in {time.monotonic() - t0:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
        show_panel(run)
        start_students(run)
        start_chaos(run)
        watch(run)
        summary = gather(run)
        stop_roles(run, summary)
        report(run, summary)
        return 0 if summary["ok"] else 1
    except RunFailed as exc:
        print(f"ayudantia run: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        cleanup(run, previous)


def prepare(settings: dict[str, Any], args: argparse.Namespace) -> ClassRun:
    """Flags, environment and files of the class; stale state of an earlier class removed."""
    base = ["--codec", settings["codec"], "--log-level", settings["log_level"]]
    if settings.get("config"):
        base += ["--config", settings["config"]]
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if settings.get("key"):
        env["AYUDANTIA_KEY"] = str(settings["key"])  # not a flag: flags show in ps
    keep = settings["keep"]
    tmp = None if keep else tempfile.TemporaryDirectory(prefix="ayudantia-run-")
    logdir = Path(keep) if keep else Path(tmp.name)  # type: ignore[union-attr]
    logdir.mkdir(parents=True, exist_ok=True)
    outbox = Path(settings["outbox_dir"] or logdir) / "docencio.outbox.sqlite3"
    outbox.parent.mkdir(parents=True, exist_ok=True)
    for stale in [*logdir.glob("profesor.sqlite3*"), *outbox.parent.glob(outbox.name + "*")]:
        stale.unlink()  # this class's Profesor starts from zero: so must the outbox
    return ClassRun(
        settings=settings,
        args=args,
        base=base,
        common=[*base, *wire_flags(settings)],
        env=env,
        logdir=logdir,
        db=logdir / "profesor.sqlite3",
        outbox=outbox,
        tmp=tmp,
        barrier=StartBarrier(),
        hops=netem.Hops(settings.get("network"), pcap_dir=settings.get("pcap")),
        secure=SecureClass(args.tls, settings.get("key")),  # certificates in its own directory
        start_to=settings["startup_timeout"] or math.inf,  # 0 (None): no limit
    )


def start_roles(run: ClassRun) -> None:
    """The Profesor, the Tareo and the Docencio, each ready before the next one starts."""
    settings, secure, logdir = run.settings, run.secure, run.logdir
    profesor = run.child(
        "profesor",
        [
            "profesor",
            *run.base,
            *("--port", "0", "--db", str(run.db)),
            *secure.flags("profesor"),
            *(["--private"] if run.args.private else []),
        ],
    )
    run.roles.append(profesor)
    run.url = profesor.wait_ready(run.start_to)
    tareo = run.child(
        "tareo",
        [
            "tareo",
            *run.common,
            *secure.flags("tareo"),
            *("--port", "0", "--profesor", run.url),
            *("--stats", str(logdir / "t.json")),
        ],
    )
    run.roles.append(tareo)
    run.tareo_real = tareo.wait_ready(run.start_to)  # where it listens: --chaos restarts it there
    run.tareo_at = run.hops.hop("Docencio->Tareo", run.tareo_real)
    docencio = run.child(
        "docencio",
        [
            "docencio",
            *run.common,
            *secure.flags("docencio"),
            *("--port", "0", "--tareo", run.tareo_at, "--profesor", run.url),
            *("--timeout", str(settings["timeout"])),
            *("--stats", str(logdir / "d.json"), "--outbox", str(run.outbox)),
        ],
    )
    run.roles.append(docencio)
    run.docencio_real = docencio.wait_ready(run.start_to)
    run.docencio_at = run.hops.hop("students->Docencio", run.docencio_real)


def show_panel(run: ClassRun) -> None:
    """The console of the live view; with --panel/--open, where the panel is (and open it)."""
    from ayudantia.live import Console, announce_panel

    run.console = Console()
    if run.args.panel or run.args.open:
        announce_panel(
            run.url,
            open_it=run.args.open,
            console=run.console,
            ca_sha256=run.secure.ca_sha256,
            ca_file=str(run.secure.ca_file) if run.secure.ca_file else None,
            private=run.args.private,
        )


def start_students(run: ClassRun) -> None:
    """Every student, connected and waiting on the barrier, then all released at once."""
    settings, barrier = run.settings, run.barrier
    for i in range(settings["students"]):
        name = f"Estudiante-{i + 1}"
        run.alumnos.append(
            run.child(
                name,
                [
                    "estudiante",
                    *run.common,
                    *run.secure.flags("estudiante"),
                    *("--docencio", run.docencio_at, "--questions", str(settings["questions"])),
                    *("--interval", str(settings["interval"])),
                    *("--seed", str(settings["seed"] + i), "--name", name),
                    # after the Docencio's own deadline
                    *("--timeout", str(settings["timeout"] + 20)),
                    *("--report", str(run.logdir / f"{name}.json")),
                    *("--start-fd", str(barrier.read_fd)),
                ],
                pass_fds=(barrier.read_fd,),
            )
        )
    barrier.forget_read_end()
    run.released_at = barrier.release_when_connected(run.alumnos, time.monotonic() + run.start_to)


def start_chaos(run: ClassRun) -> None:
    """With --chaos: the thread that kills and restarts roles while the students ask."""
    settings = run.settings
    if not settings["chaos"]:
        return
    alumnos, asked = run.alumnos, max(1, settings["students"] * settings["questions"])
    run.injector = chaos.Chaos(
        settings["chaos"],
        run.roles,
        # The roles' own ports, not their --network proxies' (those stay up).
        {"profesor": run.url, "tareo": run.tareo_real, "docencio": run.docencio_real},
        lambda: sum(a.answers_seen for a in alumnos) / asked,
        seed=settings["seed"],
        startup_timeout=run.start_to,
        calm_after=calm_after(settings),
    )
    run.injector.start()


def watch(run: ClassRun) -> None:
    """The live view until the students are done, within the class's time limit."""
    settings, args, secure = run.settings, run.args, run.secure
    questions = settings["questions"]
    limit = time.monotonic() + run.start_to + settings["timeout"] + 30
    limit += questions * settings["interval"] * 6 if questions else math.inf
    reads_key = secure.key.encode("utf-8") if args.private and secure.key else None
    assert run.console is not None
    watch_class(
        run.alumnos,
        settings["students"] * questions,
        limit,
        run.url,
        run.console,
        secure.settings("docencio"),
        reads_key,
    )


def gather(run: ClassRun) -> dict[str, Any]:
    """The students' reports, the Profesor's count and the verdict, in one summary."""
    from ayudantia.live import panel_url

    settings, args, secure = run.settings, run.args, run.secure
    faults = run.injector.finish() if run.injector is not None else None
    reports = []
    for a in run.alumnos:
        path = run.logdir / f"{a.name}.json"
        if path.exists():
            reports.append(json.loads(path.read_text(encoding="utf-8")))
        else:
            print(
                f"{a.name} exited {a.proc.returncode} without a report:\n{a.stderr_tail()}",
                file=sys.stderr,
            )
    answered = sum(r.get("answered", 0) for r in reports)
    count = _profesor_count(run.url, time.monotonic() + 15, answered, secure)
    summary = summarize(reports, count, settings["students"], settings["questions"])
    summary["barrier_released_at"] = run.released_at
    if faults is not None:
        summary["faults"] = chaos.as_report(faults)
        summary["ok"] = chaos.verdict(summary)
    secure.probe(run.docencio_at)
    summary["security"] = secure.describe()
    if args.panel or args.open or secure.tls:
        summary["panel"] = panel_url(run.url)
        summary["ca_sha256"] = secure.ca_sha256
        summary["private"] = args.private
    return summary


def stop_roles(run: ClassRun, summary: dict[str, Any]) -> None:
    """Stop the Docencio and the Tareo, read the count once more, merge their stats."""
    _profesor, tareo, docencio = run.roles  # the live ones, after any restarts
    docencio.stop()
    tareo.stop()
    answered = summary["answered"]
    settle_count(summary, _profesor_count(run.url, time.monotonic(), answered, run.secure))
    for name, path in (("docencio", "d.json"), ("tareo", "t.json")):
        stats = run.logdir / path
        if stats.exists():
            merge_stats(summary, name, json.loads(stats.read_text(encoding="utf-8")))
    summary.update(run.hops.summary())


def report(run: ClassRun, summary: dict[str, Any]) -> None:
    """The faults, the summary table, the network's figures, and the --report file."""
    from ayudantia.live import summary_table

    if run.injector is not None:
        print(chaos.describe(run.injector.faults), flush=True)
    assert run.console is not None
    run.console.print(summary_table(summary, run.settings))
    if run.hops.link is not None or run.hops.pcap_dir is not None:
        print(run.hops.describe(), flush=True)
    if run.settings["report"]:
        Path(run.settings["report"]).write_text(json.dumps(summary, indent=1), encoding="utf-8")


def cleanup(run: ClassRun, previous: dict[int, Any]) -> None:
    """Every child stopped, every proxy and temporary file gone, the signals as they were."""
    # A second signal must not cut the cleanup short and leave children behind.
    for sig in (signal.SIGINT, *STOP_SIGNALS):
        signal.signal(sig, signal.SIG_IGN)
    run.barrier.release()
    if run.injector is not None:
        with contextlib.suppress(Exception):  # no restart may outlive the cleanup
            run.injector.finish()
    for child in [*run.alumnos, *reversed(run.roles)]:
        child.stop()
    run.hops.close()
    if run.tmp is not None:
        run.tmp.cleanup()
    run.secure.close()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def watch_class(
    alumnos: list[Child],
    total: int,
    limit: float,
    url: str,
    console: Console,
    tls: TlsSettings | None = None,
    key: bytes | None = None,
) -> None:
    """Show the class live until every student is done (or, with no total, until Ctrl+C)."""
    from ayudantia.live import Estado, LiveView

    estado = None
    try:  # from the first line: a Ctrl+C at any moment of the class ends it the same way
        estado = Estado(url, tls, key)
        with LiveView(total, console=console) as view:
            while any(a.proc.poll() is None for a in alumnos):
                if time.monotonic() > limit:
                    raise RunFailed("the students did not finish in time")
                view.update(view.answers + sum(a.new_answers() for a in alumnos), estado.poll())
                time.sleep(0.05)
            view.update(view.answers + sum(a.new_answers() for a in alumnos), estado.poll())
    except KeyboardInterrupt as exc:
        if total or isinstance(exc, Stopped):
            raise
        for a in alumnos:  # the end of a class with no end: the students report and leave
            a.stop()
    finally:
        if estado is not None:
            estado.close()


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
    flags += ["--compress", settings.get("compress") or "none"]
    if settings.get("compress_level") is not None:
        flags += ["--compress-level", str(settings["compress_level"])]
    return flags


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP: the run is stopped (not a Ctrl+C that ends an endless class)."""


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise Stopped
