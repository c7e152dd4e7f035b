"""What the class's role commands share: upstream options, the ready line, serving, stats."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ayudantia.config import Option, parse_hostport
from roles.base import Server


def upstream_option(name: str, default: Any, what: str) -> Option:
    if name == "profesor":
        return Option(name, default, f"{what} base URL", _url, "URL")
    return Option(name, default, f"{what} HOST:PORT", parse_hostport, "HOST:PORT")


def _url(text: str) -> str:
    text = text.strip()
    if not text.startswith(("http://", "https://")):
        text = "http://" + text
    return text.rstrip("/")


def timeout_option(default: float, what: str) -> Option:
    return Option("timeout", default, f"seconds to wait for {what}", float, "S")


def stats_option() -> Option:
    return Option("stats", None, "write counters as JSON to FILE on exit", str, "FILE", True)


def announce(role: str, where: str, codec: str) -> None:
    """The line ``ayudantia run`` (and a human) waits for before starting the next role."""
    print(f"{role} listening on {where} (codec {codec}, pid {os.getpid()})", flush=True)


def write_stats(path: str | None, stats: dict[str, Any]) -> None:
    if path:
        tmp = Path(path + ".tmp")
        tmp.write_text(json.dumps(stats, indent=1), encoding="utf-8")
        tmp.replace(path)


def serve_announced(
    role: str, server: Server, settings: dict[str, Any], stats: Callable[[], dict[str, Any]]
) -> int:
    """Announce a started server, serve until SIGINT/SIGTERM, then write its counters."""
    host, port = server.address
    announce(role, f"{host}:{port}", f"{settings['codec']}, loop {server.loop_name}")
    status = server.serve_until_signal()
    write_stats(settings["stats"], stats())
    return status
