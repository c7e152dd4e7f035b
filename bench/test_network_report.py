"""The network section of the report, on a saved run (bench/testdata/network.json: a real
``bench_network.py --benchmark`` run, trimmed to what the report reads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import network_report as nr
from bench.results import Results, load

NETWORK = Path(__file__).parent / "testdata" / "network.json"


@pytest.fixture(scope="module")
def res() -> Results:
    return load(NETWORK)


def test_grid_has_every_link_and_combination(res) -> None:
    cells = nr.grid(res)
    assert list(cells) == ["direct", "1gbit-1ms", "100mbit-10ms", "10mbit-40ms"]
    assert all(len(row) == 12 for row in cells.values())


def test_winner_is_the_fastest_median_of_its_link(res) -> None:
    for link, (codec, enc, best) in nr.winners(res).items():
        row = nr.grid(res)[link]
        assert row[(codec, enc)] is best
        assert best.median == min(b.median for b in row.values())
    # At 10 Mbit/s the wire decides: the winner is compressed, and every compressed cell
    # beats its codec uncompressed.
    slow = nr.grid(res)["10mbit-40ms"]
    assert nr.winners(res)["10mbit-40ms"][1] != "none"
    for codec in ("json", "msgpack", "pickle", "cbor"):
        assert slow[(codec, "zstd")].median < slow[(codec, "none")].median


def test_break_even_follows_the_loopback_cells(res) -> None:
    direct = nr.grid(res)["direct"]
    evens = nr.break_evens(res)
    assert set(evens) == {
        (c, e) for c in ("json", "msgpack", "pickle", "cbor") for e in ("lz4", "zstd")
    }
    plain, packed = direct[("json", "none")], direct[("json", "zstd")]
    saved = 2 * 8 * (plain.info["wire_bytes"] - packed.info["wire_bytes"])
    assert evens[("json", "zstd")] == pytest.approx(saved / (packed.median - plain.median))


def test_section_and_plot(res, tmp_path) -> None:
    text = nr.network_section(res)
    assert "| codec | encoding | wire bytes | direct, ms |" in text
    assert "Winners:" in text and "pays below" in text
    assert ("load average" in text) == any("load_avg" in b.info for b in res.of("network"))
    pytest.importorskip("matplotlib")
    assert nr.main([str(NETWORK), "--out", str(tmp_path / "n.md"), "--img", str(tmp_path)]) == 0
    assert (tmp_path / "network.png").stat().st_size > 10_000
    assert "![round trip per link](img/network.png)" in (tmp_path / "n.md").read_text()


def test_the_proxy_notes_survive_regeneration_and_are_in_the_docs(tmp_path) -> None:
    """docs/network.md is generated: what it says about --delay and --reset-after lives in
    the generator, so a regeneration keeps it, and the committed page carries it."""
    assert nr.main([str(NETWORK), "--out", str(tmp_path / "n.md"), "--img", str(tmp_path)]) == 0
    assert (tmp_path / "n.md").read_text(encoding="utf-8").endswith(nr.PROXY_NOTES)
    docs = Path(__file__).resolve().parents[1] / "docs" / "network.md"
    assert docs.read_text(encoding="utf-8").endswith(nr.PROXY_NOTES)
    flat = " ".join(nr.PROXY_NOTES.split())
    assert "`--reset-after BYTES` counts both directions of a connection together" in flat
    assert "`--delay T` is a minimum, never less" in flat
