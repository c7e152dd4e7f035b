"""Every figure of a run, keyed as bench.targets names them: the ones the benchmarks stored and
the ones derived from them. Apart from the tables, so verdicts and plots read the same figures.
"""

from __future__ import annotations

from bench.results import Results, readings
from bench.targets import Figure, FigureError


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
