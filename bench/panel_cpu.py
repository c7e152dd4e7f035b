"""What the live panel costs the Profesor: its CPU with the roles' reports and 20 open panels.

A real class on loopback (Profesor, Tareo, Docencio, students as processes). The Profesor's
CPU (user + system, from psutil) is read over fixed windows in these phases:

* ``alone``: the Profesor with no other role (its idle floor);
* ``reports``: the Tareo and the Docencio up and reporting (4 POST /estado a second), idle;
* ``reports+20 panels``: the same, plus 20 panels polling GET /estado as panel.js does
  (one request at a time, the next 400 ms after the last answer);
* ``class`` and ``class+20 panels``: students asking all the time, without and with panels.

The phases with and without panels alternate (ABAB, which goes first swaps) so both see the
same spells of a shared machine's noise. During every window a probe asks ``GET /respuesta``
(the Tareo's call for a Pregunta Dificil) five times a second: its latency says whether the
Profesor's answers stay on time. Run::

    uv run python -m bench.panel_cpu [--window 10] [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import requests

from roles.estado import percentile
from tests.roles_helpers import Procs, wait_for

PANELS = 20
POLL_EVERY = 0.4  # panel.js's POLL_MS
PROBE_EVERY = 0.2


class Pollers:
    """``n`` panels polling GET /estado, in their own process (its threads and GIL are not
    the probe's), each like panel.js: one request at a time, the next 400 ms after."""

    path = "/estado"

    def __init__(self, url: str, n: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop = ctx.Event()
        self.count = ctx.Value("i", 0)
        args = (url + self.path, n, self.stop, self.count)
        self.proc = ctx.Process(target=self.work, args=args)
        self.proc.start()

    @staticmethod
    def work(url: str, n: int, stop: Any, count: Any) -> None:
        _poll_all(url, n, stop, count)

    @property
    def polls(self) -> int:
        return int(self.count.value)

    def close(self) -> None:
        self.stop.set()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


class BrowserPanels(Pollers):
    """``n`` real panels: tabs of one headless Chromium (Playwright, the system browser)
    showing ``/panel``, in their own process. Counts the GET /estado the tabs make."""

    path = "/panel"

    @staticmethod
    def work(url: str, n: int, stop: Any, count: Any) -> None:
        _browse(url, n, stop, count)


def _browse(url: str, n: int, stop: Any, count: Any) -> None:
    from playwright.sync_api import sync_playwright

    def counted(response: Any) -> None:
        if response.url.endswith("/estado"):
            with count.get_lock():
                count.value += 1

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            for _ in range(n):
                page = browser.new_page()
                page.on("response", counted)
                page.goto(url)
            while not stop.is_set():
                browser.contexts[0].pages[0].wait_for_timeout(200)  # let the tabs' events run
        finally:
            browser.close()


def _poll_all(url: str, n: int, stop: Any, count: Any) -> None:
    def poll() -> None:
        session = requests.Session()
        while not stop.is_set():
            try:
                session.get(url, timeout=2).raise_for_status()
                with count.get_lock():
                    count.value += 1
            except requests.RequestException:
                pass
            stop.wait(POLL_EVERY)

    threads = [threading.Thread(target=poll, daemon=True) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def window(profesor: psutil.Process, url: str, seconds: float) -> dict[str, Any]:
    """Profesor CPU (% of one core) over ``seconds``, and GET /respuesta latencies meanwhile."""
    latencies: list[float] = []
    session = requests.Session()
    before, start = profesor.cpu_times(), time.monotonic()
    while time.monotonic() - start < seconds:
        asked = time.perf_counter()
        session.get(url + "/respuesta", timeout=5).raise_for_status()
        latencies.append(time.perf_counter() - asked)
        time.sleep(max(0.0, PROBE_EVERY - (time.perf_counter() - asked)))
    after, elapsed = profesor.cpu_times(), time.monotonic() - start
    cpu = (after.user - before.user) + (after.system - before.system)
    return {"cpu_percent": 100 * cpu / elapsed, "respuesta": latencies}


def measure(
    name: str,
    profesor: psutil.Process,
    url: str,
    seconds: float,
    panels: int,
    kind: type[Pollers] = Pollers,
) -> dict[str, Any]:
    pollers = kind(url, panels) if panels else None
    try:
        if pollers:
            wait_for(lambda: pollers.polls >= 2 * panels, 20)  # every panel polling
        polls = pollers.polls if pollers else 0
        result = window(profesor, url, seconds)
        polls = (pollers.polls if pollers else 0) - polls
    finally:
        if pollers:
            pollers.close()
    result["phase"] = name
    result["polls_per_s"] = polls / seconds
    return result


def alternate(
    names: tuple[str, str],
    profesor: psutil.Process,
    url: str,
    seconds: float,
    rounds: int,
    kind: type[Pollers],
) -> list[dict[str, Any]]:
    results = []
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for i in order:
            results.append(measure(names[i], profesor, url, seconds, PANELS if i else 0, kind))
    return results


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for phase in dict.fromkeys(r["phase"] for r in results):
        mine = [r for r in results if r["phase"] == phase]
        lat = [x for r in mine for x in r["respuesta"]]
        rows.append(
            {
                "phase": phase,
                "windows": len(mine),
                "cpu_percent": [round(r["cpu_percent"], 1) for r in mine],
                "cpu_percent_median": round(statistics.median(r["cpu_percent"] for r in mine), 1),
                "polls_per_s": round(statistics.median(r["polls_per_s"] for r in mine), 1),
                "respuesta_ms_p50": round(1000 * percentile(lat, 50), 2),
                "respuesta_ms_p99": round(1000 * percentile(lat, 99), 2),
                "respuesta_n": len(lat),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", type=float, default=10.0, help="seconds per window")
    parser.add_argument("--rounds", type=int, default=2, help="windows per phase")
    parser.add_argument("--students", type=int, default=3)
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument(
        "--browser", action="store_true", help="real panels: tabs of a headless Chromium"
    )
    args = parser.parse_args(argv)
    kind = BrowserPanels if args.browser else Pollers
    with tempfile.TemporaryDirectory(prefix="panel-cpu-") as tmp:
        procs = Procs(Path(tmp))
        try:
            prof_role = procs.start(
                "profesor", "profesor", "--port", "0", "--db", f"{tmp}/p.sqlite3"
            )
            url = prof_role.address
            profesor = psutil.Process(prof_role.pid)
            results = [measure("alone", profesor, url, args.window, 0)]
            tareo = procs.start("tareo", "tareo", "--port", "0", "--profesor", url)
            docencio = procs.start(
                "docencio",
                *("docencio", "--port", "0", "--tareo", tareo.address, "--profesor", url),
            )

            def up() -> bool:
                roles = requests.get(url + "/estado", timeout=5).json()["roles"]
                return roles["docencio"]["up"] and roles["tareo"]["up"]

            assert wait_for(up, 20), "the roles never reported"
            results += alternate(
                ("reports", f"reports+{PANELS} panels"),
                profesor,
                url,
                args.window,
                args.rounds,
                kind,
            )
            for i in range(args.students):
                procs.start(
                    f"alumno{i}",
                    *("estudiante", "--docencio", docencio.address, "--questions", "0"),
                    *("--interval", "0.02", "--quiet", "--name", f"alumno{i}"),
                    ready=False,
                )

            def asking() -> bool:
                report = requests.get(url + "/estado", timeout=5).json()["roles"]["docencio"]
                return (report["report"] or {}).get("students") == args.students

            assert wait_for(asking, 30), "the students never connected"
            time.sleep(1.0)
            count0 = requests.get(url + "/estado", timeout=5).json()["count"]
            results += alternate(
                ("class", f"class+{PANELS} panels"), profesor, url, args.window, args.rounds, kind
            )
            state = requests.get(url + "/estado", timeout=5).json()
        finally:
            procs.close()
    rows = summarize(results)
    asked = state["count"] - count0
    print(f"Profesor CPU (% of one core), {args.window:g} s windows, {psutil.cpu_count()} cores")
    print(f"(the class counted {asked} answers during its windows)")
    for row in rows:
        print(
            f"  {row['phase']:<22} cpu {row['cpu_percent_median']:5.1f}% "
            f"(windows {row['cpu_percent']}), GET /estado {row['polls_per_s']:5.1f}/s, "
            f"GET /respuesta p50 {row['respuesta_ms_p50']} ms p99 {row['respuesta_ms_p99']} ms"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "answers": asked}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
