"""Turn pytest-benchmark's JSON into docs/benchmarks.md and the plots under docs/img/.

    uv run pytest --benchmark --benchmark-json=out.json
    uv run python -m bench.report out.json

Without an argument it reads ``out.json``, else the newest run that ``--benchmark-autosave``
left under ``.benchmarks/``. Plots need matplotlib (``uv sync --group bench``); without it the
tables are still written and the report says the plots were skipped.

Every figure is taken from the best round (pytest-benchmark's ``min``): on a shared machine
noise only ever adds time, so the minimum is the best estimate of what the code costs.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KiB = 1024
MiB = 1024 * KiB
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
DEFAULT_IMG = ROOT / "docs" / "img"
CODEC_ORDER = ["raw", "json", "pickle", "msgpack"]
# The streamed-memory target: peak within about 4 x chunk size plus this constant.
MEMORY_CONSTANT = 256 * KiB
# The default chunk size: the smallest chunk whose streamed throughput is within this
# fraction of the best chunked throughput.
DEFAULT_CHUNK_TOLERANCE = 0.90


# --- reading -----------------------------------------------------------------------------------


@dataclass
class Bench:
    name: str
    group: str
    info: dict[str, Any]
    stats: dict[str, float]

    @property
    def best(self) -> float:
        return float(self.stats["min"])

    @property
    def median(self) -> float:
        return float(self.stats["median"])

    @property
    def kind(self) -> str:
        return str(self.info.get("kind", ""))

    @property
    def mb_per_s(self) -> float:
        return self.info["wire_bytes"] / self.best / 1e6


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
        return sorted(names, key=lambda n: (CODEC_ORDER.index(n) if n in CODEC_ORDER else 99, n))

    @property
    def baseline(self) -> Bench | None:
        return self.one("peer", peer="baseline")

    def baseline_rate(self) -> float | None:
        """Plain-socket MB/s: the baseline benchmark, else what the tests recorded."""
        if self.baseline is not None:
            return self.baseline.mb_per_s
        for b in self.of("transfer"):
            if b.info.get("baseline_mb_per_s"):
                return float(b.info["baseline_mb_per_s"])
        return None


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
    raise SystemExit(
        "no results: run `uv run pytest --benchmark --benchmark-json=out.json` first, "
        "or pass the JSON file"
    )


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


def mb(n: float) -> str:
    return f"{n / 1e6:.2f}"


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


def codec_rows(res: Results) -> list[dict[str, Any]]:
    rows = []
    for name in res.codecs():
        enc, dec = res.one("encode", codec=name), res.one("decode", codec=name)
        if enc is None or dec is None:
            continue
        rows.append(
            {
                "codec": name,
                "encode": enc.best,
                "decode": dec.best,
                "total": enc.best + dec.best,
                "wire": enc.info["wire_bytes"],
                "text": enc.info["text_bytes"],
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
            ["codec", "encode ms", "decode ms", "encode+decode ms", "wire bytes", "wire / text"],
            (
                (
                    r["codec"],
                    ms(r["encode"]),
                    ms(r["decode"]),
                    ms(r["total"]),
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
                ["json implementation", "encode ms", "decode ms", "encode+decode ms"],
                ((i, ms(e), ms(d), ms(e + d)) for i, (e, d) in impls.items()),
            ),
        ]
    return "\n".join(out)


def json_impl_rows(res: Results) -> dict[str, tuple[float, float]]:
    impls: dict[str, tuple[float, float]] = {}
    for enc in res.of("json-encode"):
        dec = res.one("json-decode", impl=enc.info["impl"])
        if dec is not None:
            impls[enc.info["impl"]] = (enc.best, dec.best)
    return impls


def transfer_curves(res: Results, mode: str) -> dict[str, dict[int, Bench]]:
    curves: dict[str, dict[int, Bench]] = {}
    for b in res.of("transfer", mode=mode):
        curves.setdefault(b.info["codec"], {})[int(b.info["chunk_size"])] = b
    return curves


def transfer_section(res: Results) -> str:
    base = res.baseline_rate()
    whole = transfer_curves(res, "whole")
    stream = transfer_curves(res, "stream")
    if not whole and not stream:
        return "_No transfer benchmarks in this run._"
    codecs = [c for c in res.codecs() if c in whole]
    sizes = sorted(
        {s for curve in (*whole.values(), *stream.values()) for s in curve}, key=chunk_sort_key
    )

    def cell(b: Bench | None) -> str:
        if b is None:
            return ""
        text = f"{b.mb_per_s:.0f}"
        if base:
            text += f" ({b.mb_per_s / base:.0%})"
        return text

    headers = ["chunk size", *(f"{c} MB/s" for c in codecs)]
    if stream:
        headers.append("raw stream MB/s")
    headers.append("frames")
    rows = []
    for s in sizes:
        frames = next(
            (c[s].info["frames"] for c in (*whole.values(), *stream.values()) if s in c), ""
        )
        row = [chunk_label(s), *(cell(whole[c].get(s)) for c in codecs)]
        if stream:
            row.append(cell(stream.get("raw", {}).get(s)))
        row.append(frames)
        rows.append(row)
    intro = (
        f"Plain-socket baseline: **{base:.0f} MB/s** (percentages are of it). "
        if base
        else "No baseline in this run. "
    )
    intro += (
        "MB/s is wire bytes over the best round trip (send, the peer receives and decodes "
        "all of it, one-byte ack), so the codec rows include encode and decode."
    )
    return intro + "\n\n" + table(headers, rows)


def peers_section(res: Results) -> str:
    rows = []
    raw_best = best_raw_whole(res)
    for peer, label in (
        ("baseline", "plain socket (sendall / recv_into)"),
        ("mpconn", "multiprocessing.connection"),
        ("zmq", "pyzmq REQ/REP"),
    ):
        book, small = res.one("peer", peer=peer), res.one("small", peer=peer)
        rows.append(
            (
                label,
                ms(book.best) if book else "",
                ms(book.median) if book else "",
                f"{book.mb_per_s:.0f}" if book else "",
                us(small.best) if small else "",
                us(small.median) if small else "",
            )
        )
    for codec in res.codecs():
        small = res.one("small", peer="ayudantia", codec=codec)
        book = raw_best if codec == "raw" else None
        label = f"ayudantia {codec}" + (
            f" (book at {chunk_label(book.info['chunk_size'])})" if book else ""
        )
        if small is None and book is None:
            continue
        rows.append(
            (
                label,
                ms(book.best) if book else "",
                ms(book.median) if book else "",
                f"{book.mb_per_s:.0f}" if book else "",
                us(small.best) if small else "",
                us(small.median) if small else "",
            )
        )
    return table(
        [
            "peer",
            "book best ms",
            "book median ms",
            "book MB/s",
            "small msg best µs",
            "small msg median µs",
        ],
        rows,
    )


def memory_rows(res: Results) -> list[tuple[int, Bench | None, Bench | None]]:
    whole = {int(b.info["chunk_size"]): b for b in res.of("memory", mode="whole")}
    stream = {int(b.info["chunk_size"]): b for b in res.of("memory", mode="stream")}
    sizes = sorted(set(whole) | set(stream), key=chunk_sort_key)
    return [(s, whole.get(s), stream.get(s)) for s in sizes]


def _mem(b: Bench | None, key: str) -> str:
    if b is None or b.info.get(key) is None:
        return ""
    return f"{b.info[key] / MiB:.2f}"


def memory_section(res: Results) -> str:
    rows = memory_rows(res)
    if not rows:
        return "_No memory benchmarks in this run._"
    out = []
    for size, whole, stream in rows:
        bound = f"{(4 * size + MEMORY_CONSTANT) / MiB:.2f}" if size and stream else ""
        out.append(
            (
                chunk_label(size),
                _mem(whole, "peak_bytes"),
                _mem(whole, "rss_peak_bytes"),
                _mem(stream, "peak_bytes"),
                _mem(stream, "rss_peak_bytes"),
                bound,
            )
        )
    return table(
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


# --- targets and the default chunk size ----------------------------------------------------


def class_rows(res: Results) -> tuple[list[int], dict[str, dict[int, Bench]]]:
    """The whole-class runs: the student counts measured, and codec -> students -> run."""
    grid: dict[str, dict[int, Bench]] = {}
    for b in res.of("class"):
        grid.setdefault(str(b.info["codec"]), {})[int(b.info["students"])] = b
    students = sorted({n for row in grid.values() for n in row})
    order = sorted(grid, key=lambda n: (CODEC_ORDER.index(n) if n in CODEC_ORDER else 99, n))
    return students, {c: grid[c] for c in order}


def class_section(res: Results) -> str:
    students, grid = class_rows(res)
    if not grid:
        return "_No whole-class benchmarks in this run._"

    def cell(b: Bench | None) -> str:
        if b is None:
            return ""
        text = f"{float(b.info['questions_per_s']):,.0f}"
        return text if b.info.get("ok") else f"{text} (**FAILED**)"

    headers = ["codec", *(f"{n} student{'s' if n != 1 else ''}, questions/s" for n in students)]
    rows = [(c, *(cell(grid[c].get(n)) for n in students)) for c in grid]
    loads = ", ".join(
        f"{n} x {next(r[n] for r in grid.values() if n in r).info['questions']}" for n in students
    )
    intro = (
        "`ayudantia run --interval 0`: the Profesor, the Tareo, the Docencio and N students as "
        "separate processes on loopback. Questions/s is answers delivered over the students' "
        "first question to last answer, best round (start-up not included). Students x "
        f"questions each: {loads}."
    )
    return intro + "\n\n" + table(headers, rows)


def best_raw_whole(res: Results) -> Bench | None:
    curve = transfer_curves(res, "whole").get("raw", {})
    return min(curve.values(), key=lambda b: b.best) if curve else None


def best_raw_framed(res: Results) -> Bench | None:
    framed = [b for b in res.of("transfer", codec="raw")]
    return max(framed, key=lambda b: b.mb_per_s) if framed else None


def default_chunk(res: Results) -> tuple[int, str] | None:
    """The smallest chunk size whose streamed throughput is within 10% of the best one."""
    curve = transfer_curves(res, "stream").get("raw") or {
        s: b for s, b in transfer_curves(res, "whole").get("raw", {}).items() if s
    }
    if not curve:
        return None
    best = max(b.mb_per_s for b in curve.values())
    for size in sorted(curve):
        rate = curve[size].mb_per_s
        if rate >= DEFAULT_CHUNK_TOLERANCE * best:
            return size, (
                f"{chunk_label(size)} is the smallest chunk size whose streamed throughput "
                f"({rate:.0f} MB/s) is within {1 - DEFAULT_CHUNK_TOLERANCE:.0%} of the best "
                f"chunk size's ({best:.0f} MB/s)"
            )
    return None


def targets(res: Results) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows."""
    rows: list[tuple[str, str, str]] = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    base = res.baseline_rate()
    framed = best_raw_framed(res)
    if base and framed:
        r = framed.mb_per_s / base
        rows.append(
            (
                "framed Quijote transfer at its best chunk size >= 85% of the raw socket",
                f"{r:.0%} ({framed.info['mode']}, {chunk_label(framed.info['chunk_size'])}: "
                f"{framed.mb_per_s:.0f} vs {base:.0f} MB/s)",
                verdict(r >= 0.85),
            )
        )
    mp_book, raw = res.one("peer", peer="mpconn"), best_raw_whole(res)
    if mp_book and raw:
        r = raw.best / mp_book.best
        rows.append(
            (
                "book round trip (raw codec) within 1.25x of multiprocessing.connection",
                f"{r:.2f}x ({ms(raw.best)} vs {ms(mp_book.best)} ms)",
                verdict(r <= 1.25),
            )
        )
    mp_small, raw_small = res.one("small", peer="mpconn"), res.one("small", codec="raw")
    if mp_small and raw_small:
        r = raw_small.best / mp_small.best
        rows.append(
            (
                "small message round trip (raw) within 1.25x of multiprocessing.connection",
                f"{r:.2f}x ({us(raw_small.best)} vs {us(mp_small.best)} µs)",
                verdict(r <= 1.25),
            )
        )
    streams = [(s, st) for s, _w, st in memory_rows(res) if st is not None and s]
    if streams:
        over = max(st.info["peak_bytes"] - 4 * s for s, st in streams)
        worst = max(streams, key=lambda p: p[1].info["peak_bytes"] / (4 * p[0] + MEMORY_CONSTANT))
        rows.append(
            (
                "streamed receive peak memory within about 4x chunk size plus a constant",
                f"peak - 4 x chunk <= {over / KiB:.0f} KiB at every chunk size "
                f"(at {chunk_label(worst[0])}: {worst[1].info['peak_bytes'] / KiB:.0f} KiB)",
                verdict(over <= MEMORY_CONSTANT),
            )
        )
    by_codec = {r["codec"]: r for r in codec_rows(res)}
    if "json" in by_codec:
        r = by_codec["json"]["ratio"]
        rows.append(
            ("json wire size within 5% of the book's UTF-8 size", f"{r:.4f}", verdict(r <= 1.05))
        )
    if "msgpack" in by_codec and "pickle" in by_codec:
        r = by_codec["msgpack"]["total"] / by_codec["pickle"]["total"]
        rows.append(
            (
                "msgpack encode+decode within 1.3x of pickle's",
                f"{r:.2f}x ({ms(by_codec['msgpack']['total'])} vs "
                f"{ms(by_codec['pickle']['total'])} ms)",
                verdict(r <= 1.3),
            )
        )
    if "json" in by_codec and "msgpack" in by_codec:
        r = by_codec["json"]["total"] / by_codec["msgpack"]["total"]
        rows.append(
            (
                "json encode+decode within 2x of msgpack's",
                f"{r:.2f}x ({ms(by_codec['json']['total'])} vs "
                f"{ms(by_codec['msgpack']['total'])} ms)",
                verdict(r <= 2.0),
            )
        )
        orj = json_impl_rows(res).get("orjson")
        if orj:
            r = sum(orj) / by_codec["msgpack"]["total"]
            rows.append(
                (
                    "(same, if the json codec used orjson)",
                    f"{r:.2f}x ({ms(sum(orj))} vs {ms(by_codec['msgpack']['total'])} ms)",
                    verdict(r <= 2.0),
                )
            )
    return rows


# --- plots -------------------------------------------------------------------------------------


def _x_positions(sizes: list[int]) -> dict[int, float]:
    """Chunk sizes on a log2 axis, with "unchunked" one step past the largest."""
    import math

    chunked = [s for s in sizes if s]
    top = math.log2(max(chunked)) if chunked else 20
    return {s: (math.log2(s) if s else top + 1.5) for s in sizes}


def _chunk_axis(ax: Any, pos: dict[int, float]) -> None:
    ticks = sorted(pos, key=chunk_sort_key)
    ax.set_xticks([pos[s] for s in ticks])
    ax.set_xticklabels([chunk_label(s) for s in ticks], rotation=30)
    ax.set_xlabel("chunk size")


def plot_throughput(res: Results, path: Path, plt: Any) -> bool:
    whole, stream = transfer_curves(res, "whole"), transfer_curves(res, "stream")
    if not whole and not stream:
        return False
    sizes = sorted({s for c in (*whole.values(), *stream.values()) for s in c}, key=chunk_sort_key)
    pos = _x_positions(sizes)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for codec in res.codecs():
        curve = whole.get(codec)
        if curve:
            xs = sorted(curve, key=chunk_sort_key)
            ax.plot([pos[s] for s in xs], [curve[s].mb_per_s for s in xs], "o-", label=codec)
    if "raw" in stream:
        xs = sorted(stream["raw"], key=chunk_sort_key)
        ax.plot(
            [pos[s] for s in xs],
            [stream["raw"][s].mb_per_s for s in xs],
            "s--",
            label="raw, streamed",
        )
    base = res.baseline_rate()
    if base:
        ax.axhline(base, color="black", lw=2, label=f"plain socket ({base:.0f} MB/s)")
    for peer, style, label in (
        ("mpconn", ":", "multiprocessing.connection"),
        ("zmq", "-.", "pyzmq REQ/REP"),
    ):
        b = res.one("peer", peer=peer)
        if b:
            ax.axhline(b.mb_per_s, color="gray", ls=style, label=f"{label} ({b.mb_per_s:.0f})")
    _chunk_axis(ax, pos)
    ax.set_yscale("log")
    ax.set_ylabel("MB/s (wire bytes / best round trip), log scale")
    ax.set_title("The Quijote over loopback: throughput by codec and chunk size")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_codecs(res: Results, path: Path, plt: Any) -> bool:
    rows = codec_rows(res)
    if not rows:
        return False
    impls = json_impl_rows(res)
    labels = [r["codec"] for r in rows] + [f"json via {i}" for i in impls if i != "stdlib"]
    enc = [r["encode"] * 1e3 for r in rows] + [
        e * 1e3 for i, (e, _) in impls.items() if i != "stdlib"
    ]
    dec = [r["decode"] * 1e3 for r in rows] + [
        d * 1e3 for i, (_, d) in impls.items() if i != "stdlib"
    ]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    xs = range(len(labels))
    ax1.bar([x - 0.2 for x in xs], enc, width=0.4, label="encode")
    ax1.bar([x + 0.2 for x in xs], dec, width=0.4, label="decode")
    ax1.set_xticks(list(xs))
    ax1.set_xticklabels(labels, rotation=20)
    ax1.set_ylabel("ms (best round)")
    ax1.set_title("Encode / decode of the message with the whole book")
    ax1.legend()
    ax1.grid(True, axis="y", alpha=0.3)
    ratios = [r["ratio"] for r in rows]
    ax2.bar([r["codec"] for r in rows], ratios, color="tab:green")
    ax2.axhline(1.0, color="black", lw=1)
    for i, v in enumerate(ratios):
        ax2.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax2.set_ylim(min(0.9, min(ratios) - 0.02), max(ratios) + 0.05)
    ax2.set_ylabel("wire bytes / UTF-8 bytes of the text")
    ax2.set_title("Wire size")
    ax2.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_memory(res: Results, path: Path, plt: Any) -> bool:
    rows = memory_rows(res)
    if not rows:
        return False
    pos = _x_positions([s for s, _, _ in rows])
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for mode, idx, marker in (("whole", 1, "o"), ("stream", 2, "s")):
        for key, ls, what in (("peak_bytes", "-", "tracemalloc"), ("rss_peak_bytes", "--", "RSS")):
            pts = [
                (pos[r[0]], r[idx].info[key] / MiB)
                for r in rows
                # RSS can show 0: the allocator reused pages the process already had.
                if r[idx] is not None and (r[idx].info.get(key) or 0) > 0
            ]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=marker, ls=ls, label=f"{mode}, {what}")
    chunked = [s for s, _, st in rows if s and st is not None]
    if chunked:
        ax.plot(
            [pos[s] for s in chunked],
            [(4 * s + MEMORY_CONSTANT) / MiB for s in chunked],
            color="black",
            lw=1,
            ls=":",
            label="4 x chunk + 256 KiB",
        )
    _chunk_axis(ax, pos)
    ax.set_yscale("log")
    ax.set_ylabel("peak extra memory of one receive, MiB (log)")
    ax.set_title("Receiver peak memory: whole vs streamed (raw codec, the book)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def make_plots(res: Results, img_dir: Path) -> tuple[list[Path], str | None]:
    """Write the PNGs; returns them, or why there are none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed (`uv sync --group bench`)"
    img_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in (
        ("throughput.png", plot_throughput),
        ("codecs.png", plot_codecs),
        ("memory.png", plot_memory),
    ):
        if fn(res, img_dir / name, plt):
            written.append(img_dir / name)
    return written, None


# --- the document ------------------------------------------------------------------------------


def render(res: Results, plots: list[Path], skipped: str | None, out: Path, notes: str) -> str:
    def img(name: str, alt: str) -> str:
        for p in plots:
            if p.name == name:
                rel = os.path.relpath(p.resolve(), out.resolve().parent)
                return f"![{alt}]({Path(rel).as_posix()})\n\n"
        return ""

    parts = [
        "# Benchmarks: the Quijote over ayudantia",
        "",
        "Generated by `uv run python -m bench.report` from the JSON of "
        "`uv run pytest --benchmark --benchmark-json=out.json`. Times are the best round "
        "(pytest-benchmark's min). Regenerate on your machine to see what a codec and a "
        "chunk size cost there; add `-v` to the pytest run to see each benchmark as it runs.",
        "",
        "## Machine",
        "",
        machine_section(res),
        "",
        "## Targets",
        "",
        table(["target", "measured", ""], targets(res)) if targets(res) else "_Not measured._",
        "",
    ]
    chosen = default_chunk(res)
    if chosen:
        parts += [
            "## Default chunk size",
            "",
            f"**{chunk_label(chosen[0])}**: {chosen[1]}. Rule: the smallest chunk size within "
            f"{1 - DEFAULT_CHUNK_TOLERANCE:.0%} of the best streamed throughput, because a "
            "streamed receive holds about a chunk (see Memory), so beyond that point a "
            "bigger chunk buys memory, not speed.",
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
        img("throughput.png", "MB/s against chunk size per codec, with the raw-socket baseline"),
        transfer_section(res),
        "",
        "### Against the alternatives",
        "",
        "The same round trip of the book's bytes, and of a small message (the notebook's "
        "\"Texto\", ~60 bytes; for ayudantia's text codecs the notebook's whole small dict).",
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
        parts += ["## The class", "", class_section(res), ""]
    if skipped:
        parts += [f"_Plots were skipped: {skipped}._", ""]
    if notes:
        parts += [notes.rstrip(), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("results", nargs="?", help="pytest-benchmark JSON (default: out.json)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown to write")
    parser.add_argument("--img", type=Path, default=DEFAULT_IMG, help="directory for the PNGs")
    parser.add_argument(
        "--notes", type=Path, help="Markdown appended verbatim (analysis of this run)"
    )
    args = parser.parse_args(argv)
    res = load(find_results(args.results))
    if not res.benches:
        print(f"{res.source}: no benchmark results (was the run timed? use --benchmark)")
        return 1
    plots, skipped = make_plots(res, args.img)
    notes = args.notes.read_text(encoding="utf-8") if args.notes else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(res, plots, skipped, args.out, notes), encoding="utf-8")
    print(f"wrote {args.out}")
    for p in plots:
        print(f"wrote {p}")
    if skipped:
        print(f"plots skipped: {skipped}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
