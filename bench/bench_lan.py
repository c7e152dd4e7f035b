"""The class on a namespace LAN next to loopback: questions/s, p50 latency, the count.

Why: issue 21's note asks what crossing real interfaces (veth + bridge, ARP, a real address
per host) costs the class compared with loopback. Each run starts Profesor, Tareo, Docencio
and the students as real processes (tests/roles_helpers.py), on one host per role
(tests/netns.py) or all on 127.0.0.1, and reads the students' reports:
questions/s = answers / (last answer - first question), p50 = median of every latency.

As a script it prints a table of medians and spread over several runs::

    uv run python bench/bench_lan.py --runs 3 --students 3 --questions 200

Under pytest one small run per setting checks that the count is exact (no speed asserts).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from netns import Lan, lan, unavailable
from roles_helpers import Procs, Role, wait_for

CORE = ("profesor", "tareo", "docencio")


def _certs(tmp: Path, hosts: list[str]) -> Path:
    import subprocess

    certs = tmp / "certs"
    extra = [a for h in hosts for a in ("--host", h)]
    subprocess.run(
        [sys.executable, "-m", "ayudantia", "certs", str(certs), *extra],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return certs


def _tls(certs: Path | None, role: str) -> tuple[str, ...]:
    if certs is None:
        return ()
    return (
        *("--tls-cert", str(certs / f"{role}.pem"), "--tls-key", str(certs / f"{role}-key.pem")),
        *("--tls-ca", str(certs / "ca.pem"), "--key", "lan-bench"),
    )


def run_class(
    net: Lan | None, students: int, questions: int, secure: bool, interval: float = 0.0
) -> dict:
    """One class; returns answered, questions/s, p50 (ms) and the Profesor's count."""
    with tempfile.TemporaryDirectory() as d, ExitStack() as stack:
        tmp = Path(d)
        procs = Procs(tmp)
        stack.callback(procs.close)
        names = [*CORE, *(f"alumno-{i}" for i in range(students))]
        addr = {n: (net.address[n] if net else "127.0.0.1") for n in names}
        certs = _certs(tmp, sorted(set(addr.values()))) if secure else None

        def start(name: str, role: str, *args: str, ready: bool = True) -> Role:
            here = ("--host", addr[name], "--port", "0") if role != "estudiante" else ()
            prefix = net.cmd(name) if net else None
            flags = _tls(certs, role)
            return procs.start(name, role, *args, *flags, *here, ready=ready, prefix=prefix)

        profesor = start("profesor", "profesor", "--db", str(tmp / "p.sqlite3"))
        tareo = start("tareo", "tareo", "--profesor", profesor.address, "--timeout", "5")
        docencio = start(
            "docencio",
            "docencio",
            *("--tareo", tareo.address, "--profesor", profesor.address, "--timeout", "10"),
        )
        paths = [tmp / f"s{i}.json" for i in range(students)]
        kids = [
            start(
                f"alumno-{i}",
                "estudiante",
                *("--docencio", docencio.address, "--questions", str(questions)),
                *(
                    "--interval",
                    str(interval),
                    "--timeout",
                    "30",
                    "--report",
                    str(paths[i]),
                    "--quiet",
                ),
                ready=False,
            )
            for i in range(students)
        ]
        for k in kids:
            k.proc.wait(120)
        reports = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
        answered = sum(r["answered"] for r in reports)
        span = max(r["last_answer_at"] for r in reports) - min(
            r["first_question_at"] for r in reports
        )
        lat = [x for r in reports for x in r["latencies"]]
        count = _count(net, profesor, certs, answered)
        return {
            "answered": answered,
            "asked": students * questions,
            "qps": answered / span if span > 0 else float("nan"),
            "p50_ms": statistics.median(lat) * 1000 if lat else float("nan"),
            "count": count,
        }


def _count(net: Lan | None, profesor: Role, certs: Path | None, expect: int) -> int:
    """The Profesor's count, read from a host of the LAN (or loopback), once it settles."""
    import subprocess

    how = ""
    if certs is not None:
        c = (str(certs / "docencio.pem"), str(certs / "docencio-key.pem"))
        how = f"cert={c!r},verify={str(certs / 'ca.pem')!r},"
    script = (
        "import requests;from roles.profesor import parse_count;"
        f"r=requests.get({profesor.address + '/preguntas'!r},{how}timeout=5);"
        "print(parse_count(r.json()['texto']))"
    )
    argv = [sys.executable, "-c", script]
    seen = [-1]

    def read() -> bool:
        cmd = net.cmd("alumno-0", *argv) if net else argv
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        seen[0] = int(out.stdout.strip()) if out.returncode == 0 else -1
        return seen[0] == expect

    wait_for(read, 20, interval=0.2)
    return seen[0]


def _one(where: str, students: int, questions: int, secure: bool, interval: float = 0.0) -> dict:
    if where == "loopback":
        return run_class(None, students, questions, secure, interval)
    hosts = [*CORE, *(f"alumno-{i}" for i in range(students))]
    with lan(*hosts) as net:
        return run_class(net, students, questions, secure, interval)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("secure", [False, True], ids=["plain", "tls-key"])
@pytest.mark.parametrize("where", ["loopback", "lan"])
def test_the_class_counts_exactly_on_the_lan_and_on_loopback(where, secure):
    """A small class per setting: the figures are printed, the count must be exact."""
    if where == "lan" and unavailable():
        from netns import require

        require()
    got = _one(where, 2, 50, secure)
    print(where, "tls" if secure else "plain", got)
    assert got["answered"] == got["asked"], got
    assert got["count"] == got["answered"], got


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--students", type=int, default=3)
    p.add_argument("--questions", type=int, default=200)
    p.add_argument(
        "--interval",
        type=float,
        default=0.0,
        help="students' pace (0: all at once; p50 is then queueing)",
    )
    a = p.parse_args(argv)
    if why := unavailable():
        print(f"no network namespaces: {why}", file=sys.stderr)
        return 2
    print(
        f"{a.students} students x {a.questions} questions, --interval {a.interval}, "
        f"{a.runs} runs each"
    )
    print("| setting | questions/s median (min-max) | p50 ms median (min-max) | count/answered |")
    print("|---|---|---|---|")
    for secure in (False, True):
        for where in ("loopback", "lan"):
            runs = [_one(where, a.students, a.questions, secure, a.interval) for _ in range(a.runs)]
            q = [r["qps"] for r in runs]
            p50 = [r["p50_ms"] for r in runs]
            counts = ", ".join(f"{r['count']}/{r['answered']}" for r in runs)
            label = f"{where} {'tls+key' if secure else 'plain'}"
            print(
                f"| {label} | {statistics.median(q):.0f} ({min(q):.0f}-{max(q):.0f}) | "
                f"{statistics.median(p50):.2f} ({min(p50):.2f}-{max(p50):.2f}) | {counts} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
