"""Settings: from the flag, else the environment, else a TOML file, else the default.

Every command declares its options once (:class:`Option`); this module adds them to
argparse with no argparse default (so "not given" is visible), and :func:`resolve` walks
the precedence chain. Environment variables are ``AYUDANTIA_<NAME>`` (``AYUDANTIA_CODEC``,
``AYUDANTIA_CHUNK_SIZE``, ...). The TOML file (``--config`` or ``AYUDANTIA_CONFIG``) may
set a key at top level, for every role, or in a ``[role]`` table, for one.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import codecs
from protocol.framing import DEFAULT_MAX_MESSAGE

ENV_PREFIX = "AYUDANTIA_"


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message says which and where from."""


def parse_size(text: str | int) -> int:
    """Bytes from ``65536``, ``64K``, ``64KiB``, ``1M`` or ``1MiB`` (powers of 1024)."""
    if isinstance(text, int):
        value = text
    else:
        s = text.strip().upper().removesuffix("B").removesuffix("I")
        scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(s[-1:], 1)
        digits = s[:-1] if scale != 1 else s
        try:
            value = int(digits) * scale
        except ValueError:
            raise ValueError(f"not a size: {text!r} (try 4096, 64K, 1M)") from None
    if value < 0:
        raise ValueError(f"size must be >= 0, not {value}")
    return value


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_seconds(text: str | float) -> float | None:
    """Seconds as a float; 0 means no limit (None)."""
    value = float(text)
    if value < 0 or value != value:
        raise ValueError(f"seconds must be >= 0, not {text!r}")
    return value or None


def parse_key(text: str) -> str:
    if not text:
        raise ValueError("the HMAC key must not be empty")
    return text


def codec_name(text: str) -> str:
    names = codecs.available()
    if text not in names:
        raise ValueError(f"unknown codec {text!r}; choose from {', '.join(names)}")
    return text


@dataclass(frozen=True)
class Option:
    name: str  # python name, e.g. "chunk_size"; flag --chunk-size, env AYUDANTIA_CHUNK_SIZE
    default: Any
    help: str
    parse: Callable[[Any], Any] = str
    metavar: str | None = None
    flag_only: bool = False  # not read from env or TOML (e.g. --config itself)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def wire_options(port: int | None = None) -> list[Option]:
    """The options every role and tool shares: where to listen and how to speak."""
    opts = [
        Option(
            "codec",
            "json",
            "payload codec: "
            + ", ".join(codecs.available())
            + " (pickle lets peers run code; see docs)",
            codec_name,
            metavar="{" + ",".join(codecs.available()) + "}",
        ),
        Option(
            "chunk_size",
            0,
            "frame payload size in bytes, e.g. 4096 or 64K (0 = one frame)",
            parse_size,
            "B",
        ),
        Option(
            "max_message",
            DEFAULT_MAX_MESSAGE,
            "largest message accepted, e.g. 64M",
            parse_size,
            "B",
        ),
        Option(
            "key",
            None,
            "shared HMAC-SHA256 key: sign every frame and refuse unsigned or tampered ones "
            "(prefer the environment variable: a flag shows in ps)",
            parse_key,
            "SECRET",
        ),
        Option(
            "read_timeout",
            10.0,
            "seconds to wait for each read inside a message (0 = no limit)",
            parse_seconds,
            "S",
        ),
        Option(
            "idle_timeout",
            300.0,
            "seconds to wait for a message to start (0 = no limit)",
            parse_seconds,
            "S",
        ),
        Option(
            "message_timeout",
            120.0,
            "seconds a whole message may take from its first byte (0 = no limit)",
            parse_seconds,
            "S",
        ),
        Option(
            "send_timeout",
            10.0,
            "seconds a send may wait for a peer that does not read (0 = no limit)",
            parse_seconds,
            "S",
        ),
        Option("log_level", "INFO", "DEBUG, INFO, WARNING or ERROR", str.upper, "LEVEL"),
        Option(
            "config",
            None,
            "TOML file with settings (flag > env > file > default)",
            str,
            "FILE",
            True,
        ),
    ]
    if port is not None:
        opts[:0] = [
            Option("host", "127.0.0.1", "address to bind (loopback by default)", str),
            Option("port", port, f"TCP port (default {port})", int),
        ]
    return opts


def server_options(clients: str) -> list[Option]:
    """What every event-loop server takes: its client cap and its event loop."""
    return [
        Option(
            "max_clients", 10_000, f"{clients} at once (open files are raised to fit)", int, "N"
        ),
        Option(
            "loop",
            "auto",
            "event loop: auto (uvloop where it installs), asyncio or uvloop",
            loop_name,
            "{auto,asyncio,uvloop}",
        ),
    ]


def loop_name(text: str) -> str:
    if text not in ("auto", "asyncio", "uvloop"):
        raise ValueError(f"unknown loop {text!r}; choose from auto, asyncio, uvloop")
    return text


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    for opt in options:
        parser.add_argument(
            opt.flag,
            dest=opt.name,
            default=None,
            type=opt.parse,
            metavar=opt.metavar,
            help=f"{opt.help} [env {opt.env}; default {opt.default}]"
            if not opt.flag_only
            else opt.help,
        )


def _load_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def resolve(
    args: argparse.Namespace,
    options: Iterable[Option],
    *,
    role: str | None = None,
    environ: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Each option's value by precedence: flag, environment, TOML file, default."""
    env = os.environ if environ is None else environ
    options = list(options)
    config_path = getattr(args, "config", None) or env.get(ENV_PREFIX + "CONFIG")
    table: dict[str, Any] = {}
    if config_path:
        data = _load_toml(str(Path(config_path).expanduser()))
        table = {k: v for k, v in data.items() if not isinstance(v, dict)}
        if role and isinstance(data.get(role), dict):
            table.update(data[role])
    out: dict[str, Any] = {}
    for opt in options:
        given = getattr(args, opt.name, None)
        if given is not None:
            out[opt.name] = given
            continue
        if opt.flag_only:
            out[opt.name] = opt.default
            continue
        for source, raw in ((opt.env, env.get(opt.env)), (f"{config_path}", table.get(opt.name))):
            if raw is None:
                continue
            try:
                out[opt.name] = opt.parse(raw)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{opt.name} from {source}: {exc}") from None
            break
        else:
            out[opt.name] = opt.default
    return out
