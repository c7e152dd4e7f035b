"""ayudantia.netbench: the break-even rule and the compression lesson's measurement."""

from __future__ import annotations

import math

import pytest

from ayudantia.netbench import break_even_bps, compression_lesson, format_bps
from tests.test_encodings import BOOKISH


def test_break_even_is_saved_bits_over_added_seconds() -> None:
    # 1 MB saved each way (16 Mbit a round trip) for 20 ms of CPU: pays below 800 Mbit/s
    assert break_even_bps(0.010, 0.030, 2_000_000, 1_000_000) == pytest.approx(800e6)
    assert break_even_bps(0.010, 0.009, 2_000_000, 1_000_000) == math.inf  # no cost: always
    assert break_even_bps(0.010, 0.030, 1_000, 1_100) is None  # no saving: never
    assert [format_bps(b) for b in (800e6, 2.5e9, 64e3, None, math.inf)] == [
        "800 Mbit/s",
        "2.5 Gbit/s",
        "64 kbit/s",
        "never",
        "always",
    ]


@pytest.mark.timeout(90)
def test_the_compression_lesson_measures_both_links_both_ways() -> None:
    text = (BOOKISH * 40).decode()  # ~1 MB of the book's first sentence: compresses well
    result = compression_lesson(text, rounds=1)
    cases = {(c["link"], c["encoding"]): c for c in result["cases"]}
    assert set(cases) == {
        (link, enc) for link in ("direct", "100mbit-10ms") for enc in ("none", "zstd")
    }
    for link in ("direct", "100mbit-10ms"):
        assert cases[link, "zstd"]["wire_bytes"] < cases[link, "none"]["wire_bytes"] / 20
    slow = cases["100mbit-10ms", "none"]
    # Twice the bytes at 100 Mbit/s plus 10 ms: the link's floor, whatever the machine,
    # less what an idle link may pass at once each way (one 2 ms burst, 0.5 ms of slack).
    assert slow["seconds"] >= 2 * (slow["wire_bytes"] * 8 / 100e6 + 0.010 - 0.0025)
    assert cases["100mbit-10ms", "zstd"]["seconds"] < slow["seconds"]
    assert result["break_even_bps"] is not None and result["break_even_bps"] > 0
