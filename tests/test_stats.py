"""Accuracy intervals against hand-computed and published values."""

from __future__ import annotations

import math

import pytest

from robustbench_geo.stats import Estimate, accuracy_interval, difference_interval, estimate, mean_std, wilson_interval


def test_wilson_hand_computed():
    # p = 0.9, n = 50, z^2 = 3.8415: centre = (0.9 + 0.038415) / 1.076829 = 0.871462,
    # half = 1.959964 / 1.076829 * sqrt(0.0018 + 0.00038415) = 0.085063
    lo, hi = wilson_interval(45, 50)
    assert lo == pytest.approx(0.871462 - 0.085063, abs=1e-5) and hi == pytest.approx(0.871462 + 0.085063, abs=1e-5)


@pytest.mark.parametrize("k,n,lo,hi", [
    (81, 263, 0.2553, 0.3662),   # Newcombe (1998), Table I example
    (0, 10, 0.0, 0.2775),        # zero successes: the lower end is exactly 0
    (10, 10, 0.7225, 1.0),
    (15, 148, 0.0624, 0.1605),   # Newcombe (1998)
])
def test_wilson_published(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got[0] == pytest.approx(lo, abs=1e-4) and got[1] == pytest.approx(hi, abs=1e-4)


def test_wilson_properties():
    for n in (1, 7, 100, 10000):
        for k in range(0, n + 1, max(1, n // 13)):
            lo, hi = wilson_interval(k, n)
            assert 0 <= lo <= k / n <= hi <= 1
    assert wilson_interval(500, 1000)[1] - wilson_interval(500, 1000)[0] < wilson_interval(50, 100)[1] - wilson_interval(50, 100)[0]
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_bad_counts():
    with pytest.raises(ValueError, match="expected a number in"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="expected a finite non-negative"):
        wilson_interval(1, float("inf"))
    assert all(math.isnan(v) for v in accuracy_interval(float("nan"), 100))


def test_newcombe_difference_published():
    # Newcombe (1998) Table II example (e): 56/70 - 48/80, method 10 gives 0.0524 to 0.3339
    lo, hi = difference_interval(56 / 70, 70, 48 / 80, 80)
    assert lo == pytest.approx(0.0524, abs=1e-4) and hi == pytest.approx(0.3339, abs=1e-4)
    lo, hi = difference_interval(0.5, 100, 0.5, 100)
    assert lo < 0 < hi and lo == pytest.approx(-hi)


def test_mean_std_and_estimate():
    assert mean_std([0.8, 0.9]) == pytest.approx((0.85, math.sqrt(0.005)))
    assert mean_std([0.3]) == (0.3, 0.0)
    e = estimate([0.8, 0.9], [50, 50])  # pooled: 85 of 100
    assert (e.mean, e.seeds, e.n) == (pytest.approx(0.85), 2, 50)
    assert (e.low, e.high) == pytest.approx(wilson_interval(85, 100))
    assert e.format() == f"85.0 ± 7.1 % [{100 * e.low:.1f}, {100 * e.high:.1f}]"
    one = estimate([0.9], [50])
    assert one.format(n=True) == "90.0 % [78.6, 95.7] (n=50)"
    assert estimate([0.7], [None]).format() == "70.0 %"  # no sample count: no interval, never a made-up one
    assert Estimate(float("nan"), 0, float("nan"), float("nan"), 0, 0).format() == "n/a"
