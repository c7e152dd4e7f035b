"""Project-wide pytest wiring: ``pytest --benchmark`` runs the benchmarks under bench/ for real.

pyproject's ``addopts`` carries ``--benchmark-disable``, so the ordinary ``uv run pytest``
runs every benchmark body once, untimed, as a test that keeps it from rotting. pytest-benchmark
has no plain ``--benchmark`` flag; this file adds it and turns timing back on, exactly as
``--benchmark-enable`` would. pytest-benchmark's own ``--benchmark-*`` flags keep working.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--benchmark",
        action="store_true",
        default=False,
        help=(
            "Run the Quijote benchmarks under bench/ for real: timing on, full chunk-size "
            "matrix (the ordinary run disables timing and runs a reduced matrix once). "
            "Combine with pytest-benchmark's flags, e.g. --benchmark-json=out.json."
        ),
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # pytest-benchmark builds its session in a trylast pytest_configure, so setting the
    # options here is the same as having passed --benchmark-enable on the command line.
    if config.getoption("benchmark", default=False):
        config.option.benchmark_enable = True
        config.option.benchmark_disable = False


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """What bench.report prints as "the machine it ran on"."""
    machine_info["ayudantia"] = {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }
