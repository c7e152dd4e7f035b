"""The ``ayudantia`` command's first frame: a Ctrl+C while the CLI still imports exits 130.

Importing the CLI pulls in every command, codec and plug-in (most of a second on a busy
machine). A Ctrl+C in that window raised KeyboardInterrupt inside whichever import was
running: a long traceback, and when it hit a C extension's initialisation (zstandard,
lz4) the half-built module crashed the interpreter at exit (status -11). So the imports
run with Ctrl+C only *noted*; once they are done, a noted Ctrl+C ends the command with
130, as any interrupted command does, and from then on Ctrl+C raises as usual.
"""

from __future__ import annotations

import signal
from types import FrameType

INTERRUPTED = 130  # as ayudantia.cli.INTERRUPTED, written here so as to import nothing


def main() -> int:
    """The CLI's exit status; 130 for a Ctrl+C that came while the CLI was importing."""
    noted: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        noted.append(signum)

    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # e.g. started with nohup
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN if ignored else note)
    try:
        from ayudantia.cli import main as cli_main
    finally:
        signal.signal(signal.SIGINT, previous)
    if noted:
        return INTERRUPTED
    try:
        return cli_main()
    except KeyboardInterrupt:  # between the CLI's own handlers (parsing, logging setup)
        return INTERRUPTED
