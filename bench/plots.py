"""The report's PNGs: chunk-size curves and codec bars with their spread, paired ratios.

Every point is a median; bars and bands are the interquartile range of the rounds (or the
min-max of a paired figure's sessions), so a reader sees which differences are noise.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from bench import targets as tg
from bench.canvas import pyplot, save
from bench.formatting import MiB, chunk_label
from bench.network_report import plot_network
from bench.results import (
    Bench,
    Results,
    chunk_sort_key,
    codec_rows,
    json_impl_rows,
    memory_rows,
    readings,
    transfer_curves,
)
from bench.targets import Figure


def _x_positions(sizes: list[int]) -> dict[int, float]:
    """Chunk sizes on a log2 axis, with "unchunked" one step past the largest."""
    chunked = [s for s in sizes if s]
    top = math.log2(max(chunked)) if chunked else 20
    return {s: (math.log2(s) if s else top + 1.5) for s in sizes}


def _chunk_axis(ax: Any, pos: dict[int, float]) -> None:
    ticks = sorted(pos, key=chunk_sort_key)
    ax.set_xticks([pos[s] for s in ticks])
    ax.set_xticklabels([chunk_label(s) for s in ticks], rotation=30)
    ax.set_xlabel("chunk size")


def _curve(ax: Any, pos: dict[int, float], curve: dict[int, Bench], fmt: str, label: str):
    xs = sorted(curve, key=chunk_sort_key)
    med = [curve[s].mb_per_s for s in xs]
    iqr = [curve[s].mb_per_s_iqr() for s in xs]
    err = [
        [m - lo for m, (lo, _) in zip(med, iqr, strict=True)],
        [hi - m for m, (_, hi) in zip(med, iqr, strict=True)],
    ]
    ax.errorbar([pos[s] for s in xs], med, yerr=err, fmt=fmt, capsize=3, label=label)


def plot_throughput(res: Results, path: Path, plt: Any) -> bool:
    whole, stream = transfer_curves(res, "whole"), transfer_curves(res, "stream")
    if not whole and not stream:
        return False
    sizes = sorted({s for c in (*whole.values(), *stream.values()) for s in c}, key=chunk_sort_key)
    pos = _x_positions(sizes)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for codec in res.codecs():
        if whole.get(codec):
            _curve(ax, pos, whole[codec], "o-", codec)
    if "raw" in stream:
        _curve(ax, pos, stream["raw"], "s--", "raw, streamed")
    for peer, color, style, label in (
        ("baseline", "black", "-", "plain socket"),
        ("mpconn", "gray", ":", "multiprocessing.connection"),
        ("zmq", "gray", "-.", "pyzmq REQ/REP"),
    ):
        b = res.one("peer", peer=peer)
        if b:
            lo, hi = b.mb_per_s_iqr()
            ax.axhline(b.mb_per_s, color=color, ls=style, label=f"{label} ({b.mb_per_s:.0f})")
            ax.axhspan(lo, hi, color=color, alpha=0.12)
    _chunk_axis(ax, pos)
    ax.set_yscale("log")
    ax.set_ylabel("MB/s (wire bytes / median round trip; bars: IQR), log scale")
    ax.set_title("The Quijote over loopback: throughput by codec and chunk size")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return save(fig, path, plt)


def plot_codecs(res: Results, path: Path, plt: Any) -> bool:
    rows = codec_rows(res)
    if not rows:
        return False
    impls = {i: p for i, p in json_impl_rows(res).items() if i != "stdlib"}
    labels = [r["codec"] for r in rows] + [f"json via {i}" for i in impls]
    enc = [r["encode"] for r in rows] + [e for e, _ in impls.values()]
    dec = [r["decode"] for r in rows] + [d for _, d in impls.values()]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    xs = list(range(len(labels)))
    for offset, benches, label in ((-0.2, enc, "encode"), (0.2, dec, "decode")):
        med = [b.median * 1e3 for b in benches]
        err = [
            [(b.median - b.q1) * 1e3 for b in benches],
            [(b.q3 - b.median) * 1e3 for b in benches],
        ]
        ax1.bar([x + offset for x in xs], med, width=0.4, yerr=err, capsize=3, label=label)
    ax1.set_xticks(xs)
    ax1.set_xticklabels(labels, rotation=20)
    ax1.set_ylabel("ms (median round; bars: IQR)")
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
    return save(fig, path, plt)


def plot_memory(res: Results, path: Path, plt: Any) -> bool:
    rows = memory_rows(res)
    if not rows:
        return False
    pos = _x_positions([s for s, _, _ in rows])
    fig, ax = plt.subplots(figsize=(9, 5.5))
    zeros: list[float] = []
    lowest = math.inf
    for mode, idx, marker in (("whole", 1, "o"), ("stream", 2, "s")):
        for key, ls, what in (("peak_bytes", "-", "tracemalloc"), ("rss_peak_bytes", "--", "RSS")):
            pts = []
            for r in rows:
                values = readings(r[idx], key) if r[idx] is not None else []
                if not values:
                    continue
                med = statistics.median(values) / MiB
                if med <= 0:
                    zeros.append(pos[r[0]])
                    continue
                pts.append((pos[r[0]], med))
                lowest = min(lowest, med)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=marker, ls=ls, label=f"{mode}, {what}")
    if zeros:
        # A log axis has no 0: a reading of 0 is drawn below every other point, marked.
        floor = lowest / 3 if lowest < math.inf else 1e-3
        ax.plot(
            zeros,
            [floor] * len(zeros),
            "v",
            color="red",
            ls="none",
            label="0: RSS did not grow (heap pages reused; see the table)",
        )
    chunked = [s for s, _, st in rows if s and st is not None]
    if chunked:
        ax.plot(
            [pos[s] for s in chunked],
            [(4 * s + tg.MEMORY_CONSTANT) / MiB for s in chunked],
            color="black",
            lw=1,
            ls=":",
            label="4 x chunk + 256 KiB",
        )
    _chunk_axis(ax, pos)
    ax.set_yscale("log")
    ax.set_ylabel("peak extra memory of one receive, MiB (median; log)")
    ax.set_title("Receiver peak memory: whole vs streamed (raw codec, the book)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path, plt)


def plot_pairs(res: Results, figs: dict[str, Figure], path: Path, plt: Any) -> bool:
    """Each target with a figure: its session readings over the threshold."""
    shown = [t for t in tg.TARGETS if t.key in figs and len(figs[t.key].values) > 1]
    if not shown:
        return False
    fig, axes = plt.subplots(len(shown), 1, figsize=(9, 0.9 * len(shown) + 1), squeeze=False)
    for ax, target in zip(axes[:, 0], shown, strict=True):
        values = figs[target.key].values
        ax.plot(values, [0] * len(values), "o", alpha=0.7)
        ax.axvline(figs[target.key].median, color="tab:blue", ls="--", lw=0.8)
        ax.axvline(target.threshold, color="red", lw=1)
        if target.bound is not None:
            ax.axvline(target.bound, color="black", ls=":", lw=1)
        ax.set_yticks([])
        unit = {"%": "fraction", "x": "time ratio", "KiB": "bytes"}.get(target.unit, target.unit)
        ax.set_title(f"{target.key} ({unit})", fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
    fig.suptitle(
        "Readings per session or round (dashed: median; red: target; dotted: physical bound)",
        fontsize=9,
    )
    return save(fig, path, plt)


def make_plots(
    res: Results, img_dir: Path, figs: dict[str, Figure]
) -> tuple[list[Path], str | None]:
    """Write the PNGs; returns them, or why there are none."""
    plt, why = pyplot()
    if plt is None:
        return [], why
    img_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in (
        ("throughput.png", plot_throughput),
        ("codecs.png", plot_codecs),
        ("memory.png", plot_memory),
    ):
        if fn(res, img_dir / name, plt):
            written.append(img_dir / name)
    if plot_pairs(res, figs, img_dir / "pairs.png", plt):
        written.append(img_dir / "pairs.png")
    if plot_network(res, img_dir / "network.png", plt):
        written.append(img_dir / "network.png")
    return written, None
