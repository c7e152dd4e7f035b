"""What the class's role commands share: upstream options, the ready line, serving, stats."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ayudantia import rules
from ayudantia.config import Option, seconds_option
from roles.wire import WireSettings

if TYPE_CHECKING:  # the servers' module is imported by the commands that serve
    from roles.base import Server


def upstream_option(name: str, default: str, what: str) -> Option:
    if name == "profesor":
        return Option(name, default, f"{what} base URL", rules.URL, "URL")
    return Option(name, default, f"{what} HOST:PORT", rules.HOSTPORT, "HOST:PORT")


def timeout_option(default: float, what: str) -> Option:
    """``--timeout`` of a server: a per-request deadline, which must end (0 is refused)."""
    return seconds_option("timeout", default, f"to wait for {what}", unlimited=False)


def max_clients_option(default: int = 128) -> Option:
    return Option(
        "max_clients", default, "clients served at once", rules.integer(1, 1_000_000), "N"
    )


def stats_option() -> Option:
    return Option(
        "stats", None, "write counters as JSON to FILE on exit", rules.OUTPUT_FILE, "FILE"
    )


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
    announce(role, f"{host}:{port}", settings["codec"])
    status = server.serve_until_signal()
    write_stats(settings["stats"], stats())
    return status


def wire_settings(settings: dict[str, Any]) -> WireSettings:
    """The command's WireSettings, with ``send_timeout`` wherever WireSettings has the field."""
    wire = WireSettings.from_settings(settings)
    fields = {f.name for f in dataclasses.fields(WireSettings)}
    if "send_timeout" in fields and "send_timeout" in settings:
        wire = dataclasses.replace(wire, send_timeout=settings["send_timeout"])  # type: ignore[call-arg]
    return wire
