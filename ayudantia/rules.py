"""One validation rule per kind of setting, whatever the value's source.

Flags and environment variables arrive as text, a TOML file may give a native value, and a
default is written like a flag. Every :class:`Rule` takes any of those and returns the
value a command uses, or raises :class:`Invalid` with the problem; its ``allowed`` text is
what the error (and the README's settings table) says is allowed. One rule per type means
one meaning everywhere: a port is 1-65535, a timeout of 0 is "no limit", a boolean is never
a number.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from protocol import codecs
from protocol.framing import MAX_FRAME_PAYLOAD

MAX_SECONDS = 7 * 24 * 3600.0  # a week: far beyond any sane wait, well inside every C timer
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")
_SIZE = re.compile(r"(\d+)\s*([KMG]?)(I?B)?", re.I)
_SCALE = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


class Invalid(ValueError):
    """A value a rule refuses; the message is the problem ("" when ``allowed`` says it all)."""


@dataclass(frozen=True)
class Rule:
    """A named conversion: ``rule(raw)`` is the value, or :class:`Invalid`."""

    allowed: str
    convert: Callable[[Any], Any]

    def __call__(self, raw: Any) -> Any:
        try:
            return self.convert(raw)
        except Invalid:
            raise
        except (ValueError, TypeError, OverflowError) as exc:
            raise Invalid(str(exc)) from None


def _text(raw: Any, what: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str):
        raise Invalid(f"a {_kind(raw)} is not {what}")
    return raw.strip()


def _kind(raw: Any) -> str:
    return {bool: "boolean", int: "whole number", float: "decimal number", str: "string"}.get(
        type(raw), type(raw).__name__
    )


def _whole(raw: Any) -> int:
    """An int from an int or its digits; never from a boolean or a float."""
    if isinstance(raw, bool | float):
        raise Invalid(f"a {_kind(raw)} is not a whole number")
    if isinstance(raw, int):
        return raw
    text = _text(raw, "a whole number")
    if not re.fullmatch(r"[+-]?\d+", text):
        raise Invalid("not a whole number")
    return int(text)


def _number(raw: Any) -> float:
    """A finite float from an int, a float or its text; never from a boolean."""
    if isinstance(raw, bool):
        raise Invalid("a boolean is not a number")
    value = float(raw) if isinstance(raw, int | float) else float(_text(raw, "a number"))
    if not math.isfinite(value):
        raise Invalid(f"{value} is not a finite number")
    return value


def integer(low: int, high: int | None = None, *, meaning: str = "") -> Rule:
    """A whole number in ``[low, high]``."""
    span = f"a whole number from {low}" + (f" to {high}" if high is not None else " up")
    allowed = span + (f" ({meaning})" if meaning else "")

    def convert(raw: Any) -> int:
        value = _whole(raw)
        if value < low or (high is not None and value > high):
            raise Invalid("")
        return value

    return Rule(allowed, convert)


def _port_number(raw: Any, zero_ok: bool) -> int:
    value = _whole(raw)
    if not (0 if zero_ok else 1) <= value <= 65535:
        raise Invalid("")
    return value


PORT = Rule("a TCP port 1-65535 (0 = any free port)", lambda raw: _port_number(raw, True))


def seconds(*, unlimited: bool = True, high: float = MAX_SECONDS) -> Rule:
    """Seconds as a float; with ``unlimited``, 0 means no limit (None), as for every timeout."""
    if unlimited:
        allowed = f"seconds from 0 to {high:g} (0 = no limit)"
    else:
        allowed = f"seconds above 0, up to {high:g} (this wait cannot be unlimited)"

    def convert(raw: Any) -> float | None:
        value = _number(raw)
        if value < 0 or value > high or (value == 0 and not unlimited):
            raise Invalid("")
        return value or None

    return Rule(allowed, convert)


def pace(high: float = 3600.0) -> Rule:
    """A wait in seconds where 0 means "do not wait" (a pace, not a timeout)."""

    def convert(raw: Any) -> float:
        value = _number(raw)
        if not 0 <= value <= high:
            raise Invalid("")
        return value

    return Rule(f"seconds from 0 to {high:g} (0 = no wait)", convert)


def size(low: int, high: int, *, meaning: str = "") -> Rule:
    """Bytes from ``65536``, ``64K``, ``64KiB``, ``1M`` or ``1MiB`` (powers of 1024)."""
    allowed = f"a size in bytes from {low} to {high:,} like 4096, 64K, 1M" + (
        f" ({meaning})" if meaning else ""
    )

    def convert(raw: Any) -> int:
        if isinstance(raw, bool | float):
            raise Invalid(f"a {_kind(raw)} is not a size")
        if isinstance(raw, int):
            value = raw
        else:
            match = _SIZE.fullmatch(_text(raw, "a size"))
            if match is None:
                raise Invalid("not a size")
            value = int(match.group(1)) * _SCALE[match.group(2).upper()]
        if not low <= value <= high:
            raise Invalid("")
        return value

    return Rule(allowed, convert)


def _host(text: str) -> str:
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise Invalid("the host is empty")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        raise Invalid(f"{host!r} is not a host name or IP address")
    return host


HOST = Rule(
    "a host name or IP address to bind, e.g. 127.0.0.1, ::1, 0.0.0.0",
    lambda raw: _host(_text(raw, "a host")),
)


def _hostport(raw: Any) -> tuple[str, int]:
    text = _text(raw, "HOST:PORT")
    host, sep, port = text.rpartition(":")
    if not sep or ("]" not in host and ":" in host):
        raise Invalid("")
    return (_host(host) if host else "127.0.0.1"), _port_number(port, zero_ok=False)


HOSTPORT = Rule("HOST:PORT with a port 1-65535, e.g. 127.0.0.1:4445 or [::1]:4445", _hostport)


def _url(raw: Any) -> str:
    text = _text(raw, "a URL")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or parts.query or parts.fragment:
        raise Invalid("")
    _host(parts.hostname or "")
    try:
        port = parts.port
    except ValueError:  # past 65535: say what is allowed, not urllib's "0-65535"
        raise Invalid("") from None
    if port == 0:
        raise Invalid("")
    return text.rstrip("/")


URL = Rule("an http:// URL with a port 1-65535, e.g. http://127.0.0.1:4444", _url)


def _codec(raw: Any, needs_maps: bool) -> str:
    text = _text(raw, "a codec name")
    names = codecs.available()
    if text not in names:
        raise Invalid(f"unknown codec {text!r}")
    if needs_maps and text == "raw":
        raise Invalid("raw carries bytes, and the class's questions and answers are maps")
    return text


def codec_rule(*, needs_maps: bool = False) -> Rule:
    names = [n for n in codecs.available() if not (needs_maps and n == "raw")]
    return Rule("one of " + ", ".join(names), lambda raw: _codec(raw, needs_maps))


def choice(options: Iterable[str], *, case: Callable[[str], str] = str.upper) -> Rule:
    """One of ``options``, in any case (``case`` is how the options are written)."""
    names = tuple(options)

    def convert(raw: Any) -> str:
        value = case(_text(raw, "a name"))
        if value not in names:
            raise Invalid("")
        return value

    return Rule("one of " + ", ".join(names) + " (any case)", convert)


def _secret(raw: Any) -> str:
    if not _text(raw, "a key"):
        raise Invalid("the key is empty")
    return raw


def refuse(reason: str) -> Callable[[Any], Any]:
    """A converter that refuses every value: a flag kept only to say why it is not offered."""

    def convert(raw: Any) -> Any:
        raise Invalid(reason)

    return convert


def _name(raw: Any) -> str:
    text = _text(raw, "a name")
    if not text or len(text) > 64 or not text.isprintable():
        raise Invalid("")
    return text


NAME = Rule("1 to 64 printable characters", _name)
SEED = integer(0, 2**63 - 1)
SECRET = Rule("a non-empty secret shared by both ends", _secret)
TEXT = Rule("any text", lambda raw: _text(raw, "text"))


def _existing_parent(path: Path) -> None:
    parent = path.parent
    if not parent.is_dir():
        raise Invalid(f"its directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise Invalid(f"its directory {parent} is not writable")


def _path(raw: Any) -> Path:
    """A path setting as given, ``~`` expanded; empty is an error (it would mean the cwd)."""
    text = _text(raw, "a path")
    if not text:
        raise Invalid("the path is empty")
    return Path(text).expanduser()


def _output_file(raw: Any) -> str:
    path = _path(raw)
    if path.is_dir():
        raise Invalid(f"{path} is a directory")
    _existing_parent(path)
    return str(path)


OUTPUT_FILE = Rule("a file path in an existing, writable directory", _output_file)


DATABASE = Rule("a SQLite file in an existing, writable directory", _output_file)


def _output_dir(raw: Any) -> str:
    path = _path(raw)
    if path.exists() and not path.is_dir():
        raise Invalid(f"{path} exists and is not a directory")
    if not path.exists():
        _existing_parent(path)
    return str(path)


OUTPUT_DIR = Rule("a directory, or a new one inside an existing directory", _output_dir)


def _input_file(raw: Any) -> str:
    path = _path(raw)
    if not path.is_file():
        raise Invalid(f"{path} is {'a directory' if path.is_dir() else 'not a file'}")
    if not os.access(path, os.R_OK):
        raise Invalid(f"{path} is not readable")
    return str(path)


INPUT_FILE = Rule("a readable file", _input_file)

CHUNK_SIZE = size(0, MAX_FRAME_PAYLOAD, meaning="0 = one frame per message")
MAX_MESSAGE = size(1, 4 * 1024**3)
