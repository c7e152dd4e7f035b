"""Turn pytest-benchmark's JSON into docs/benchmarks.md and the plots under docs/img/.

    uv run pytest --benchmark --benchmark-json=out.json
    uv run python -m bench.report out.json

Without an argument it reads ``out.json``, else the newest run that ``--benchmark-autosave``
left under ``.benchmarks/``. Plots need matplotlib (``uv sync --group bench``); without it the
tables are still written and the report says the plots were skipped.

Every figure is a median with its spread, never a best round: absolute times are the median
round with the interquartile range; a ratio is a paired figure (bench._paired), the median
of its sessions with their min-max. Targets read met, missed, unclear or suspect by the rule
in bench.targets. A required figure that is missing or empty stops the report (exit 1)
instead of leaving its row out; ``--partial`` accepts a run of some benchmarks only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import targets as tg
from bench.targets import Figure, FigureError

KiB = 1024
MiB = 1024 * KiB
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
DEFAULT_IMG = ROOT / "docs" / "img"
DEFAULT_NOTES = ROOT / "bench" / "notes.md"
CODEC_ORDER = ["raw", "json", "pickle", "msgpack"]
MEMORY_CONSTANT = tg.MEMORY_CONSTANT
# The default stream chunk: the smallest chunk size whose throughput reaches this fraction
# of the best chunk size's median within its interquartile range.
DEFAULT_CHUNK_TOLERANCE = 0.90


# --- reading -----------------------------------------------------------------------------------


@dataclass
class Bench:
    name: str
    group: str
    info: dict[str, Any]
    stats: dict[str, float]

    @property
    def median(self) -> float:
        return float(self.stats["median"])

    @property
    def q1(self) -> float:
        return float(self.stats.get("q1", self.stats["median"]))

    @property
    def q3(self) -> float:
        return float(self.stats.get("q3", self.stats["median"]))

    @property
    def kind(self) -> str:
        return str(self.info.get("kind", ""))

    @property
    def mb_per_s(self) -> float:
        """Wire bytes over the median round."""
        return self.info["wire_bytes"] / self.median / 1e6

    def mb_per_s_iqr(self) -> tuple[float, float]:
        """Throughput at the slow (q3) and fast (q1) quartile rounds."""
        wire = self.info["wire_bytes"]
        return wire / self.q3 / 1e6, wire / self.q1 / 1e6


@dataclass
class Results:
    benches: list[Bench]
    machine: dict[str, Any] = field(default_factory=dict)
    commit: dict[str, Any] = field(default_factory=dict)
    when: str = ""
    source: str = ""

    def of(self, kind: str, **match: Any) -> list[Bench]:
        return [
            b
            for b in self.benches
            if b.kind == kind and all(b.info.get(k) == v for k, v in match.items())
        ]

    def one(self, kind: str, **match: Any) -> Bench | None:
        found = self.of(kind, **match)
        return found[0] if found else None

    def codecs(self) -> list[str]:
        names = {b.info["codec"] for b in self.of("encode")} | {
            b.info["codec"] for b in self.of("transfer", mode="whole")
        }
        return sorted(names, key=codec_key)


def codec_key(name: str) -> tuple[int, str]:
    return (CODEC_ORDER.index(name) if name in CODEC_ORDER else 99, name)


def load(path: Path) -> Results:
    data = json.loads(path.read_text(encoding="utf-8"))
    benches = [
        Bench(b["name"], b.get("group") or "", b.get("extra_info") or {}, b["stats"])
        for b in data.get("benchmarks", [])
        if b.get("stats")
    ]
    return Results(
        benches,
        data.get("machine_info") or {},
        data.get("commit_info") or {},
        data.get("datetime", ""),
        str(path),
    )


def find_results(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if Path("out.json").is_file():
        return Path("out.json")
    saved = sorted(Path(".benchmarks").glob("**/*.json"), key=lambda p: p.stat().st_mtime)
    if saved:
        return saved[-1]
    raise FileNotFoundError(
        "no results: run `uv run pytest --benchmark --benchmark-json=out.json` first, "
        "or pass the JSON file"
    )


# --- figures -------------------------------------------------------------------------------------


def figures(res: Results) -> dict[str, Figure]:
    """Every figure of the run: those the benchmarks stored (``figure`` and ``values``, or
    ``figures`` mapping several keys to values, in their extra_info) and those derived here.
    A key stored twice is an error."""
    out: dict[str, Figure] = {}

    def add(fig: Figure) -> None:
        if fig.key in out:
            raise FigureError(f"figure {fig.key!r} appears twice in {res.source}")
        out[fig.key] = fig

    for b in res.benches:
        several = b.info.get("figures")  # one run measuring several quantities at once
        if several is not None:
            if not isinstance(several, dict):
                raise FigureError(f"{b.name}: 'figures' must map keys to lists of values")
            for key, values in several.items():
                if not isinstance(values, list):
                    raise FigureError(f"figure {key!r} ({b.name}) has no list of values")
                add(Figure(key, tuple(values), f"min-max over {len(values)} rounds"))
        key = b.info.get("figure")
        if key is None:
            continue
        values = b.info.get("values")
        if not isinstance(values, list):
            raise FigureError(f"figure {key!r} ({b.name}) has no list of values")
        what = "sessions" if b.kind == "pair" else "rounds"
        add(Figure(key, tuple(values), f"min-max over {len(values)} {what}"))
    enc = res.one("encode", codec="json")
    if enc is not None:
        ratio = enc.info["wire_bytes"] / enc.info["text_bytes"]
        add(Figure("codec.json.wire-vs-text", (ratio,), "exact"))
    excess = memory_excess(res)
    if excess is not None:
        add(excess)
    return out


def memory_excess(res: Results) -> Figure | None:
    """Per round, the worst streamed chunk size's peak minus 4 x its chunk (tracemalloc)."""
    streams = [b for b in res.of("memory", mode="stream") if b.info.get("chunk_size")]
    if not streams:
        return None
    rounds = min(len(readings(b, "peak_bytes")) for b in streams)
    values = tuple(
        max(readings(b, "peak_bytes")[i] - 4 * b.info["chunk_size"] for b in streams)
        for i in range(rounds)
    )
    return Figure("memory.stream.over-4x-chunk", values, f"min-max over {rounds} rounds")


def readings(b: Bench, key: str) -> list[float]:
    """A memory benchmark's per-round readings of ``key`` (older runs stored one number)."""
    value = b.info.get(key)
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [v for v in values if v is not None]


# --- formatting --------------------------------------------------------------------------------


def chunk_label(size: int) -> str:
    if not size:
        return "unchunked"
    if size % MiB == 0:
        return f"{size // MiB} MiB"
    return f"{size // KiB} KiB"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f}"


def spread(b: Bench, scale: float = 1e3, digits: int = 2) -> str:
    """Median round with its interquartile range, in ms (or µs: scale 1e6, digits 0)."""
    return f"{b.median * scale:.{digits}f} [{b.q1 * scale:.{digits}f}-{b.q3 * scale:.{digits}f}]"


def value(v: float, unit: str) -> str:
    if unit == "%":
        return f"{v:.0%}"
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "KiB":
        return f"{round(v / KiB):+d} KiB"
    if unit == "s":
        return f"{v:.3g} s"
    if unit == "MB":
        return f"{v:.0f} MB"
    if unit == "/s":
        return f"{v:,.0f}/s"
    return f"{v:g}"


def figure_text(fig: Figure, unit: str) -> str:
    if len(fig.values) == 1:
        return f"{value(fig.median, unit)} ({fig.spread})"
    return (
        f"{value(fig.median, unit)} [{value(fig.lo, unit)} to {value(fig.hi, unit)}], {fig.spread}"
    )


def table(headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def chunk_sort_key(size: int) -> int:
    return size if size else 1 << 62  # unchunked last


# --- sections ----------------------------------------------------------------------------------


def machine_section(res: Results) -> str:
    m = res.machine
    ours = m.get("ayudantia") or {}
    cpu = m.get("cpu") or {}
    model = ours.get("cpu_model") or cpu.get("brand_raw") or m.get("processor") or "?"
    cores = ours.get("logical_cpus") or cpu.get("count") or "?"
    python = ours.get("python") or m.get("python_version") or "?"
    rows = [
        ("CPU", model),
        ("logical CPUs", cores),
        ("Python", f"{python} ({m.get('python_implementation', 'CPython')})"),
        ("OS", ours.get("platform") or f"{m.get('system', '')} {m.get('release', '')}".strip()),
        ("run", res.when or "?"),
    ]
    if res.commit.get("id"):
        dirty = " (uncommitted changes)" if res.commit.get("dirty") else ""
        rows.append(("commit", f"{res.commit['id'][:10]}{dirty}"))
    return table(["", ""], rows)


VERDICT_MARK = {
    tg.MET: "met",
    tg.MISSED: "**missed**",
    tg.UNCLEAR: "unclear",
    tg.SUSPECT: "**suspect** (beyond what the physics allows: noise, not a result)",
    tg.NOT_MEASURED: "not measured",
}


def target_rows(
    res: Results, figs: dict[str, Figure], partial: bool = False
) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for every target; FigureError for a missing required one."""
    rows = []
    for target in tg.TARGETS:
        verdict = tg.judge(target, figs, partial=partial)
        fig = figs.get(target.key)
        measured = "" if fig is None else figure_text(fig, target.unit) + sides(res, target.key)
        rows.append((f"{target.name} (`{target.key}`)", measured, VERDICT_MARK[verdict]))
    return rows


def sides(res: Results, key: str) -> str:
    """For a paired figure: each side's median round (median over sessions)."""
    pair = next((b for b in res.of("pair") if b.info.get("figure") == key), None)
    if pair is None:
        return ""
    sessions = pair.info["sessions"]
    num = statistics.median(s["numerator_s"] for s in sessions)
    den = statistics.median(s["denominator_s"] for s in sessions)
    fmt = ms if max(num, den) >= 1e-3 else us
    unit = "ms" if fmt is ms else "µs"
    return (
        f"; {pair.info['numerator']} {fmt(num)} {unit}, "
        f"{pair.info['denominator']} {fmt(den)} {unit}"
    )


def pairs_section(res: Results) -> str:
    pairs = res.of("pair")
    if not pairs:
        return "_No paired benchmarks in this run._"
    rows = []
    for b in sorted(pairs, key=lambda b: b.info["figure"]):
        sessions = b.info["sessions"]
        rows.append(
            (
                f"`{b.info['figure']}`",
                f"{b.info['numerator']} / {b.info['denominator']}",
                ", ".join(f"{s['ratio']:.3f}" for s in sessions),
                ", ".join(f"{s['ratio_q1']:.2f}-{s['ratio_q3']:.2f}" for s in sessions),
                sessions[0]["rounds"],
            )
        )
    return (
        "Each ratio is one test alternating both sides round by round or in short blocks "
        "(which side goes first swapping every block), in sessions of fresh connections "
        "warmed alike. Per session: the median of the per-round time ratio (round i of one "
        "side over round i of the other), and its interquartile range.\n\n"
        + table(
            ["figure", "time ratio", "session medians", "session IQRs", "rounds per session"],
            rows,
        )
    )


def codec_rows(res: Results) -> list[dict[str, Any]]:
    rows = []
    for name in res.codecs():
        enc, dec = res.one("encode", codec=name), res.one("decode", codec=name)
        if enc is None or dec is None:
            continue
        rows.append(
            {
                "codec": name,
                "encode": enc,
                "decode": dec,
                "wire": enc.info["wire_bytes"],
                "ratio": enc.info["wire_bytes"] / enc.info["text_bytes"],
            }
        )
    return rows


def codecs_section(res: Results) -> str:
    rows = codec_rows(res)
    if not rows:
        return "_No codec benchmarks in this run._"
    out = [
        table(
            ["codec", "encode ms", "decode ms", "wire bytes", "wire / text"],
            (
                (
                    r["codec"],
                    spread(r["encode"]),
                    spread(r["decode"]),
                    f"{r['wire']:,}",
                    f"{r['ratio']:.4f}",
                )
                for r in rows
            ),
        )
    ]
    impls = json_impl_rows(res)
    if impls:
        out += [
            "",
            "JSON implementations on the same message, same wire bytes: stdlib `json` "
            "(`ensure_ascii=False`) against orjson:",
            "",
            table(
                ["json implementation", "encode ms", "decode ms"],
                ((i, spread(e), spread(d)) for i, (e, d) in impls.items()),
            ),
        ]
    return "\n".join(out)


def json_impl_rows(res: Results) -> dict[str, tuple[Bench, Bench]]:
    impls: dict[str, tuple[Bench, Bench]] = {}
    for enc in res.of("json-encode"):
        dec = res.one("json-decode", impl=enc.info["impl"])
        if dec is not None:
            impls[enc.info["impl"]] = (enc, dec)
    return impls


def transfer_curves(res: Results, mode: str) -> dict[str, dict[int, Bench]]:
    curves: dict[str, dict[int, Bench]] = {}
    for b in res.of("transfer", mode=mode):
        curves.setdefault(b.info["codec"], {})[int(b.info["chunk_size"])] = b
    return curves


def rate_cell(b: Bench | None) -> str:
    if b is None:
        return ""
    slow, fast = b.mb_per_s_iqr()
    return f"{b.mb_per_s:.0f} [{slow:.0f}-{fast:.0f}]"


def transfer_section(res: Results) -> str:
    whole = transfer_curves(res, "whole")
    stream = transfer_curves(res, "stream")
    if not whole and not stream:
        return "_No transfer benchmarks in this run._"
    codecs = [c for c in res.codecs() if c in whole]
    sizes = sorted(
        {s for curve in (*whole.values(), *stream.values()) for s in curve}, key=chunk_sort_key
    )
    headers = ["chunk size", *(f"{c} MB/s" for c in codecs)]
    if stream:
        headers.append("raw stream MB/s")
    headers.append("frames")
    rows = []
    for s in sizes:
        frames = next(
            (c[s].info["frames"] for c in (*whole.values(), *stream.values()) if s in c), ""
        )
        row = [chunk_label(s), *(rate_cell(whole[c].get(s)) for c in codecs)]
        if stream:
            row.append(rate_cell(stream.get("raw", {}).get(s)))
        row.append(frames)
        rows.append(row)
    base = res.one("peer", peer="baseline")
    intro = (
        f"Plain socket, same round trip: **{rate_cell(base)} MB/s**. " if base is not None else ""
    )
    intro += (
        "MB/s is wire bytes over the median round trip (send, the peer receives and decodes "
        "all of it, one-byte ack), with the interquartile range of the rounds in brackets; "
        "the codec rows include encode and decode. These are separate tests: compare curves "
        "by shape, and read ratios from the paired figures above, not from this table."
    )
    return intro + "\n\n" + table(headers, rows)


PEER_LABELS = (
    ("baseline", "plain socket (size + bytes in one sendmsg; fresh buffer per message)"),
    ("mpconn", "multiprocessing.connection"),
    ("zmq", "pyzmq REQ/REP"),
)


def peers_section(res: Results) -> str:
    rows = []
    for peer, label in PEER_LABELS:
        book, small = res.one("peer", peer=peer), res.one("small", peer=peer)
        if book or small:
            rows.append((label, book and spread(book), small and spread(small, 1e6, 0)))
    whole = transfer_curves(res, "whole")
    for codec in res.codecs():
        small = res.one("small", peer="ayudantia", codec=codec)
        book = whole.get(codec, {}).get(0) if codec == "raw" else None
        if small is None and book is None:
            continue
        label = f"ayudantia {codec}" + (" (book unchunked)" if book else "")
        rows.append((label, book and spread(book), small and spread(small, 1e6, 0)))
    if not rows:
        return "_No peer benchmarks in this run._"
    return table(
        ["peer", "book round trip ms", "small message round trip µs"],
        ((label, book or "", small or "") for label, book, small in rows),
    )


def memory_rows(res: Results) -> list[tuple[int, Bench | None, Bench | None]]:
    whole = {int(b.info["chunk_size"]): b for b in res.of("memory", mode="whole")}
    stream = {int(b.info["chunk_size"]): b for b in res.of("memory", mode="stream")}
    sizes = sorted(set(whole) | set(stream), key=chunk_sort_key)
    return [(s, whole.get(s), stream.get(s)) for s in sizes]


def mem_cell(b: Bench | None, key: str) -> str:
    """Median MiB over the rounds, with the range; a zero is marked for the note below."""
    if b is None:
        return ""
    values = readings(b, key)
    if not values:
        return "n/a"
    med = statistics.median(values)
    text = f"{med / MiB:.2f}"
    lo, hi = f"{min(values) / MiB:.2f}", f"{max(values) / MiB:.2f}"
    if lo != hi:
        text += f" [{lo}-{hi}]"
    return text + (" (0*)" if min(values) <= 0 else "")


def memory_section(res: Results) -> str:
    rows = memory_rows(res)
    if not rows:
        return "_No memory benchmarks in this run._"
    out = []
    zero = False
    for size, whole, stream in rows:
        cells = [
            mem_cell(whole, "peak_bytes"),
            mem_cell(whole, "rss_peak_bytes"),
            mem_cell(stream, "peak_bytes"),
            mem_cell(stream, "rss_peak_bytes"),
        ]
        zero = zero or any("(0*)" in c for c in cells)
        bound = f"{(4 * size + MEMORY_CONSTANT) / MiB:.2f}" if size and stream else ""
        out.append((chunk_label(size), *cells, bound))
    text = table(
        [
            "chunk size",
            "whole: tracemalloc MiB",
            "whole: RSS MiB",
            "stream: tracemalloc MiB",
            "stream: RSS MiB",
            "4 x chunk + 256 KiB",
        ],
        out,
    )
    threshold = next(
        (b.info.get("mmap_threshold") for _, w, st in rows for b in (w, st) if b is not None),
        None,
    )
    notes = [
        "Median over the rounds [min-max when they differ]. Each configuration ran in a "
        "receiving process of its own, spawned fresh"
        + (
            f", with glibc's mmap threshold fixed at {threshold // KiB} KiB "
            "(`MALLOC_MMAP_THRESHOLD_`) so that every round's large buffers are fresh pages, "
            "as in a fresh process's first receive"
            if threshold
            else ""
        )
        + ". tracemalloc counts bytes Python allocated; RSS counts pages touched. They "
        "agree for the whole receives; where tracemalloc reads more, the difference is "
        "capacity allocated but never written (a chunked message's buffer grows by "
        "doubling, and only the message's bytes are touched)."
    ]
    if zero:
        notes.append(
            "(0*) A reading of 0 is real, not a failed probe: those allocations were "
            "below the mmap threshold and were served from heap pages the process already "
            "held, so its resident set did not grow."
        )
    return text + "\n\n" + "\n\n".join(notes)


def class_rows(res: Results) -> tuple[list[int], dict[str, dict[int, Bench]]]:
    """The whole-class runs: the student counts measured, and codec -> students -> run."""
    grid: dict[str, dict[int, Bench]] = {}
    for b in res.of("class"):
        grid.setdefault(str(b.info["codec"]), {})[int(b.info["students"])] = b
    students = sorted({n for row in grid.values() for n in row})
    return students, {c: grid[c] for c in sorted(grid, key=codec_key)}


def class_section(res: Results, figs: dict[str, Figure]) -> str:
    students, grid = class_rows(res)
    if not grid:
        return "_No whole-class benchmarks in this run._"

    def cell(b: Bench | None) -> str:
        if b is None:
            return ""
        fig = figs[b.info["figure"]]
        text = f"{fig.median:,.0f} [{fig.lo:,.0f}-{fig.hi:,.0f}]"
        return text if b.info.get("ok") else f"{text} (**FAILED**)"

    headers = ["codec", *(f"{n} student{'s' if n != 1 else ''}, questions/s" for n in students)]
    rows = [(c, *(cell(grid[c].get(n)) for n in students)) for c in grid]
    loads = ", ".join(
        f"{n} x {next(r[n] for r in grid.values() if n in r).info['questions']}" for n in students
    )
    rounds = max(len(b.info.get("values", [])) for row in grid.values() for b in row.values())
    intro = (
        "`ayudantia run --interval 0`: the Profesor, the Tareo, the Docencio and N students as "
        "separate processes on loopback. The students connect, wait on the run's start "
        "barrier and start together; questions/s is answers over the window from the "
        "class's first question to its last answer (`window_s` in `--report`). Median of "
        f"{rounds} rounds [min-max]. Students x questions each: {loads}."
    )
    return intro + "\n\n" + table(headers, rows)


def default_chunk(res: Results) -> tuple[int, str] | None:
    """The smallest streamed chunk size whose fast quartile reaches 90% of the best median."""
    curve = transfer_curves(res, "stream").get("raw") or {
        s: b for s, b in transfer_curves(res, "whole").get("raw", {}).items() if s
    }
    if not curve:
        return None
    best_size = max(curve, key=lambda s: curve[s].mb_per_s)
    best = curve[best_size].mb_per_s
    for size in sorted(curve):
        _slow, fast = curve[size].mb_per_s_iqr()
        if fast >= DEFAULT_CHUNK_TOLERANCE * best:
            return size, (
                f"{chunk_label(size)} is the smallest chunk size whose streamed throughput "
                f"({rate_cell(curve[size])} MB/s, median [IQR]) reaches "
                f"{DEFAULT_CHUNK_TOLERANCE:.0%} of the best median "
                f"({chunk_label(best_size)}: {best:.0f} MB/s) within its interquartile range"
            )
    return None


def compare_section(res: Results, other: Results, partial: bool = False) -> str:
    """Both runs' ranges and verdicts side by side, and whether every verdict agrees."""
    mine, theirs = figures(res), figures(other)
    rows, differ = [], 0
    for target in tg.TARGETS:
        a = tg.judge(target, mine, partial=partial)
        b = tg.judge(target, theirs, partial=partial)
        if a == tg.NOT_MEASURED and b == tg.NOT_MEASURED:
            continue
        differ += a != b
        cells = [
            figure_text(figs[target.key], target.unit) if target.key in figs else ""
            for figs in (mine, theirs)
        ]
        rows.append((f"`{target.key}`", cells[0], a, cells[1], b, "yes" if a == b else "**no**"))
    head = f"This run ({res.when or res.source}) against {other.source} ({other.when or '?'}): " + (
        "every verdict agrees." if not differ else f"**{differ} verdicts differ.**"
    )
    return (
        head
        + "\n\n"
        + table(["figure", "this run", "verdict", "other run", "verdict", "same"], rows)
    )


# --- the document ------------------------------------------------------------------------------


def render(
    res: Results,
    plots: list[Path],
    skipped: str | None,
    out: Path,
    notes: str,
    partial: bool = False,
    other: Results | None = None,
) -> str:
    figs = figures(res)
    rows = target_rows(res, figs, partial)

    def img(name: str, alt: str) -> str:
        for p in plots:
            if p.name == name:
                rel = os.path.relpath(p.resolve(), out.resolve().parent)
                return f"![{alt}]({Path(rel).as_posix()})\n\n"
        return ""

    parts = [
        "# Benchmarks: the Quijote over ayudantia",
        "",
        "Generated by `uv run python -m bench.report out.json` from the JSON of "
        "`uv run pytest --benchmark --benchmark-json=out.json`; nothing here comes from "
        "anywhere else. Absolute times are the median round with the interquartile range "
        "[q1-q3]; ratios are paired figures, the median of their sessions [min-max]. A "
        "target is **met** only when its whole range clears it, **missed** when none of "
        "it does, **unclear** in between, and **suspect** when the whole range is beyond "
        "what the physics allows.",
        "",
        "## Machine",
        "",
        machine_section(res),
        "",
        "## Targets",
        "",
        table(["target (figure key)", "measured: median [range]", "verdict"], rows),
        "",
    ]
    if other is not None:
        parts += ["### Against another session", "", compare_section(res, other, partial), ""]
    parts += [
        "## Paired figures",
        "",
        img("pairs.png", "paired ratios per session, with their targets"),
        pairs_section(res),
        "",
    ]
    chosen = default_chunk(res)
    if chosen:
        parts += [
            "## Default chunk size",
            "",
            f"**{chunk_label(chosen[0])}**: {chosen[1]}. Rule: the smallest streamed chunk "
            "size not clearly slower than 90% of the best, because a streamed receive holds "
            "about a chunk (see Memory), so beyond that point a bigger chunk buys memory, not "
            "speed. Not a target: sizes within each other's noise can swap between runs.",
            "",
        ]
    parts += [
        "## Codecs",
        "",
        'Encode and decode of the notebook\'s message with the whole book as "Texto", a '
        "fresh copy of the string every round. `raw` carries bytes only: its row is the "
        "book's str to UTF-8 and back, the floor under every text codec.",
        "",
        img("codecs.png", "encode/decode time and wire size per codec"),
        codecs_section(res),
        "",
        "## Transport",
        "",
        img("throughput.png", "MB/s against chunk size per codec, with the plain socket"),
        transfer_section(res),
        "",
        "### Against the alternatives",
        "",
        "The same round trip of the book's bytes, and of a small message (the notebook's "
        "\"Texto\", ~60 bytes; for ayudantia's text codecs the notebook's whole small dict). "
        "Every peer moves the same book; the plain socket sends a size per message and its "
        "receiver allocates a fresh buffer per message, as ayudantia's does.",
        "",
        peers_section(res),
        "",
        "## Memory",
        "",
        "Peak extra memory of the receiving process during one receive of the book (raw "
        "codec): tracemalloc (Python allocations) and the RSS high-water mark.",
        "",
        img("memory.png", "peak memory against chunk size"),
        memory_section(res),
        "",
    ]
    if res.of("class"):
        parts += ["## The class", "", class_section(res, figs), ""]
    if res.of("network"):
        from bench.network_report import network_section

        parts += [
            "## Network",
            "",
            img("network.png", "round trip per link"),
            network_section(res),
            "",
        ]
    if skipped:
        parts += [f"_Plots were skipped: {skipped}._", ""]
    if notes:
        parts += [notes.rstrip(), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    from bench import plots as plotting

    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("results", nargs="?", help="pytest-benchmark JSON (default: out.json)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown to write")
    parser.add_argument("--img", type=Path, default=DEFAULT_IMG, help="directory for the PNGs")
    parser.add_argument(
        "--notes",
        type=Path,
        default=DEFAULT_NOTES if DEFAULT_NOTES.is_file() else None,
        help="Markdown appended verbatim (default: bench/notes.md; --notes '' for none)",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="OTHER_JSON",
        help="another session's JSON: show both runs' ranges and verdicts side by side",
    )
    parser.add_argument(
        "--partial",
        action="store_true",
        help="a run of some benchmarks only: missing figures read 'not measured'",
    )
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    try:
        res = load(find_results(args.results))
        other = load(args.compare) if args.compare else None
        notes = args.notes.read_text(encoding="utf-8") if args.notes and args.notes.name else ""
    except (OSError, ValueError) as exc:
        print(f"bench.report: {exc}", file=sys.stderr)
        return 2
    if not res.benches:
        print(f"{res.source}: no benchmark results (was the run timed? use --benchmark)")
        return 1
    try:
        # Render once before plotting, so a bad figure fails before any file is written.
        render(res, [], None, args.out, notes, args.partial, other)
        written, skipped = (
            ([], "--no-plots")
            if args.no_plots
            else plotting.make_plots(res, args.img, figures(res))
        )
        text = render(res, written, skipped, args.out, notes, args.partial, other)
    except FigureError as exc:
        print(f"bench.report: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    for p in written:
        print(f"wrote {p}")
    if skipped:
        print(f"plots skipped: {skipped}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
