"""``python -m bench.loadgen``: one scenario against a server; one JSON object or key: value
lines."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from bench.loadgen._connect_rate import connect_rate
from bench.loadgen._echo_small import echo_small
from bench.loadgen._flood import flood
from bench.loadgen._shared import CONTENIDO, DIFICIL, TAREA, loop_name
from bench.loadgen._students import students

DESCRIPTION = (
    "Load generator for issue 9's targets: black-box clients against real server processes."
)
SCENARIOS = ("students", "flood", "echo-small", "connect-rate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=DESCRIPTION)
    p.add_argument("scenario", choices=SCENARIOS)
    p.add_argument("--to", required=True, metavar="HOST:PORT", help="the server under load")
    p.add_argument(
        "--server-pid", type=int, help="sample its RSS/threads/fds (echo-small: pin it with --cpu)"
    )
    p.add_argument("--codec", default="json", help="question codec (students, flood, rate)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--loop", choices=("auto", "asyncio", "uvloop"), default="auto", help="client event loop"
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--n", type=int, default=5000, help="students: how many connect at once")
    p.add_argument(
        "--connect-concurrency", type=int, default=1000, help="students: connects in flight"
    )
    p.add_argument("--timeout", type=float, default=60.0, help="students: whole-run bound (s)")
    p.add_argument("--students", type=int, default=10, help="flood: paced students beside it")
    p.add_argument(
        "--tipos",
        help="question kinds, comma-separated, asked in turn "
        f"(default {CONTENIDO}; flood: {TAREA},{DIFICIL} for the paced students)",
    )
    p.add_argument("--flood-tipo", default=TAREA, help="flood: the flooder's question kind")
    p.add_argument("--interval", type=float, default=0.05, help="flood: seconds between asks")
    p.add_argument("--seconds", type=float, default=None, help="flood/connect-rate duration")
    p.add_argument("--head-start", type=float, default=1.0, help="flood: flooding alone first (s)")
    p.add_argument("--flood-id-bytes", type=int, default=200, help="flood: id length")
    p.add_argument("--flood-reads", action="store_true", help="flood: a greedy flooder that reads")
    p.add_argument("--flood-questions", type=int, default=10_000_000, help="flood: at most N")
    p.add_argument(
        "--answer-timeout", type=float, default=5.0, help="flood: an answer later is lost"
    )
    p.add_argument("--workers", type=int, default=8, help="connect-rate: concurrent workers")
    p.add_argument("--max-connections", type=int, default=1_000_000, help="connect-rate bound")
    p.add_argument("--sessions", type=int, default=3, help="echo-small: fresh-connection sessions")
    p.add_argument("--rounds", type=int, default=20000, help="echo-small: rounds per session")
    p.add_argument("--warmup", type=int, default=200, help="echo-small: untimed rounds first")
    p.add_argument("--cpu", default="", help="echo-small: CPUS to pin, e.g. 0 or 0,1")
    return p.parse_args(argv)


def kinds(text: str | None, default: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in (text or default).split(",") if k.strip())


def run(args: argparse.Namespace) -> dict[str, Any]:
    host, _, port_text = args.to.rpartition(":")
    host, port = host.strip("[]") or "127.0.0.1", int(port_text)
    common = {"server_pid": args.server_pid, "quiet": args.quiet}
    header = {"scenario": args.scenario, "target": f"{host}:{port}", "loop": "none"}
    if args.scenario == "echo-small":
        cpus = [int(c) for c in args.cpu.split(",") if c.strip()]
        result = echo_small(
            host,
            port,
            sessions=args.sessions,
            rounds=args.rounds,
            warmup=args.warmup,
            cpus=cpus,
            **common,
        )
        return {**header, **result}
    header["loop"] = loop_name(args.loop)
    wire = {"codec": args.codec, **common}
    if args.scenario == "students":
        job = students(
            host,
            port,
            n=args.n,
            tipos=kinds(args.tipos, CONTENIDO),
            timeout=args.timeout,
            connect_concurrency=args.connect_concurrency,
            **wire,
        )
    elif args.scenario == "flood":
        job = flood(
            host,
            port,
            students_n=args.students,
            tipos=kinds(args.tipos, f"{TAREA},{DIFICIL}"),
            flood_tipo=args.flood_tipo,
            interval=args.interval,
            seconds=10.0 if args.seconds is None else args.seconds,
            head_start=args.head_start,
            flood_questions=args.flood_questions,
            answer_timeout=args.answer_timeout,
            flood_id_bytes=args.flood_id_bytes,
            flood_reads=args.flood_reads,
            **wire,
        )
    else:
        job = connect_rate(
            host,
            port,
            workers=args.workers,
            seconds=5.0 if args.seconds is None else args.seconds,
            max_connections=args.max_connections,
            tipos=kinds(args.tipos, CONTENIDO),
            **wire,
        )
    return {**header, **asyncio.run(job)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0
