"""A Flask app served on loopback in a thread, for the lessons that talk HTTP.

The real Profesor (:func:`roles.profesor.create_app` with a SQLite file in the lesson's
temporary directory) or the notebook's sketch of it, served by werkzeug's server (one
request at a time, all a lesson asks) in a background thread. Stopping it closes the
listening socket, so "the Profesor is down" is a real refused connection and "the
restart" is a new server on the same port.
"""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from ayudantia.lessons._runner import Context, quiet_logger


class Served:
    """One app on 127.0.0.1:``port`` until :meth:`stop` (which the lesson's cleanup calls)."""

    def __init__(self, ctx: Context, app: Any, port: int = 0) -> None:
        ctx.stack.enter_context(quiet_logger("werkzeug"))
        self.server: BaseWSGIServer = make_server("127.0.0.1", port, app)
        self.port = int(self.server.server_port)
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="lesson-profesor",
        )
        self._thread.start()
        self._stopped = False
        ctx.stack.callback(self.stop)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5.0)


def real_profesor(ctx: Context, port: int = 0, db_name: str = "profesor.sqlite3") -> Served:
    """The project's Profesor with its gradebook in the lesson's temporary directory."""
    from roles.profesor import create_app

    app = create_app(ctx.tmp / db_name)
    ctx.stack.callback(app.extensions["libro"].close)  # after the server stops (LIFO)
    return Served(ctx, app, port)
