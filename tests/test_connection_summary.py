"""Per-client lines are DEBUG; INFO gets one summary line per SUMMARY_EVERY seconds."""

from __future__ import annotations

import logging
import re
import socket
import time

from roles import base
from roles.eco import Eco

SUMMARY = re.compile(r"(\d+) clientes conectados y (\d+) desconectados")


def _summed(records: list[logging.LogRecord]) -> tuple[int, int]:
    found = [SUMMARY.search(r.getMessage()) for r in records if r.levelno >= logging.INFO]
    pairs = [(int(m.group(1)), int(m.group(2))) for m in found if m]
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


def test_clients_are_summed_up_at_info_not_one_line_each(monkeypatch, caplog):
    monkeypatch.setattr(base, "SUMMARY_EVERY", 0.2)
    server = Eco(port=0)
    caplog.set_level(logging.INFO, logger=server.log.name)
    host, port = server.start()
    try:
        for _ in range(5):
            with socket.create_connection((host, port), timeout=5):
                pass
        deadline = time.monotonic() + 10
        while _summed(caplog.records) != (5, 5):
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
    finally:
        server.stop()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert not [m for m in lines if m.startswith(("cliente", "Docencio: nuevo"))], lines
    assert len([m for m in lines if SUMMARY.search(m)]) <= 2, lines  # not one per client
