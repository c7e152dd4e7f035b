"""Signed HTTP requests to the Profesor: who may change the count.

Without this, anyone who reaches the Profesor raises or fakes the count with one POST. With
a key, every write (POST, PUT, PATCH, DELETE on any route: /preguntas today, /estado
tomorrow) must carry::

    X-Ayudantia-Auth: v1 ts=<unix seconds> nonce=<32 hex> sig=<64 hex>
    sig = HMAC-SHA256(key, "ayudantia/1 http" LF METHOD LF path LF ts LF nonce LF body)

``path`` is the request target: the path, then ``?`` and the query string exactly as sent
when there is one (a signed write cannot be replayed or rewritten with other arguments),
``body`` the raw body bytes. A path with a control character is refused (it could blur the
line-feed-separated fields). The
Profesor answers 401 (and counts nothing) when the header is missing or malformed, the
signature does not verify, ``ts`` is more than ``WINDOW`` seconds off its clock either way,
or the nonce was already used within the window. Nonces are remembered until their
request's window ends, so the memory is bounded by the requests one window can hold
(``MAX_NONCES``; past that, 429 until some expire). Reads stay open unless ``private``.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from flask import Flask, Response

HEADER: Final = "X-Ayudantia-Auth"
SCHEME: Final = "v1"
WINDOW: Final = 30.0  # seconds either side of the Profesor's clock
MAX_NONCES: Final = 100_000
WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PARSE: Final = re.compile(r"v1 ts=(\d{1,12}) nonce=([0-9a-f]{32}) sig=([0-9a-f]{64})")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")  # could blur the line-separated fields


def target(path: str, query: str | bytes = "") -> str:
    """What a signature covers of the URL: ``path``, plus ``?query`` when there is one."""
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    return f"{path}?{query}" if query else path


def signature(key: bytes, method: str, path: str, ts: str, nonce: str, body: bytes) -> str:
    """The hex HMAC of one request (see the module docstring for the exact bytes)."""
    head = "\n".join(("ayudantia/1 http", method.upper(), path, ts, nonce, "")).encode()
    return hmac.new(key, head + body, hashlib.sha256).hexdigest()


def sign_headers(
    key: bytes, method: str, path: str, body: bytes, *, now: Callable[[], float] = time.time
) -> dict[str, str]:
    """The header that authenticates one request (a fresh nonce each call)."""
    ts, nonce = str(int(now())), secrets.token_hex(16)
    sig = signature(key, method, path, ts, nonce, body)
    return {HEADER: f"{SCHEME} ts={ts} nonce={nonce} sig={sig}"}


class NonceBook:
    """Nonces seen within the window, each forgotten once its request could not be fresh."""

    def __init__(self, limit: int = MAX_NONCES) -> None:
        self.limit = limit
        # A heap, not a queue: each expiry is the client's ts + window, so they arrive in
        # any order (a deque kept every expired nonce behind one stamped 30 s ahead).
        self._expiry: list[tuple[float, str]] = []
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def claim(self, nonce: str, until: float, now: float) -> str | None:
        """Record ``nonce``; why not (reused, or the book is full), or None when fresh."""
        with self._lock:
            while self._expiry and self._expiry[0][0] < now:
                self._seen.discard(heapq.heappop(self._expiry)[1])
            if nonce in self._seen:
                return "reused"
            if len(self._seen) >= self.limit:
                return "full"
            self._seen.add(nonce)
            heapq.heappush(self._expiry, (until, nonce))
            return None


class Verifier:
    """Checks the header of one request; the reason for a 401, or None."""

    def __init__(
        self, key: bytes, *, window: float = WINDOW, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = key
        self.window = window
        self.clock = clock
        self.nonces = NonceBook()

    def check(self, method: str, path: str, header: str | None, body: bytes) -> str | None:
        if not header:
            return f"this Profesor requires signed requests ({HEADER} header)"
        match = _PARSE.fullmatch(header.strip())
        if match is None:
            return f"malformed {HEADER} header"
        ts, nonce, sig = match.groups()
        if _CONTROL.search(path):
            return "the request's path has a control character"
        if not hmac.compare_digest(sig, signature(self._key, method, path, ts, nonce, body)):
            return "the request's signature does not verify (wrong key or altered request)"
        now = self.clock()
        if abs(now - int(ts)) > self.window:
            return f"the request's timestamp is more than {self.window:g} s from the Profesor's"
        verdict = self.nonces.claim(nonce, int(ts) + self.window, now)
        if verdict == "reused":
            return "the request's nonce was already used (a replayed request)"
        if verdict == "full":
            return "full"
        return None


def require_signed(app: Flask, key: bytes, *, private: bool = False) -> Verifier:
    """Refuse unsigned writes (every read too when ``private``) on every route of ``app``.

    A ``before_request`` hook, so a route added later (``POST /estado``) is covered without
    a line of its own. It runs before any view: a refused request counts nothing.
    """
    from flask import request

    verifier = Verifier(key)

    def check() -> Response | None:
        if request.method not in WRITE_METHODS and not private:
            return None
        if "?" in request.path:  # from %3F: "/a?b" would sign as "/a" with the query "b"
            return _refusal(401, "the request's path has an encoded '?'")
        reason = verifier.check(
            request.method,
            target(request.path, request.query_string),
            request.headers.get(HEADER),
            request.get_data(cache=True),  # cached: the view reads the same bytes
        )
        if reason is None:
            return None
        if reason == "full":
            return _refusal(429, "too many signed requests in the window; try again")
        return _refusal(401, reason)

    app.before_request(check)
    return verifier


def _refusal(status: int, reason: str) -> Any:
    from flask import jsonify

    response = jsonify({"error": reason})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = f'{HEADER} realm="profesor"'
    return response
