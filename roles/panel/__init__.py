"""The Profesor's live panel and the class's state: ``/panel`` and ``/estado``.

``GET /panel`` is one page (``panel.html``, ``panel.css``, ``panel.js`` beside this file,
shipped in the package: nothing from a CDN, no build step). Its labels come from the
gettext domain ``panel`` in the reader's language (``?lang=es|en``, Spanish by default):
the server writes them into the page. The page polls ``GET /estado`` a few times a second;
each poll is one short request, so open panels never hold a waitress thread, and the
JSON is built at most once per :data:`CACHE_FOR` seconds however many panels ask.

``POST /estado`` takes the Docencio's and the Tareo's reports (:mod:`roles.estado`). It
never touches the count.
"""

from __future__ import annotations

import html
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from roles.estado import MAX_REPORT_BYTES, BadReport, Estado

if TYPE_CHECKING:
    from flask import Flask, Response

HERE = Path(__file__).parent
DOMAIN = "panel"
DEFAULT_LANG = "es"
CACHE_FOR = 0.1  # seconds one GET /estado answer is reused: 20 panels cost one snapshot
ASSETS = {"panel.css": "text/css; charset=utf-8", "panel.js": "text/javascript; charset=utf-8"}
_MESSAGE = re.compile(r"\{\{(.+?)\}\}")
# The page runs only its own files: were a reported string ever to reach the DOM as markup,
# no inline script or foreign resource could run or load. Its texts are inert JSON data.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def render(lang: str) -> str:
    """The page in ``lang``: each ``{{English text}}`` translated, and the script's texts."""
    from roles.i18n import catalog_ids, translator

    _ = translator(lang, DOMAIN)
    page = (HERE / "panel.html").read_text(encoding="utf-8")
    texts = {msgid: _(msgid) for msgid in catalog_ids("en", DOMAIN)}
    script_texts = json.dumps(texts, ensure_ascii=False).replace("</", "<\\/")
    page = page.replace("__LANG__", lang).replace("__TEXTS__", script_texts)
    return _MESSAGE.sub(lambda m: html.escape(_(m.group(1))), page)


class _Cached:
    """The latest answer of a function, reused for ``ttl`` seconds (one builder at a time)."""

    def __init__(self, build: Callable[[], bytes], ttl: float) -> None:
        self.build = build
        self.ttl = ttl
        self._lock = threading.Lock()
        self._value = b""
        self._at = -float("inf")

    def get(self) -> bytes:
        with self._lock:
            now = time.monotonic()
            if now - self._at >= self.ttl:
                self._value = self.build()
                self._at = now
            return self._value


def add_routes(app: Flask, count: Callable[[], int]) -> Estado:
    """Add ``/panel``, its assets and ``GET|POST /estado`` to the Profesor's ``app``."""
    from flask import Response, request

    from roles.i18n import languages

    estado = Estado()
    app.extensions["estado"] = estado
    assets = {name: (HERE / name).read_bytes() for name in ASSETS}
    state_json = _Cached(
        lambda: json.dumps(estado.snapshot(count()), ensure_ascii=False).encode(), CACHE_FOR
    )

    def error(status: int, reason: str) -> Response:
        body = json.dumps({"error": reason}, ensure_ascii=False)
        return Response(body, status=status, content_type="application/json")

    @app.route("/estado", methods=["GET"], endpoint="estado_get")
    def estado_get() -> Response:
        response = Response(state_json.get(), content_type="application/json")
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.route("/estado", methods=["POST"], endpoint="estado_post")
    def estado_post() -> Response:
        # JSON only: a text/plain or form POST is what any web page may send to loopback
        # cross-origin without a CORS preflight; application/json needs one, never granted.
        if request.mimetype != "application/json":
            return error(415, "a report is sent as Content-Type: application/json")
        if (request.content_length or 0) > MAX_REPORT_BYTES:
            return error(413, f"a report is at most {MAX_REPORT_BYTES} bytes")
        data = request.get_data(cache=False)
        if len(data) > MAX_REPORT_BYTES:
            return error(413, f"a report is at most {MAX_REPORT_BYTES} bytes")
        try:
            estado.accept(json.loads(data), count())
        except (ValueError, RecursionError) as exc:  # BadReport, bad JSON, bad UTF-8
            reason = str(exc) if isinstance(exc, BadReport) else f"not JSON: {exc}"
            return error(400, reason[:300])
        return Response(status=204)

    @app.route("/panel", methods=["GET"])
    def panel() -> Response:
        lang = request.args.get("lang", DEFAULT_LANG)
        if lang not in languages():
            return error(400, f"lang must be one of {', '.join(languages())}, not {lang[:20]!r}")
        response = Response(render(lang), content_type="text/html; charset=utf-8")
        response.headers.update(PAGE_HEADERS)
        return response

    @app.route("/panel/<name>", methods=["GET"])
    def panel_asset(name: str) -> Response:
        if name not in assets:
            return error(404, f"no such panel file: {name[:60]!r}")
        return Response(assets[name], content_type=ASSETS[name])

    return estado
