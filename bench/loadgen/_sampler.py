"""The server's own figures (RSS, threads, fds) sampled while a scenario runs."""

from __future__ import annotations

import contextlib
import threading
from typing import Any


class ServerSampler:
    """Samples a server process's RSS, threads and fds in a thread of its own.

    A thread, not a task: while the loop is busy opening thousands of connections a task
    would sample late, exactly when the server is at its peak.
    """

    def __init__(self, pid: int | None, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.before: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.after: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> dict[str, int]:
        with self._proc.oneshot():
            return {
                "rss": self._proc.memory_info().rss,
                "threads": self._proc.num_threads(),
                "fds": self._proc.num_fds(),
            }

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                sample = self._sample()
            except Exception:  # the server died: its last peak stands
                return
            for key, value in sample.items():
                self.peak[key] = max(self.peak.get(key, 0), value)

    def __enter__(self) -> ServerSampler:
        if self.pid is None:
            return self
        import psutil

        self._proc = psutil.Process(self.pid)
        self.before = self._sample()
        self.peak = dict(self.before)
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self.after = self._sample()
            for key, value in self.after.items():
                self.peak[key] = max(self.peak.get(key, 0), value)

    def report(self) -> dict[str, Any]:
        if not self.before:
            return {}
        return {
            "server_rss_before": self.before["rss"],
            "server_rss_peak": self.peak["rss"],
            "server_rss_growth": self.peak["rss"] - self.before["rss"],
            "server_threads_before": self.before["threads"],
            "server_threads_peak": self.peak["threads"],
            "server_fds_before": self.before["fds"],
            "server_fds_peak": self.peak["fds"],
            "server_threads_after": self.after.get("threads"),
            "server_fds_after": self.after.get("fds"),
        }
