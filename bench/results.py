"""A pytest-benchmark run as the report reads it: its benchmarks, and the selections of them that
both the tables and the plots draw (curves per codec, rows per chunk size, the class grid).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent  # the checkout: where docs/ is written
DEFAULT_IMG = ROOT / "docs" / "img"

CODEC_ORDER = ["raw", "json", "pickle", "msgpack"]


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


def readings(b: Bench, key: str) -> list[float]:
    """A memory benchmark's per-round readings of ``key`` (older runs stored one number)."""
    value = b.info.get(key)
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [v for v in values if v is not None]


def transfer_curves(res: Results, mode: str) -> dict[str, dict[int, Bench]]:
    curves: dict[str, dict[int, Bench]] = {}
    for b in res.of("transfer", mode=mode):
        curves.setdefault(b.info["codec"], {})[int(b.info["chunk_size"])] = b
    return curves


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


def json_impl_rows(res: Results) -> dict[str, tuple[Bench, Bench]]:
    impls: dict[str, tuple[Bench, Bench]] = {}
    for enc in res.of("json-encode"):
        dec = res.one("json-decode", impl=enc.info["impl"])
        if dec is not None:
            impls[enc.info["impl"]] = (enc, dec)
    return impls


def chunk_sort_key(size: int) -> int:
    """Chunk sizes in increasing order, unchunked (0) after the largest."""
    return size if size else 1 << 62  # unchunked last


def memory_rows(res: Results) -> list[tuple[int, Bench | None, Bench | None]]:
    whole = {int(b.info["chunk_size"]): b for b in res.of("memory", mode="whole")}
    stream = {int(b.info["chunk_size"]): b for b in res.of("memory", mode="stream")}
    sizes = sorted(set(whole) | set(stream), key=chunk_sort_key)
    return [(s, whole.get(s), stream.get(s)) for s in sizes]


def class_rows(res: Results) -> tuple[list[int], dict[str, dict[int, Bench]]]:
    """The whole-class runs: the student counts measured, and codec -> students -> run."""
    grid: dict[str, dict[int, Bench]] = {}
    for b in res.of("class"):
        grid.setdefault(str(b.info["codec"]), {})[int(b.info["students"])] = b
    students = sorted({n for row in grid.values() for n in row})
    return students, {c: grid[c] for c in sorted(grid, key=codec_key)}
