"""Uncertainty of accuracies: Wilson score intervals, Newcombe differences, mean and std over seeds.

A leaf module (standard library only) so that every layer can use it. Accuracies are fractions in
``[0, 1]``; ``n`` is the number of independent trials behind one (test images, test nodes, or
targets). Intervals are two-sided 95 % by default (``z`` = 1.959964).

>>> lo, hi = wilson_interval(45, 50)
>>> round(lo, 4), round(hi, 4)
(0.7864, 0.9565)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

#: two-sided 95 % normal quantile
Z95 = 1.959963984540054


def _check_counts(successes: float, n: float) -> None:
    if not (isinstance(n, (int, float)) and math.isfinite(n) and n >= 0):
        raise ValueError(f"n: expected a finite non-negative number of trials, got {n!r}")
    if not (isinstance(successes, (int, float)) and math.isfinite(successes) and 0 <= successes <= n):
        raise ValueError(f"successes: expected a number in [0, n={n}], got {successes!r}")


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``.

    Args:
        successes: number of successes (correctly classified samples), ``0 <= successes <= n``.
        n: number of trials; ``0`` gives ``(nan, nan)``.
        z: normal quantile (1.96 for 95 %).

    Returns:
        ``(low, high)`` in ``[0, 1]``.
    """
    _check_counts(successes, n)
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))  # p is inside (rounding)


def accuracy_interval(accuracy: float, n: float, z: float = Z95) -> tuple[float, float]:
    """:func:`wilson_interval` of an accuracy measured on ``n`` samples (``accuracy * n`` is rounded)."""
    if accuracy is None or n is None or not math.isfinite(accuracy) or not math.isfinite(n) or n <= 0:
        return float("nan"), float("nan")
    return wilson_interval(min(max(round(accuracy * n), 0), n), n, z)


def difference_interval(acc_a: float, n_a: float, acc_b: float, n_b: float, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for ``acc_a - acc_b`` (two independent samples).

    Built from the two Wilson intervals ``(la, ua)``, ``(lb, ub)``:
    ``d - sqrt((a - la)^2 + (ub - b)^2)`` to ``d + sqrt((ua - a)^2 + (b - lb)^2)``. Models
    evaluated on the same test samples are paired; treating them as independent makes the
    interval wider (conservative), never narrower.
    """
    la, ua = accuracy_interval(acc_a, n_a, z)
    lb, ub = accuracy_interval(acc_b, n_b, z)
    if any(math.isnan(v) for v in (la, ua, lb, ub)):
        return float("nan"), float("nan")
    d = acc_a - acc_b
    return d - math.sqrt((acc_a - la) ** 2 + (ub - acc_b) ** 2), d + math.sqrt((ua - acc_a) ** 2 + (acc_b - lb) ** 2)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for one value, nan for none)."""
    vals = [float(v) for v in values]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


@dataclass(frozen=True)
class Estimate:
    """An accuracy over one or more seeds with its uncertainty (fractions in ``[0, 1]``).

    Attributes:
        mean: mean over seeds.
        std: sample std over seeds (0 for one seed).
        low, high: 95 % Wilson interval of the pooled samples (all seeds' trials together).
        n: trials per seed (the mean when seeds differ).
        seeds: number of seeds.
    """

    mean: float
    std: float
    low: float
    high: float
    n: float
    seeds: int

    def format(self, digits: int = 1, *, n: bool = False) -> str:
        """``"45.2 % [40.9, 49.6]"``; ``"45.2 ± 1.3 % [..]"`` over several seeds; ``n=True`` appends ``(n=500)``."""
        if math.isnan(self.mean):
            return "n/a"
        s = f"{100 * self.mean:.{digits}f}"
        if self.seeds > 1:
            s += f" ± {100 * self.std:.{digits}f}"
        s += " %"
        if not math.isnan(self.low):
            s += f" [{100 * self.low:.{digits}f}, {100 * self.high:.{digits}f}]"
        if n and math.isfinite(self.n):
            s += f" (n={self.n:g}" + (f" x {self.seeds} seeds" if self.seeds > 1 else "") + ")"
        return s


def estimate(accuracies: Sequence[float], ns: Sequence[float], z: float = Z95) -> Estimate:
    """Combine per-seed accuracies ``accuracies[i]`` measured on ``ns[i]`` samples.

    The interval is the Wilson interval of the pooled counts ``sum(acc_i * n_i) / sum(n_i)``
    (sampling noise); ``std`` is the spread over seeds (training and attack randomness).
    Entries whose accuracy or ``n`` is missing (None/nan) are left out of the interval; the
    mean uses every finite accuracy.
    """
    if len(accuracies) != len(ns):
        raise ValueError(f"expected as many sample counts as accuracies, got {len(ns)} and {len(accuracies)}")
    accs = [float(a) for a in accuracies if a is not None and math.isfinite(float(a))]
    mean, std = mean_std(accs)
    pairs = [(float(a), float(k)) for a, k in zip(accuracies, ns) if a is not None and k is not None
             and math.isfinite(float(a)) and math.isfinite(float(k)) and float(k) > 0]
    total = sum(k for _, k in pairs)
    if pairs:
        low, high = wilson_interval(min(sum(round(a * k) for a, k in pairs), total), total, z)
    else:
        low, high = float("nan"), float("nan")
    return Estimate(mean, std, low, high, total / len(pairs) if pairs else float("nan"), len(accs))
