"""``ayudantia lesson pickle``: why a peer's pickle must never reach ``pickle.loads``."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ayudantia.config import Option, key_option, log_level_option
from ayudantia.lesson_pickle import run_lesson

NAME = "lesson"
HELP = "guided, runnable security lessons on loopback (topic: pickle)"
TOPICS = ("pickle",)


def options() -> list[Option]:
    return [
        dataclasses.replace(
            key_option(),
            help="shared HMAC key for the signed-frames step (default: random; never printed)",
        ),
        log_level_option("WARNING"),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", choices=TOPICS, help="the lesson to run")


def main(settings: dict[str, Any], args: argparse.Namespace) -> int:
    key = settings["key"].encode("utf-8") if settings["key"] else None
    ok = run_lesson(lambda line: print(line, flush=True), key=key)
    return 0 if ok else 1
