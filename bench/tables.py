"""The report's tables, one function a section: the machine, paired figures, codecs, transport,
the alternatives, memory, the class, and the default chunk size they lead to.
"""

from __future__ import annotations

import statistics

from bench import targets as tg
from bench.formatting import KiB, MiB, chunk_label, rate_cell, spread, table
from bench.results import (
    Bench,
    Results,
    chunk_sort_key,
    class_rows,
    codec_rows,
    json_impl_rows,
    memory_rows,
    readings,
    transfer_curves,
)
from bench.targets import Figure


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
                b.info.get("placement", "not recorded"),
            )
        )
    return (
        "Each ratio is one test alternating both sides round by round or in short blocks "
        "(which side goes first swapping every block), in sessions of fresh connections "
        "warmed alike. Per session: the median of the per-round time ratio (round i of one "
        "side over round i of the other), and its interquartile range. Placement: "
        "*split*, the benchmark on one CPU and the peer process on another; *pinned*, both "
        "on one; *unpinned*, where the scheduler puts them; *servers co-placed, client free*, "
        "both echo servers on one CPU, the client where the scheduler puts it.\n\n"
        + table(
            [
                "figure",
                "time ratio",
                "session medians",
                "session IQRs",
                "rounds per session",
                "placement",
            ],
            rows,
        )
    )


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
        bound = f"{(4 * size + tg.MEMORY_CONSTANT) / MiB:.2f}" if size and stream else ""
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


# The default stream chunk: the smallest chunk size whose throughput reaches this fraction
# of the best chunk size's median within its interquartile range.
DEFAULT_CHUNK_TOLERANCE = 0.90


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
