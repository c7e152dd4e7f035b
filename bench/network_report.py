"""The report's network section and plot: which codec x encoding wins on which link, and the
break-even bandwidth where compression starts to pay (from bench/bench_network.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ayudantia.netbench import LINKS, break_even_bps, format_bps
from bench.canvas import pyplot, save
from bench.formatting import table
from bench.results import DEFAULT_IMG, ROOT, Bench, Results, codec_key, load

ENCODINGS = ("none", "lz4", "zstd")


def grid(res: Results) -> dict[str, dict[tuple[str, str], Bench]]:
    """link -> (codec, encoding) -> its benchmark, links in the order of the matrix."""
    out: dict[str, dict[tuple[str, str], Bench]] = {}
    for b in res.of("network"):
        out.setdefault(str(b.info["link"]), {})[(b.info["codec"], b.info["encoding"])] = b
    order = [link.name for link in LINKS]
    return {k: out[k] for k in sorted(out, key=lambda k: order.index(k) if k in order else 99)}


def combos(cells: dict[str, dict[tuple[str, str], Bench]]) -> list[tuple[str, str]]:
    found = {c for row in cells.values() for c in row}
    return sorted(found, key=lambda c: (codec_key(c[0]), ENCODINGS.index(c[1])))


def winners(res: Results) -> dict[str, tuple[str, str, Bench]]:
    """Per link, the combination with the fastest median round trip."""
    out = {}
    for link, row in grid(res).items():
        (codec, enc), b = min(row.items(), key=lambda kv: kv[1].median)
        out[link] = (codec, enc, b)
    return out


def break_evens(res: Results) -> dict[tuple[str, str], float | None]:
    """(codec, encoding) -> bandwidth below which it beats the codec uncompressed (loopback)."""
    direct = grid(res).get("direct", {})
    out = {}
    for (codec, enc), b in direct.items():
        plain = direct.get((codec, "none"))
        if enc == "none" or plain is None:
            continue
        out[(codec, enc)] = break_even_bps(
            plain.median, b.median, plain.info["wire_bytes"], b.info["wire_bytes"]
        )
    return out


def network_section(res: Results) -> str:
    cells = grid(res)
    if not cells:
        return "_No network benchmarks in this run._"
    links = list(cells)
    headers = ["codec", "encoding", "wire bytes", *(f"{k}, ms" for k in links)]
    best = winners(res)
    rows = []
    for codec, enc in combos(cells):
        wire = next(
            row[(codec, enc)].info["wire_bytes"] for row in cells.values() if (codec, enc) in row
        )
        row: list[Any] = [codec, enc, f"{wire:,}"]
        for link in links:
            b = cells[link].get((codec, enc))
            text = (
                "" if b is None else f"{b.median * 1e3:,.1f} [{b.q1 * 1e3:,.0f}-{b.q3 * 1e3:,.0f}]"
            )
            row.append(f"**{text}**" if b is not None and best[link][2] is b else text)
        rows.append(row)
    lines = [
        f"- **{link}**: {codec} + {enc}, {b.median * 1e3:,.1f} ms"
        for link, (codec, enc, b) in best.items()
    ]
    even = break_evens(res)
    even_rows = [
        (c, e, format_bps(bps))
        for (c, e), bps in sorted(even.items(), key=lambda kv: (codec_key(kv[0][0]), kv[0][1]))
    ]
    loads = [
        b.info["load_avg"] for row in cells.values() for b in row.values() if "load_avg" in b.info
    ]
    load = (
        f" The 1-minute load average during the run: {min(loads):.1f}-{max(loads):.1f}; a "
        "loaded machine inflates the CPU-bound cells (loopback) far more than the link-bound "
        "ones (10 Mbit/s)."
        if loads
        else ""
    )
    intro = (
        'Round trip of the notebook\'s message with the whole book as "Texto" through '
        "`ayudantia proxy` (rate both ways, delay each way); the eco answers in the same "
        "codec and encoding. Median [q1-q3] in ms; bold: the link's winner. zstd at its "
        "default level (3), lz4 at 0." + load
    )
    even_intro = (
        "Break-even bandwidth, from the loopback round trips: the bits a round trip saves "
        "over the same codec uncompressed, divided by the CPU time it adds. Below it, "
        "compression pays."
    )
    return "\n\n".join(
        [
            intro,
            table(headers, rows),
            "Winners:\n\n" + "\n".join(lines),
            even_intro,
            table(["codec", "encoding", "pays below"], even_rows),
        ]
    )


def plot_network(res: Results, path: Path, plt: Any) -> bool:
    """Left: each combination's round trip per link (log). Right: break-even bandwidths."""
    cells = grid(res)
    if not cells:
        return False
    links, order = list(cells), combos(cells)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / max(len(order), 1)
    colors = plt.get_cmap("tab20")
    for i, (codec, enc) in enumerate(order):
        xs, med, lo, hi = [], [], [], []
        for j, link in enumerate(links):
            b = cells[link].get((codec, enc))
            if b is None:
                continue
            xs.append(j - 0.4 + (i + 0.5) * width)
            med.append(b.median * 1e3)
            lo.append((b.median - b.q1) * 1e3)
            hi.append((b.q3 - b.median) * 1e3)
        ax.bar(xs, med, width, yerr=[lo, hi], color=colors(i), label=f"{codec}+{enc}")
    ax.set_xticks(range(len(links)))
    ax.set_xticklabels(links)
    ax.set_yscale("log")
    ax.set_ylabel("round trip of the book, ms (median, IQR; log)")
    best = winners(res)
    ax.set_title(
        "Winners: " + "; ".join(f"{k}: {c}+{e}" for k, (c, e, _b) in best.items()), fontsize=8
    )
    ax.legend(fontsize=6, ncol=4)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    even = {k: v for k, v in break_evens(res).items() if v is not None}
    if even:
        names = [f"{c}+{e}" for c, e in even]
        values = [min(v, 1e11) / 1e6 for v in even.values()]
        ax2.barh(names, values, color="tab:green")
        for link in LINKS:
            if link.rate_bps:
                ax2.axvline(link.rate_bps / 1e6, color="gray", ls=":", lw=1)
                ax2.text(link.rate_bps / 1e6, -0.6, link.name, fontsize=7, rotation=90, va="bottom")
        ax2.set_xscale("log")
        ax2.set_xlabel("break-even bandwidth, Mbit/s (log): compression pays below it")
        ax2.set_title("Where compression starts to pay (from loopback)", fontsize=9)
        ax2.grid(True, axis="x", which="both", alpha=0.3)
    return save(fig, path, plt)


# Written after the figures on every regeneration: what the proxy's link promises, which
# the tables above rely on, and where to look at its bytes.
PROXY_NOTES = """## What the proxy's link does

- `--delay T` is a minimum, never less: by the proxy's own clock every byte leaves at
  least T after it arrived, each way (a round trip through `--delay 10ms` is 20 ms or a
  little more, never less). Timers fire on a millisecond grid, so a byte may leave up to
  about a millisecond late; with `--jitter J` the delay of a byte is between T - J and
  T + J, and bytes still never overtake each other.
- `--reset-after BYTES` counts both directions of a connection together: up
  (client->server) plus down (server->client). 600 bytes up and their 600-byte echo make
  1,200, so `--reset-after 1000` resets the connection 400 bytes into the echo. The count
  is per connection, from its first byte; once it is reached both sockets are reset
  (TCP RST), mid-message as often as not.

To see what crosses a hop, `ayudantia proxy --pcap FILE` (and `ayudantia run --pcap DIR`)
writes everything the proxy forwards as a capture for Wireshark: see
[docs/wireshark.md](wireshark.md).
"""


def main(argv: list[str] | None = None) -> int:
    """Write the network section alone (docs/network.md and its plot) from a run's JSON."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m bench.network_report", description=__doc__)
    parser.add_argument("results", type=Path, help="pytest-benchmark JSON of bench_network.py")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "network.md")
    parser.add_argument("--img", type=Path, default=DEFAULT_IMG)
    args = parser.parse_args(argv)
    res = load(args.results)
    if not res.of("network"):
        print(f"{args.results}: no network benchmarks", file=sys.stderr)
        return 1
    plt, _why = pyplot()
    image = None
    if plt is not None:
        args.img.mkdir(parents=True, exist_ok=True)
        if plot_network(res, args.img / "network.png", plt):
            image = args.img / "network.png"
    parts = [
        "# The book across links",
        "",
        "Generated by `uv run python -m bench.network_report net.json` from "
        "`uv run pytest bench/bench_network.py --benchmark --benchmark-json=net.json` "
        f"({res.when or 'undated'}).",
        "",
    ]
    if image is not None:
        parts += [f"![round trip per link](img/{image.name})", ""]
    parts += [network_section(res), "", PROXY_NOTES]
    args.out.write_text("\n".join(parts), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
