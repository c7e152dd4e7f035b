"""The targets the benchmarks are held to, and the verdict rule: data, and one pure function.

A figure is a set of readings of one quantity (the medians of a paired figure's sessions,
a benchmark's rounds); its range is their min-max. A target reads:

* ``met`` only when the whole range clears the threshold;
* ``missed`` when none of it does;
* ``unclear`` when the range straddles the threshold (the run cannot tell);
* ``suspect`` when the whole range lies beyond what physics allows (``bound``: a framed
  transfer faster than the plain socket it runs on): that is noise or a broken baseline,
  never a success;
* ``not measured`` when no benchmark provides the figure yet (``required=False``: a later
  issue's benchmark will feed the key).

A required figure that is missing, or a figure without readings, is an error
(:class:`FigureError`), never a silently skipped row.

To add a target: append a :class:`Target` to :data:`TARGETS`, and have a benchmark store
``figure=<key>`` and ``values=[...]`` in its ``extra_info`` (see bench._paired.record).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MET = "met"
MISSED = "missed"
UNCLEAR = "unclear"
SUSPECT = "suspect"
NOT_MEASURED = "not measured"

AT_LEAST = "at_least"  # bigger is better: the value must be >= threshold
AT_MOST = "at_most"  # smaller is better: the value must be <= threshold


class FigureError(ValueError):
    """A figure the report needs is missing or has no usable readings."""


@dataclass(frozen=True)
class Figure:
    """Readings of one quantity: ``values`` (one per session or round), median and range."""

    key: str
    values: tuple[float, ...]
    spread: str = "min-max"  # what the range is over, for the reader

    def __post_init__(self) -> None:
        if not self.values:
            raise FigureError(f"figure {self.key!r} has no readings")
        bad = [v for v in self.values if not isinstance(v, int | float) or math.isnan(v)]
        if bad:
            raise FigureError(f"figure {self.key!r} has unusable readings: {bad!r}")

    @property
    def median(self) -> float:
        return float(statistics.median(self.values))

    @property
    def lo(self) -> float:
        return float(min(self.values))

    @property
    def hi(self) -> float:
        return float(max(self.values))


@dataclass(frozen=True)
class Target:
    name: str
    key: str  # the figure it reads
    threshold: float
    direction: str  # AT_LEAST or AT_MOST
    bound: float | None = None  # physical limit in the good direction (beyond: suspect)
    unit: str = "x"  # how to print the figure: "x", "%", "KiB", "s", "MB", "/s", ""
    required: bool = True  # False: no benchmark feeds it yet; reads "not measured"


def verdict(
    lo: float, hi: float, threshold: float, direction: str, bound: float | None = None
) -> str:
    """The verdict on a figure whose readings span ``lo``..``hi`` (see the module doc)."""
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise FigureError(f"not a range: {lo}..{hi}")
    if direction == AT_LEAST:
        if bound is not None and lo > bound:
            return SUSPECT
        cleared = (lo >= threshold, hi >= threshold)
    elif direction == AT_MOST:
        if bound is not None and hi < bound:
            return SUSPECT
        cleared = (lo <= threshold, hi <= threshold)
    else:
        raise ValueError(f"unknown direction {direction!r}")
    if all(cleared):
        return MET
    if not any(cleared):
        return MISSED
    return UNCLEAR


def judge(target: Target, figures: Mapping[str, Figure], *, partial: bool = False) -> str:
    """``target``'s verdict on the figures of a run; FigureError if a required one is absent
    (unless ``partial``: a run of some benchmarks only)."""
    fig = figures.get(target.key)
    if fig is None:
        if target.required and not partial:
            raise FigureError(
                f"target {target.name!r} needs figure {target.key!r}, which this run lacks "
                "(run the whole bench, or pass --partial)"
            )
        return NOT_MEASURED
    return verdict(fig.lo, fig.hi, target.threshold, target.direction, target.bound)


KiB = 1024
MEMORY_CONSTANT = 256 * KiB

TARGETS: Sequence[Target] = (
    Target(
        "framed raw transfer, unchunked, >= 85% of the plain socket's speed",
        "transfer.raw-whole.vs-socket",
        0.85,
        AT_LEAST,
        bound=1.0,
        unit="%",
    ),
    Target(
        "framed raw transfer at 1 MiB chunks >= 85% of the plain socket's speed",
        "transfer.raw-1MiB.vs-socket",
        0.85,
        AT_LEAST,
        bound=1.0,
        unit="%",
    ),
    Target(
        "book round trip (raw, unchunked) within 1.25x of multiprocessing.connection",
        "book.raw-whole.vs-mpconn",
        1.25,
        AT_MOST,
    ),
    Target(
        "small message round trip (raw) within 1.25x of multiprocessing.connection, pinned",
        "small.raw.vs-mpconn.pinned",
        1.25,
        AT_MOST,
    ),
    Target(
        "small message round trip (raw) within 1.1x of multiprocessing.connection, unpinned",
        "small.raw.vs-mpconn.unpinned",
        1.1,  # issue 23 item 4: 1.25x pinned (CPU cost), 1.1x unpinned
        AT_MOST,
    ),
    Target(
        "streamed receive peak - 4 x chunk size <= 256 KiB, at the worst chunk size",
        "memory.stream.over-4x-chunk",
        MEMORY_CONSTANT,
        AT_MOST,
        unit="KiB",
    ),
    Target(
        "json wire size within 5% of the book's UTF-8 size",
        "codec.json.wire-vs-text",
        1.05,
        AT_MOST,
        bound=1.0,
    ),
    Target(
        "msgpack encode+decode within 1.3x of pickle's", "codec.msgpack.vs-pickle", 1.3, AT_MOST
    ),
    Target("json encode+decode within 2x of msgpack's", "codec.json.vs-msgpack", 2.0, AT_MOST),
    # The event-loop servers (bench/bench_servers.py).
    Target(
        "5,000 students connected within 3 s",
        "servers.5000.connect-s",
        3.0,
        AT_MOST,
        unit="s",
        required=False,
    ),
    Target(
        "5,000 students answered within 5 s",
        "servers.5000.answer-s",
        5.0,
        AT_MOST,
        unit="s",
        required=False,
    ),
    Target(
        "5,000 students: server RSS < 100 MB",
        "servers.5000.rss-mb",
        100.0,
        AT_MOST,
        unit="MB",
        required=False,
    ),
    Target(
        "5,000 students: server < 16 threads",
        "servers.5000.threads",
        15,
        AT_MOST,
        unit="",
        required=False,
    ),
    # A default class's Docencio (outbox and reports on), its kernel high-water mark
    # (bench/bench_docencio_memory.py).
    Target(
        "5,000 students on a default Docencio: peak RSS (VmHWM) < 100 MB",
        "docencio.5000.vmhwm-mb",
        100.0,
        AT_MOST,
        unit="MB",
        required=False,
    ),
    Target(
        "5,000 students on a default Docencio: < 16 threads",
        "docencio.5000.threads",
        15,
        AT_MOST,
        unit="",
        required=False,
    ),
    # One student asking serially (bench/bench_serial.py): the minimal uvloop server's cycle
    # time over the default Docencio's, i.e. the Docencio's rate as a share of the floor's.
    Target(
        "serial connect-ask-close on a default Docencio >= 1/3 of a minimal uvloop server's rate",
        "servers.serial-connect-ask-close.vs-min-server",
        1 / 3,
        AT_LEAST,
        bound=1.0,
        unit="%",
        required=False,
    ),
    Target(
        "a never-reading student: the others' slowest answer < 100 ms",
        "servers.slow-reader.others-slowest-s",
        0.1,
        AT_MOST,
        unit="s",
        required=False,
    ),
    Target(
        "a never-reading student: server RSS growth < 64 MB",
        "servers.slow-reader.rss-growth-mb",
        64.0,
        AT_MOST,
        unit="MB",
        required=False,
    ),
    Target(
        "small message through `ayudantia eco` within 1.1x of a multiprocessing.connection echo",
        "eco.small.vs-mpconn-echo",
        1.1,
        AT_MOST,
        required=False,
    ),
    Target(
        "the class >= 4,000 questions/s",
        "class.questions-per-s",
        4000.0,
        AT_LEAST,
        unit="/s",
        required=False,
    ),
    Target(
        "the class with its outbox on disk >= 4,000 questions/s",
        "outbox.disk.questions-per-s",
        4000.0,
        AT_LEAST,
        unit="/s",
        required=False,
    ),
    Target(
        "the outbox on disk adds < 2 ms to the class's p50 latency (vs /dev/shm)",
        "outbox.p50-growth-s",
        0.002,
        AT_MOST,
        unit="s",
        required=False,
    ),
    Target(
        "connect-ask-read-close >= 3,000/s",
        "servers.connect-ask-close-per-s",
        3000.0,
        AT_LEAST,
        unit="/s",
        required=False,
    ),
)
