"""bench._paired: the interleaving order and the session summary, on synthetic steps."""

from __future__ import annotations

import pytest

from bench import _paired


def _recorder(name: str, log: list[str], seconds: float):
    def step() -> float:
        log.append(name)
        return seconds

    return step


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (1, "ab" + "ab" + "ba" + "ab" + "ba"),  # warm-up pair, then swapping every round
        (2, "ab" + "aabb" + "bbaa"),  # then swapping every block
        (3, "ab" + "aaabbb" + "b" + "a"),  # a short last block
    ],
)
def test_interleave_alternates_and_swaps_who_goes_first(block, expected):
    log: list[str] = []
    ta, tb = _paired.interleave(
        _recorder("a", log, 1.0), _recorder("b", log, 2.0), rounds=4, warmup=1, block=block
    )
    assert "".join(log) == expected
    assert ta == [1.0] * 4 and tb == [2.0] * 4  # warm-up rounds are not kept


def test_summary_is_the_median_of_per_round_ratios():
    s = _paired.summarize([2.0, 4.0, 9.0], [1.0, 1.0, 3.0])
    assert s["ratio"] == 3.0  # ratios 2, 4, 3
    assert (s["numerator_s"], s["denominator_s"], s["rounds"]) == (4.0, 1.0, 3)
    assert s["ratio_q1"] <= s["ratio"] <= s["ratio_q3"]
    with pytest.raises(ValueError):
        _paired.summarize([1.0], [1.0, 2.0])  # rounds must pair up
