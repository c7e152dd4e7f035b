"""The live panel in a real headless Chromium, while a real class runs (real processes).

Runs on the system's browser (Debian's ``chromium``; ``.ci/run`` installs it): Playwright
cannot download its own browsers here. Without a Chromium the test is skipped with the
reason, except in CI (``CI`` set), where it must run and fails instead.

``AYUDANTIA_PANEL_SCREENSHOT=docs/img/panel.png`` also writes the screenshot the README
shows (the test always writes one under its tmp_path).
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from roles_helpers import profesor_count, wait_for

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def find_chromium() -> str | None:
    for candidate in (os.environ.get("AYUDANTIA_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; in CI the browser tests must run (.ci/run installs chromium)")
    pytest.skip(f"{reason}: the browser tests need Debian's chromium (apt-get install chromium)")


@pytest.fixture
def page():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright for Python is not installed")
    chromium = find_chromium()
    if chromium is None:
        missing("no Chromium found (/usr/bin/chromium, chromium on PATH, AYUDANTIA_CHROMIUM)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1200, "height": 900})
            tab.problems = []  # type: ignore[attr-defined]
            tab.on(
                "console",
                lambda m: m.type == "error" and tab.problems.append(f"console: {m.text}"),  # type: ignore[attr-defined]
            )
            tab.on("pageerror", lambda e: tab.problems.append(f"page error: {e}"))  # type: ignore[attr-defined]
            yield tab
        finally:
            browser.close()


def shown_count(tab) -> int | None:
    text = tab.get_attribute("#count", "data-count")
    return int(text) if text else None


@pytest.mark.timeout(90)
def test_the_panel_follows_a_live_class_and_shows_the_tareo_down_and_up(page, procs, tmp_path):
    clase = procs.clase()
    url = clase["profesor"].address
    alumno = procs.start(
        "alumno",
        "estudiante",
        "--docencio",
        clase["docencio"].address,
        "--questions",
        "150",
        "--interval",
        "0.01",
        "--name",
        "Ana",
        ready=False,
    )
    page.goto(url + "/panel")
    assert page.title().startswith("La clase en vivo"), "Spanish by default"
    page.wait_for_selector('#role-docencio[data-up="true"]', timeout=10_000)
    page.wait_for_selector('#role-tareo[data-up="true"]', timeout=10_000)

    shot = tmp_path / "panel.png"
    seen = set()  # the count as the page showed it while the class asked
    for _ in range(600):  # at most a minute: a student that hangs fails below, not here
        if alumno.proc.poll() is not None or len(seen) >= 200:
            break
        seen.add(shown_count(page))
        if not shot.exists() and (shown_count(page) or 0) >= 100:  # mid-class, all up
            page.screenshot(path=str(shot), full_page=True)
        page.wait_for_timeout(100)
    assert alumno.proc.wait(30) == 0, alumno.stderr()
    # The Docencio answers once a key is committed to its outbox; the poster takes it to
    # the Profesor a moment later (POST_GATHER, then HTTP): the count catches up, exactly.
    assert wait_for(lambda: profesor_count(url) >= 150, 10), profesor_count(url)
    final = profesor_count(url)
    assert final == 150
    assert wait_for(lambda: shown_count(page) == final, 10), (shown_count(page), final)
    assert len(seen - {None, 0, final}) >= 1, (
        f"the page followed the count: {sorted(seen - {None})}"
    )
    page.wait_for_function("document.querySelector('#by-por tbody').rows.length === 3")
    by_kind = page.inner_text("#by-kind")
    assert "Tarea" in by_kind and "Contenido" in by_kind and "Pregunta Dificil" in by_kind
    assert page.inner_text("#codec") == "json"

    if not shot.exists():  # the class was quicker than the page: the end of it, then
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("AYUDANTIA_PANEL_SCREENSHOT"):
        target = Path(os.environ["AYUDANTIA_PANEL_SCREENSHOT"])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)

    assert clase["tareo"].stop(signal.SIGINT) == 0
    page.wait_for_selector('#role-tareo[data-up="false"]', timeout=2_000)  # within 2 s
    assert page.inner_text("#role-tareo .state") == "caído"
    procs.start("tareo", "tareo", "--port", "0", "--profesor", url)
    page.wait_for_selector('#role-tareo[data-up="true"]', timeout=10_000)
    assert page.inner_text("#role-tareo .state") == "arriba"
    assert page.problems == [], page.problems  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
def test_the_panel_speaks_english_when_asked(page, procs):
    profesor = procs.start("profesor", "profesor", "--port", "0", "--db", str(procs.logdir / "p"))
    page.goto(profesor.address + "/panel?lang=en")
    assert page.title().startswith("The class, live")
    page.wait_for_selector('#role-profesor[data-up="true"]', timeout=10_000)
    assert page.inner_text("#role-tareo .age") == "no report yet"
    assert page.problems == [], page.problems  # type: ignore[attr-defined]


XSS = "<img src=x onerror=window.__pwned=1>"


@pytest.mark.timeout(60)
def test_hostile_reports_show_as_text_and_never_freeze_the_page(page, procs):
    """Reported names are text, never markup; a latency that overflows to Infinity in ms
    once froze the page (the chart's tick loop never ended)."""
    import requests

    profesor = procs.start("profesor", "profesor", "--port", "0", "--db", str(procs.logdir / "p"))
    url = profesor.address
    hostile = {"by_kind": {XSS: 1}, "wire": {"codec": XSS, "encoding": "<b>x</b>", "chunk_size": 0}}
    body = {"role": "docencio", "pid": 1, "report": hostile}
    assert requests.post(url + "/estado", json=body, timeout=5).status_code == 204
    state = requests.get(url + "/estado", timeout=5).json()
    state["history"] = {"t": [-1.0, -0.5], "rate": [1, 2], "p50": [1e306, 1e306]}
    state["history"].update(p95=[None, None], p99=[None, None])
    page.route("**/estado", lambda route: route.fulfill(json=state))
    page.goto(url + "/panel")
    page.wait_for_selector('#updated[data-state="live"]', timeout=10_000)
    assert page.evaluate("1 + 1") == 2, "the page still runs its script"
    assert page.inner_text("#codec") == XSS and page.inner_text("#encoding") == "<b>x</b>"
    assert XSS in page.inner_text("#by-kind")
    assert page.evaluate("window.__pwned") is None and page.query_selector("img") is None
    assert page.problems == [], page.problems  # type: ignore[attr-defined]
    refused = page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.__x = 1';"
        " document.body.append(s); return window.__x === undefined; }"
    )
    assert refused, "the page's policy runs no inline script, should markup ever get in"
