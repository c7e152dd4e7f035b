"""The Informante: a role's live report to the Profesor's panel, from a thread of its own.

Every :data:`~roles.estado.REPORT_EVERY` seconds it takes a snapshot of the role's counters
and POSTs it to the Profesor's ``/estado`` with ``requests``. Only the newest snapshot
exists: when the Profesor is away that report is dropped and counted, nothing queues, and
the role's loop never waits for it. Reports are not the count: ``POST /preguntas`` alone
moves the count. Apart from :mod:`roles.estado` because it is the Profesor's client
(:class:`~roles.profesor.ProfesorClient`), and the Profesor's panel imports the store.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from roles.estado import JSON_HEADERS, REPORT_EVERY
from roles.profesor import ProfesorClient

if TYPE_CHECKING:
    from protocol.tls import TlsSettings

__all__ = ["Informante"]

log = logging.getLogger("ayudantia.estado")


class Informante:
    """POSTs ``snapshot()`` to ``{profesor}/estado`` every ``every`` seconds, from its thread.

    Drops a report the Profesor does not take at once (away, slow, refusing): the next one
    carries newer numbers anyway. On :meth:`close` it says goodbye (``"bye": true``), so a
    role that stops cleanly shows as down at once; one that dies shows as down when its
    reports stop coming.
    """

    def __init__(
        self,
        profesor: str,
        role: str,
        snapshot: Callable[[], dict[str, Any]],
        *,
        every: float = REPORT_EVERY,
        timeout: float = 0.4,
        key: bytes | None = None,
        tls: TlsSettings | None = None,
    ) -> None:
        # Signed with the class's key and over TLS like the count's posts: a keyed
        # Profesor refuses unsigned writes, and /estado is a write.
        self.client = ProfesorClient(profesor, "json", timeout=timeout, key=key, tls=tls)
        self.role = role
        self.snapshot = snapshot
        self.every = every
        self.sent = 0
        self.dropped = 0
        self.refused = 0  # of the dropped: those the Profesor answered with an error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"informante-{role}", daemon=True)

    def start(self) -> Informante:
        self._thread.start()
        return self

    def _run(self) -> None:
        next_at = time.monotonic()
        try:
            while not self._stop.wait(max(0.0, next_at - time.monotonic())):
                next_at = max(next_at + self.every, time.monotonic())  # late: no catch-up burst
                try:
                    report = self.snapshot()
                except Exception:  # a counter read mid-change: skip this one, never die
                    log.debug("informe de %s omitido", self.role, exc_info=True)
                    continue
                self._post({"role": self.role, "pid": os.getpid(), "report": report})
            self._post({"role": self.role, "pid": os.getpid(), "bye": True})
        finally:
            self.client.close()

    def _post(self, body: dict[str, Any]) -> None:
        import requests

        data = json.dumps(body).encode("utf-8")
        try:
            response = self.client.send("POST", "/estado", data, JSON_HEADERS)
            if response.status_code >= 400:
                # Once at warning: a role whose every report is refused shows as down on
                # the panel, and nobody would know why. Then quiet: no line every 500 ms.
                level = logging.DEBUG if self.refused else logging.WARNING
                log.log(level, "el Profesor rechazó el informe: %s", response.text[:200])
                self.refused += 1
                self.dropped += 1
            else:
                self.sent += 1
        except requests.RequestException:
            self.dropped += 1

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> Informante:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
