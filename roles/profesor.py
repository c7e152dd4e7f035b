"""El Profesor: the notebook's Flask app, with a count that survives and is never doubled.

Routes and shapes are the notebook's, exactly::

    GET  /            {"saludo": "Bienvenido a la clase"}
    GET  /respuesta   {"texto": <one of the four>, "método": "GET"}
    GET  /respuesta?n=K   the same, plus "textos": K answers, each drawn on its own
    GET  /preguntas   {"texto": "Llevamos: N preguntas respondidas", "método": "GET"}
    POST /preguntas   same, "método": "POST", after counting

``?n=K`` is ours, not the notebook's: the Tareo asks once for every hard question that
waited while its previous calls ran (at most :data:`MAX_RESPUESTAS`), as the Docencio posts
its count keys in batches. One request per hard question was most of the class's CPU (a
``requests`` call in the Tareo and a Flask request here, about 1 ms of CPU between them,
py-spy and yappi, issue 23). Without ``n`` the route is exactly the notebook's.

What changed: the count lives in SQLite (WAL; one connection per thread), so it survives a
restart and concurrent POSTs cannot lose an increment. A POST whose body carries a question
id (``{"id": ...}``, or a batch ``{"ids": [...]}``) counts each id once however often it
is retried (``INSERT OR IGNORE``); a POST with no body counts one, as in the notebook.
Bodies are negotiated: JSON unless the request asks for msgpack (``Content-Type`` for what
it sends, ``Accept`` for what it wants); pickle only when this Profesor runs with
``--codec pickle`` (415 otherwise). Bad bodies get 400, oversized ones 413, and the count
does not move.

This module also holds the two clients of that API the other roles use:
:class:`ProfesorClient` (one GET or POST, with timeouts) and :class:`Conteo` (the
Docencio's background poster that retries until the Profesor has counted every id).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import sqlite3
import threading
import time
from pathlib import Path
from random import SystemRandom
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from protocol import codecs
from protocol.codecs import accept_for
from protocol.errors import CodecError
from protocol.tls import TlsSettings
from roles.clase import PROFESOR_PORT, RESPUESTAS, http_codec, http_decode, http_headers
from roles.profesor_auth import require_signed, sign_headers, target

if TYPE_CHECKING:  # flask is imported where the app is built: the clients do not need it
    from flask import Flask

MAX_BODY = 1024 * 1024  # a batch of ids fits easily; anything bigger is refused (413)
MAX_IDS = 10_000
MAX_RESPUESTAS = 1000  # answers one GET /respuesta?n=K may ask for
_N_RE = re.compile(r"[1-9][0-9]{0,3}")
_COUNT_RE = re.compile(r"Llevamos: (\d+) preguntas respondidas")

log = logging.getLogger("ayudantia.profesor")


def default_db_path() -> Path:
    """Our own data directory (created if needed: the only one this module ever creates)."""
    from platformdirs import user_data_dir

    home = Path(user_data_dir("ayudantia"))
    home.mkdir(parents=True, exist_ok=True)
    return home / "profesor.sqlite3"


class Libro:
    """The gradebook: which question ids were counted, and how many answers in total."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            # Never create directories here: a typo (--db /nonexistent/x.db) is an error.
            where = Path(self.path)
            if where.is_dir():
                raise ValueError(f"the gradebook {where} is a directory, not a SQLite file")
            if not where.parent.is_dir():
                raise ValueError(f"the gradebook's directory {where.parent} does not exist")
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        db = self._db()
        with db:
            db.execute("CREATE TABLE IF NOT EXISTS contadas (id TEXT PRIMARY KEY)")
            db.execute("CREATE TABLE IF NOT EXISTS contador (k INTEGER PRIMARY KEY, n INTEGER)")
            db.execute("INSERT OR IGNORE INTO contador (k, n) VALUES (0, 0)")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # check_same_thread=False only so close() can run on the thread that stops the
            # server; each connection is still used by the one thread that opened it.
            db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a 200 means the count survives a power cut too (the Docencio then deletes
            # the keys from its outbox); NORMAL in WAL mode survives only a process crash.
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    def count(self) -> int:
        return int(self._db().execute("SELECT n FROM contador WHERE k = 0").fetchone()[0])

    def add(self, ids: list[str] | None) -> int:
        """Count ``ids`` (each once, ever), or one anonymous answer when None; the new total."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            if ids is None:
                new = 1
            else:
                before = db.total_changes
                db.executemany(
                    "INSERT OR IGNORE INTO contadas (id) VALUES (?)", [(i,) for i in ids]
                )
                new = db.total_changes - before
            if new:
                db.execute("UPDATE contador SET n = n + ? WHERE k = 0", (new,))
            total = int(db.execute("SELECT n FROM contador WHERE k = 0").fetchone()[0])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return total

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            self._all.clear()


class BadBody(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        super().__init__(reason)


def create_app(
    db_path: str | Path | None = None,
    codec: str = "json",
    *,
    max_body: int = MAX_BODY,
    key: bytes | None = None,
    private: bool = False,
) -> Flask:
    """The Profesor's Flask app; ``codec`` is this Profesor's ``--codec`` (pickle opts in).

    With a ``key`` every write must be a signed request (reads too when ``private``): see
    :mod:`roles.profesor_auth`.
    """
    from flask import Flask, Response, request

    if max_body < 1:
        raise ValueError(f"max_body must be at least 1 byte, not {max_body}")

    libro = Libro(db_path if db_path is not None else default_db_path())
    accepted = accept_for(codec) - {"raw"}
    rng = SystemRandom()
    app = Flask("profesor")
    app.config["MAX_CONTENT_LENGTH"] = max_body
    app.config["JSON_AS_ASCII"] = False
    app.extensions["libro"] = libro

    @app.before_request
    def one_host() -> None:
        # RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request with no Host, or
        # with more than one (the WSGI servers join repeated headers with a comma, which no
        # host contains). First of the checks, so that an unsigned request lacking it is a
        # 400 and not a 401.
        host = request.environ.get("HTTP_HOST")
        if request.environ.get("SERVER_PROTOCOL") == "HTTP/1.1" and (not host or "," in host):
            raise BadBody(400, "an HTTP/1.1 request needs one Host header (RFC 9112 §3.2)")

    if key is not None:
        require_signed(app, key, private=private)

    def reply(obj: dict[str, Any], status: int = 200) -> Response:
        chosen = codecs.get("json")
        accept = request.accept_mimetypes
        for name in ("msgpack", "pickle"):
            candidate = codecs.get(name)
            if name in accepted and accept.quality(candidate.content_type) > accept.quality(
                "application/json"
            ):
                chosen = candidate
                break
        return Response(chosen.encode(obj), status=status, content_type=chosen.content_type)

    def body_ids() -> list[str] | None:
        data = request.get_data(cache=False)
        if not data:
            return None
        codec = http_codec(request.content_type) or (
            codecs.get("json") if not request.content_type else None
        )
        if codec is None:
            raise BadBody(415, f"unsupported Content-Type {request.content_type!r}")
        if codec.name not in accepted:
            raise BadBody(
                415,
                f"{codec.name} bodies are refused (this Profesor accepts: "
                f"{', '.join(sorted(accepted))})",
            )
        try:
            body = codec.decode(data, max_message=max_body)
        except CodecError as exc:
            raise BadBody(400, str(exc)) from None
        if not isinstance(body, dict):
            raise BadBody(400, "the body must be a map")
        if "ids" in body:
            ids = body["ids"]
            if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS:
                raise BadBody(400, f"'ids' must be a list of 1 to {MAX_IDS} ids")
        elif "id" in body:
            ids = [body["id"]]
        else:
            return None
        for i in ids:
            if not (isinstance(i, str | int) and not isinstance(i, bool)) or len(str(i)) > 256:
                raise BadBody(400, "an id is a str or int of at most 256 characters")
        return [str(i) for i in ids]

    @app.errorhandler(BadBody)
    def bad_body(exc: BadBody) -> Response:
        return reply({"error": str(exc)}, exc.status)

    @app.errorhandler(413)
    def too_large(exc: Exception) -> Response:
        return reply({"error": f"body larger than {max_body} bytes"}, 413)

    @app.route("/", methods=["GET"])
    def hello_world() -> Response:
        return reply({"saludo": "Bienvenido a la clase"})

    def wanted() -> int | None:
        """``n`` of ``GET /respuesta?n=K`` (None: the notebook's call); 400 unless 1..MAX."""
        given = request.args.getlist("n")
        if not given:
            return None
        if len(given) > 1 or not _N_RE.fullmatch(given[0]) or int(given[0]) > MAX_RESPUESTAS:
            raise BadBody(400, f"'n' must be one whole number from 1 to {MAX_RESPUESTAS}")
        return int(given[0])

    @app.route("/respuesta", methods=["GET"])
    def respuesta() -> Response:
        n = wanted()
        if n is None:
            return reply({"texto": rng.choice(RESPUESTAS), "método": "GET"})
        textos = [rng.choice(RESPUESTAS) for _ in range(n)]
        return reply({"texto": textos[0], "textos": textos, "método": "GET"})

    @app.route("/preguntas", methods=["GET", "POST"])
    def respuesta_ingeniosa() -> Response:
        if request.method == "POST":
            total = libro.add(body_ids())
            return reply({"texto": f"Llevamos: {total} preguntas respondidas", "método": "POST"})
        return reply({"texto": f"Llevamos: {libro.count()} preguntas respondidas", "método": "GET"})

    from roles.panel import add_routes

    add_routes(app, libro.count)  # GET /panel, GET|POST /estado: the class seen live
    return app


def serve(app: Flask, host: str, port: int, *, threads: int = 8, ready: Any = None) -> int:
    """Serve ``app`` with waitress until SIGINT/SIGTERM; then close every socket. Returns 0.

    ``ready(host, port)`` is called once the socket listens (port 0 picks a free one).
    """
    from roles.signals import signals_interrupt

    if threads < 1:  # waitress with no worker thread accepts requests and never answers
        raise ValueError(f"threads must be at least 1, not {threads}")
    from waitress import wasyncore
    from waitress.server import create_server

    server = create_server(
        app, host=host, port=port, threads=threads, ident="profesor", channel_timeout=30
    )
    bound_host, bound_port = server.effective_host, server.effective_port  # type: ignore[union-attr]
    log.info("Profesor escuchando en http://%s:%s", bound_host, bound_port)

    try:
        # The handlers before the ready line: a signal right after it must stop us cleanly.
        with signals_interrupt():
            try:
                if ready is not None:
                    ready(bound_host, bound_port)
                server.run()  # returns after shutting the worker threads down on ^C
            except KeyboardInterrupt:
                server.task_dispatcher.shutdown()  # type: ignore[union-attr]
    finally:
        wasyncore.close_all(server._map)  # type: ignore[union-attr]
        libro = app.extensions.get("libro")
        if libro is not None:
            libro.close()
        log.info("Profesor detenido")
    return 0


# -- clients of the Profesor's API ----------------------------------------------------------


def parse_count(texto: str) -> int:
    match = _COUNT_RE.search(texto)
    if match is None:
        raise ValueError(f"not a count: {texto!r}")
    return int(match.group(1))


class ProfesorClient:
    """The Profesor's API over HTTP, in this role's codec, with a timeout on every call."""

    def __init__(
        self,
        url: str,
        codec: str = "json",
        *,
        timeout: float = 5.0,
        key: bytes | None = None,
        tls: TlsSettings | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.key = key  # signs every request (roles.profesor_auth)
        self.tls = (
            tls or TlsSettings()
        )  # HTTPS: trust --tls-ca (else the system's), show --tls-cert
        self.codec = codec
        self.timeout = timeout
        self.accept = accept_for(codec, warn=False)
        self.headers = http_headers(codec)
        self.batching = True  # whether the Profesor answers GET /respuesta?n=K (respuestas)
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # What requests takes from the environment (proxies, REQUESTS_CA_BUNDLE over our
            # verify=True, ~/.netrc credentials), read once per session instead of on every
            # call: it walked os.environ twice and looked for a netrc file per request, a
            # third of a call's CPU in the Tareo (yappi, issue 23). The environment of a
            # running role does not change, and every call goes to this one URL.
            found = session.merge_environment_settings(
                self.url, {}, None, self.tls.requests_verify, self.tls.requests_cert
            )
            self._local.settings = {
                "proxies": found["proxies"],
                "verify": found["verify"],
                "cert": found["cert"],
                "auth": requests.utils.get_netrc_auth(self.url),
            }
            session.trust_env = False  # what it gave is in settings, passed with each call
            self._local.session = session
        return session

    def send(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str]
    ) -> requests.Response:
        """One request as every role makes it: signed with the key, over TLS when told,
        with both timeouts. The response is not decoded (see :meth:`_call`)."""
        if self.key is not None:
            url = urlsplit(self.url + path)
            where = target(url.path, url.query)
            headers = {**headers, **sign_headers(self.key, method, where, data or b"")}
        session = self.session
        return session.request(
            method,
            self.url + path,
            data=data,
            headers=headers,
            timeout=(min(2.0, self.timeout), self.timeout),
            **self._local.settings,  # verify, cert, proxies and auth, as the environment says
        )

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        data = None if body is None else codecs.get(self.codec).encode(body)
        response = self.send(method, path, data, self.headers)
        if response.status_code == 415 and self.codec != "json":
            # a Profesor that refuses our codec still speaks JSON: fall back, loudly, once
            log.warning("el Profesor rechaza %s; usando json", self.codec)
            self.codec, self.headers = "json", http_headers("json")
            return self._call(method, path, body)
        response.raise_for_status()
        obj = http_decode(response.headers.get("Content-Type"), response.content, self.accept)
        if not isinstance(obj, dict):
            raise CodecError(f"the Profesor answered {type(obj).__name__}, not a map")
        return obj

    def respuesta(self) -> str:
        texto = self._call("GET", "/respuesta").get("texto")
        if not isinstance(texto, str):
            raise CodecError("the Profesor's answer has no 'texto'")
        return texto

    def respuestas(self, n: int) -> list[str]:
        """``n`` answers in one ``GET /respuesta?n=K`` (the notebook's call when ``n`` is 1).

        A Profesor that does not know ``n`` (the notebook's own) answers one ``texto``: then
        the rest are asked one by one, and so is every later batch (``batching`` False).
        """
        if not 1 <= n <= MAX_RESPUESTAS:
            raise ValueError(f"n must be from 1 to {MAX_RESPUESTAS}, not {n}")
        textos: list[str] = []
        while len(textos) < n:
            textos += self.respuestas_once(n - len(textos))
        return textos

    def respuestas_once(self, n: int) -> list[str]:
        """From 1 to ``n`` answers in one call: ``n`` from a Profesor that answers
        ``GET /respuesta?n=K``, one from the notebook's own, which ignores ``n`` (then
        ``batching`` turns False and every later call is the notebook's ``GET /respuesta``).

        One call and no more, so a caller that gives each question a deadline (the Tareo's
        ``queue_timeout``) looks at it again before asking for the rest: asking the rest
        one by one here, blind, asked questions long past their deadline.
        """
        if not 1 <= n <= MAX_RESPUESTAS:
            raise ValueError(f"n must be from 1 to {MAX_RESPUESTAS}, not {n}")
        if n == 1 or not self.batching:
            return [self.respuesta()]
        body = self._call("GET", f"/respuesta?n={n}")
        textos = body.get("textos")
        if textos is None and isinstance(body.get("texto"), str):
            log.warning(
                "el Profesor no responde varias preguntas a la vez; se le pregunta una a una"
            )
            self.batching = False
            return [body["texto"]]
        if (
            not isinstance(textos, list)
            or len(textos) != n
            or not all(isinstance(t, str) for t in textos)
        ):
            raise CodecError(f"the Profesor's answer has no 'textos' of {n} texts")
        return textos

    def count(self) -> int:
        return parse_count(str(self._call("GET", "/preguntas").get("texto")))

    def post_ids(self, ids: list[str]) -> int:
        body = {"id": ids[0]} if len(ids) == 1 else {"ids": ids}
        return parse_count(str(self._call("POST", "/preguntas", body).get("texto")))

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()


class Conteo:
    """Posts answered questions' count keys to the Profesor from a thread, in batches.

    :meth:`add` never blocks (the queue is bounded: past ``maxlen`` the oldest keys that
    are not being posted are dropped and counted in ``lost``). While the Profesor is away the
    thread retries with backoff (50 ms doubling to 2 s), so the count catches up after an
    outage. A batch the Profesor refuses as malformed (a 4xx other than 408/429) is not
    retried forever: it is logged, counted in ``rejected`` and dropped, so one bad key can
    never stop the counting behind it. :meth:`close` gives it ``flush`` seconds to post what
    is left. The thread is the only place ``requests`` runs for the Docencio: never its loop.
    """

    def __init__(self, client: ProfesorClient, *, maxlen: int = 100_000, batch: int = 500) -> None:
        self.client = client
        self.batch = batch
        self.maxlen = maxlen
        self._queue: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._flush_until = 0.0
        self.posted = 0
        self.lost = 0
        self.rejected = 0
        self._inflight = 0  # keys taken out of the queue for the post under way
        self.last_count: int | None = None
        self._thread = threading.Thread(target=self._run, name="conteo", daemon=True)
        self._thread.start()

    def add(self, key: str) -> None:
        with self._cond:
            if len(self._queue) >= self.maxlen:
                self._queue.popleft()
                self.lost += 1
            self._queue.append(key)
            self._cond.notify()

    @property
    def backlog(self) -> int:
        with self._cond:
            return len(self._queue) + self._inflight

    def _next_batch(self) -> list[str] | None:
        """Take the next batch out of the queue (so an overflow cannot drop keys in flight)."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            self._inflight = 0
            if not self._queue or (self._closing and time.monotonic() > self._flush_until):
                return None
            batch = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
            self._inflight = len(batch)
            return batch

    def _run(self) -> None:
        delay = 0.05
        ids = self._next_batch()
        while ids is not None:
            try:
                self.last_count = self.client.post_ids(ids)
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                if 400 <= status < 500 and status not in (408, 429):
                    log.error("el Profesor rechazó %d claves (%s); no se reintentan", len(ids), exc)
                    self.rejected += len(ids)
                    self._rejected(ids)
                    ids = self._next_batch()
                    continue
                delay = self._wait_retry(exc, delay)
                if delay is None:
                    self._put_back(ids)
                    return
                continue
            except (requests.RequestException, CodecError, ValueError) as exc:
                delay = self._wait_retry(exc, delay)
                if delay is None:
                    self._put_back(ids)
                    return
                continue
            delay = 0.05
            self.posted += len(ids)
            self._acknowledged(ids)
            log.debug("Contador de preguntas actualizado: %s", self.last_count)
            ids = self._next_batch()

    def _wait_retry(self, exc: Exception, delay: float) -> float | None:
        """Sleep before a retry; None when closing and the flush time is over.

        The whole ``delay``, whatever wakes the condition meanwhile: new keys notify it
        (:meth:`add`, the outbox's poke for every written delivery mark), and a wait they
        cut short made the backoff none. With the Profesor down and answers coming, the
        Docencio posted (and logged) once per loop commit: 506 attempts in 3 s, not 7.
        """
        log.info("Profesor no disponible para contar (%s); reintento en %.2f s", exc, delay)
        until = time.monotonic() + delay
        with self._cond:
            while True:
                if self._closing and until > self._flush_until:
                    return None
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        return min(delay * 2, 2.0)

    def _acknowledged(self, ids: list[str]) -> None:
        """The Profesor has ``ids`` (or refused them for good): a hook for a durable queue."""

    def _rejected(self, ids: list[str]) -> None:
        """Refused for good (a 4xx): dropped here; a durable queue may keep them."""
        self._acknowledged(ids)

    def _put_back(self, ids: list[str]) -> None:
        with self._cond:
            self._queue.extendleft(reversed(ids))
            self._inflight = 0

    def close(self, flush: float = 5.0) -> None:
        with self._cond:
            self._closing = True
            self._flush_until = time.monotonic() + flush
            self._cond.notify_all()
        self._thread.join(flush + self.client.timeout + 1)
        self.client.close()
        left = self.backlog
        if left:
            log.warning(
                "%d preguntas respondidas quedan sin contar: el Profesor no las recibió en %g s",
                left,
                flush,
            )


__all__ = [
    "PROFESOR_PORT",
    "Conteo",
    "Libro",
    "ProfesorClient",
    "create_app",
    "default_db_path",
    "parse_count",
    "serve",
]
