"""Settings: from the flag, else the environment, else a TOML file, else the default.

Every command declares its options once (:class:`Option`); this module adds them to
argparse as plain text with no default (so "not given" is visible and argparse never judges
a value), and :func:`resolve` walks the precedence chain and runs every value, whatever its
source, through the option's :class:`~ayudantia.rules.Rule`: one code path, one message.

Environment variables are ``AYUDANTIA_<NAME>`` (``AYUDANTIA_CODEC``, ...), or
``AYUDANTIA_<COMMAND>_<NAME>`` for one command only (``AYUDANTIA_DOCENCIO_PORT``), which
wins. The TOML file (``--config`` or ``AYUDANTIA_CONFIG``) may set a key at top level, for
every command that takes it, or in a ``[command]`` table, for one. A key no command takes
is an error that names it and suggests the nearest.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shlex
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ayudantia import rules
from ayudantia.rules import Invalid, Rule
from protocol import codecs, encodings
from protocol.framing import DEFAULT_MAX_MESSAGE

ENV_PREFIX = "AYUDANTIA_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message says which, where from, and why."""


@dataclass(frozen=True)
class Option:
    """One setting of one command: its flag, its environment variable, its TOML key."""

    name: str  # python name, e.g. "chunk_size"; flag --chunk-size, env AYUDANTIA_CHUNK_SIZE
    default: Any  # written as on the command line (None: not set), and checked like one
    help: str
    parse: Rule = rules.TEXT
    metavar: str | None = None
    toml: bool = True  # read from the TOML file (not --config itself)
    env_name: str | None = None  # a different environment variable (e.g. AYUDANTIA_QUIJOTE)
    secret: bool = False  # never echo the value in an error
    hidden: bool = False  # not in --help or the README (a flag refused with a reason)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return self.env_name or ENV_PREFIX + self.name.upper()

    def role_env(self, role: str) -> str | None:
        if self.env_name or self.name == "config":
            return None
        return f"{ENV_PREFIX}{role.upper()}_{self.name.upper()}"


def seconds_option(name: str, default: float, what: str, *, unlimited: bool = True) -> Option:
    rule = rules.seconds(unlimited=unlimited)
    suffix = " (0 = no limit)" if unlimited else ""
    return Option(name, default, f"seconds {what}{suffix}", rule, "S")


def log_level_option(default: str = "INFO") -> Option:
    return Option(
        "log_level",
        default,
        "DEBUG, INFO, WARNING or ERROR",
        rules.choice(rules.LOG_LEVELS),
        "LEVEL",
    )


def config_option() -> Option:
    return Option(
        "config",
        None,
        f"TOML file with settings (flag > env > file > default; or {CONFIG_ENV})",
        rules.INPUT_FILE,
        "FILE",
        toml=False,
    )


def codec_option(*, needs_maps: bool = False) -> Option:
    names = [n for n in codecs.available() if not (needs_maps and n == "raw")]
    why = " (not raw: questions are maps)" if needs_maps else ""
    return Option(
        "codec",
        "json",
        f"payload codec{why}; pickle lets peers run code (see docs)",
        rules.codec_rule(needs_maps=needs_maps),
        "{" + ",".join(names) + "}",
    )


def wire_options(
    port: int | None = None, *, needs_maps: bool = False, keyed: bool = True, tls: bool = True
) -> list[Option]:
    """The options the framed roles and tools share: where to listen and how to speak."""
    opts = [
        codec_option(needs_maps=needs_maps),
        Option(
            "chunk_size",
            0,
            "frame payload size in bytes, e.g. 4096 or 64K (0 = one frame)",
            rules.CHUNK_SIZE,
            "B",
        ),
        *compress_options(),
        Option(
            "max_message",
            f"{DEFAULT_MAX_MESSAGE // 1024**2}M",
            "largest message accepted, e.g. 64M",
            rules.MAX_MESSAGE,
            "B",
        ),
        seconds_option("read_timeout", 10.0, "to wait for each read inside a message"),
        seconds_option("idle_timeout", 300.0, "to wait for a message to start"),
        seconds_option("message_timeout", 120.0, "a whole message may take from its first byte"),
        seconds_option("send_timeout", 10.0, "a send may wait for a peer that does not read"),
        log_level_option(),
        config_option(),
    ]
    if keyed:
        opts.insert(3, key_option())
    if tls:
        opts[4 if keyed else 3 : 4 if keyed else 3] = tls_options()
    if port is not None:
        opts[:0] = listen_options(port)
    return opts


def compress_options() -> list[Option]:
    """``--compress`` and ``--compress-level``: the content encoding of frames sent."""
    names = encodings.REGISTRY.choices()
    return [
        Option(
            "compress",
            "none",
            "compress each frame sent (receivers accept identity, zstd and lz4)",
            rules.choice(names, case=str.lower),
            "{" + ",".join(names) + "}",
        ),
        Option(
            "compress_level",
            None,
            "compression level (zstd -7..22, lz4 0..16; default: the encoding's own)",
            rules.integer(-7, 22),
            "N",
        ),
    ]


def key_option() -> Option:
    return Option(
        "key",
        None,
        "shared HMAC-SHA256 key: sign every frame and refuse unsigned or tampered ones "
        "(prefer the environment variable: a flag shows in ps)",
        rules.SECRET,
        "SECRET",
        secret=True,
    )


def tls_options() -> list[Option]:
    """``--tls-cert``, ``--tls-key``, ``--tls-ca`` (PEM files; see protocol/tls.py)."""
    return [
        Option(
            "tls_cert",
            None,
            "PEM certificate: a server serves TLS with it; a client shows it (mutual TLS)",
            rules.INPUT_FILE,
            "FILE",
        ),
        Option("tls_key", None, "PEM private key of --tls-cert", rules.INPUT_FILE, "FILE"),
        Option(
            "tls_ca",
            None,
            "PEM CA: a client verifies servers against it (TLS on); a server requires "
            "client certificates signed by it (mutual TLS)",
            rules.INPUT_FILE,
            "FILE",
        ),
    ]


def listen_options(port: int) -> list[Option]:
    return [
        Option("host", "127.0.0.1", "address to bind (loopback by default)", rules.HOST, "HOST"),
        Option("port", port, "TCP port to listen on (0 = any free port)", rules.PORT, "PORT"),
    ]


def loop_option() -> Option:
    """``--loop``: the event loop an asyncio server or proxy runs on."""
    return Option(
        "loop",
        "auto",
        "event loop: auto (uvloop where it installs), asyncio or uvloop",
        rules.choice(("auto", "asyncio", "uvloop"), case=str.lower),
        "{auto,asyncio,uvloop}",
    )


def server_options(clients: str) -> list[Option]:
    """What every event-loop server takes: its client cap and its event loop."""
    return [
        Option(
            "max_clients",
            10_000,
            f"{clients} at once (open files are raised to fit)",
            rules.integer(1, 1_000_000),
            "N",
        ),
        loop_option(),
    ]


def announce_options() -> list[Option]:
    """``--class`` and ``--announce``: how a server bound to a LAN address announces itself
    (DNS-SD over mDNS, ayudantia/discovery.py); a loopback bind never announces."""
    return [
        Option(
            "class",
            None,
            "the class's name this server announces on the LAN (default: the host name)",
            rules.NAME,
            "NAME",
        ),
        Option(
            "announce",
            "on",
            "announce this server with mDNS (_ayudantia._tcp) when bound to a non-loopback "
            "address; off keeps it quiet",
            rules.choice(("on", "off"), case=str.lower),
            "{on,off}",
        ),
    ]


def find_timeout_option(name: str = "find_timeout", what: str = "with --find") -> Option:
    """Seconds to listen for announcements: every candidate must be heard, not the first."""
    return seconds_option(name, 3.0, f"to listen for announcements {what}", unlimited=False)


# -- argparse ---------------------------------------------------------------------------------


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    """Every option as a plain-text flag: the value is judged later, by :func:`resolve`."""
    for opt in options:
        parser.add_argument(
            opt.flag,
            dest=opt.name,
            default=None,
            metavar=opt.metavar or opt.name.upper(),
            help=argparse.SUPPRESS if opt.hidden else help_text(opt),
        )


def help_text(opt: Option) -> str:
    env = "" if opt.name == "config" else f"env {opt.env}; "
    default = "" if opt.default is None else f"default {opt.default}"
    tail = f"{env}{default}".rstrip("; ")
    return f"{opt.help} [{tail}]" if tail else opt.help


# -- resolving -------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _failure(opt: Option, where: str, exc: Invalid) -> ConfigError:
    detail = str(exc)
    allowed = opt.parse.allowed
    if detail and allowed:
        return ConfigError(f"{where}: {detail}; expected {allowed}")
    return ConfigError(f"{where}: {detail or 'expected ' + allowed}")


def _shown(opt: Option, raw: Any) -> str:
    return "***" if opt.secret else shlex.quote(str(raw))


def load_toml(path: str) -> dict[str, Any]:
    """The file's tables, or one :class:`ConfigError` line (missing, a directory, not UTF-8)."""
    where = Path(path).expanduser()
    try:
        text = where.read_bytes().decode("utf-8")
        return tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"config file {where} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {where} is a directory, not a TOML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {where} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {where} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {where} cannot be read: {exc.strerror}") from None


def _nearest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def toml_keys(commands: Iterable[Any]) -> dict[str, set[str]]:
    """Each command's TOML keys: a key misspelt for any command is caught by every one.

    The commands are handed in (``ayudantia.cli`` passes them all): they import this module
    to declare their options, so this module importing them would be a circle.
    """
    return {c.NAME: {o.name for o in c.options() if o.toml and not o.hidden} for c in commands}


def check_toml_keys(data: Mapping[str, Any], path: str, known: Mapping[str, set[str]]) -> None:
    """Every key must be a setting some command reads from TOML, in a table it reads."""
    everywhere = set().union(*known.values()) if known else set()
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in known:
                raise ConfigError(
                    f"[{key}] in {path} is not a command{_nearest(key, known)} "
                    f"(tables: {', '.join(sorted(known))})"
                )
            for sub, subvalue in value.items():
                if isinstance(subvalue, dict) or sub not in known[key]:
                    raise ConfigError(
                        f"{sub} in [{key}] of {path} is not a setting of {key}"
                        f"{_nearest(sub, known[key])}"
                    )
        elif key not in everywhere:
            raise ConfigError(f"{key} in {path} is not a setting{_nearest(key, everywhere)}")


def resolve(
    args: argparse.Namespace,
    options: Iterable[Option],
    *,
    role: str | None = None,
    environ: Mapping[str, str] | None = None,
    known: Mapping[str, set[str]] | None = None,
) -> dict[str, Any]:
    """Each option's value by precedence (flag, environment, TOML file, default), checked.

    ``known`` maps each command to the TOML keys it reads (``ayudantia.cli`` passes every
    command's, :func:`toml_keys`), so a misspelt key is caught whichever command reads the
    file; without it, the keys of ``options`` under ``role`` are the ones known.
    """
    env = os.environ if environ is None else environ
    options = list(options)
    config_path = _config_path(getattr(args, "config", None), env)
    top: dict[str, Any] = {}
    table: dict[str, Any] = {}
    if config_path:
        data = load_toml(config_path)
        if known is None:
            known = {role or "": {o.name for o in options if o.toml and not o.hidden}}
        check_toml_keys(data, config_path, known)
        top = {k: v for k, v in data.items() if not isinstance(v, dict)}
        if role and isinstance(data.get(role), dict):
            table = data[role]
    out: dict[str, Any] = {}
    for opt in options:
        if opt.name == "config":
            out["config"] = config_path
            continue
        for where, raw in _candidates(opt, args, env, role, config_path, table, top):
            out[opt.name] = None if raw is None else _check(opt, raw, where)
            break
    return out


def _config_path(flag: str | None, env: Mapping[str, str]) -> str | None:
    """The TOML file from --config, else AYUDANTIA_CONFIG (an empty variable: none)."""
    opt = config_option()
    if flag is not None:
        return _check(opt, flag, f"--config {_shown(opt, flag)}")
    if env.get(CONFIG_ENV):
        return _check(opt, env[CONFIG_ENV], f"{CONFIG_ENV}={_shown(opt, env[CONFIG_ENV])}")
    return None


def _candidates(
    opt: Option,
    args: argparse.Namespace,
    env: Mapping[str, str],
    role: str | None,
    config_path: str | None,
    table: Mapping[str, Any],
    top: Mapping[str, Any],
) -> Iterable[tuple[str, Any]]:
    """(where, raw value) for each source that sets ``opt``, best first; the default last."""
    given = getattr(args, opt.name, None)
    if given is not None:
        yield f"{opt.flag} {_shown(opt, given)}", given
    for name in (opt.role_env(role) if role else None, opt.env):
        if name and name in env and not opt.hidden:
            yield f"{name}={_shown(opt, env[name])} (environment)", env[name]
    if opt.toml and not opt.hidden:
        for values, where in ((table, f"[{role}] of {config_path}"), (top, config_path)):
            if opt.name in values:
                raw = values[opt.name]
                shown = "***" if opt.secret else _toml_value(raw)
                yield f"{opt.name} = {shown} in {where}", raw
    yield f"the default {opt.name} {opt.default!r}", opt.default


def _check(opt: Option, raw: Any, where: str) -> Any:
    try:
        return opt.parse(raw)
    except Invalid as exc:
        raise _failure(opt, where, exc) from None
