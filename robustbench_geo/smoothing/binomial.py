"""Confidence bounds of randomized smoothing (Cohen et al., ICML 2019, Section 3.2).

* :func:`clopper_pearson_lower`: one-sided ``(1 - alpha)`` lower bound on a binomial proportion
  (Clopper and Pearson 1934): the ``alpha`` quantile of ``Beta(k, n - k + 1)``; ``0`` when ``k = 0``.
  This is statsmodels' ``proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]`` that Cohen
  et al.'s and TSS's code use.
* :func:`predict_top`: Cohen et al.'s PREDICT: the top class of ``counts`` if a two-sided binomial test
  of its count against the runner-up's rejects ``p = 1/2`` at level ``alpha``, else abstain (``-1``).
* :func:`gaussian_radius`: the l2 radius ``sigma * Phi^-1(p_lower)`` of Gaussian smoothing
  (Cohen et al., Theorem 1 with ``p_B = 1 - p_A``); ``-inf`` when ``p_lower <= 1/2``.
"""

from __future__ import annotations

import math

import torch
from scipy.stats import beta, binomtest, norm

#: what :func:`predict_top` and the certificate return for an abstention
ABSTAIN = -1


def clopper_pearson_lower(successes: torch.Tensor, trials: int, alpha: float) -> torch.Tensor:
    """One-sided ``(1 - alpha)`` Clopper-Pearson lower bounds, element-wise.

    Args:
        successes: integer tensor of counts ``k`` (any shape), ``0 <= k <= trials``.
        trials: number of Bernoulli draws ``n`` (``>= 1``).
        alpha: failure probability in ``(0, 1)``.

    Returns:
        float64 tensor of the same shape: ``Beta(k, n - k + 1).ppf(alpha)``, ``0`` where ``k = 0``.
    """
    if trials < 1:
        raise ValueError(f"trials: expected at least 1 draw, got {trials}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a failure probability in (0, 1), got {alpha}")
    k = successes.detach().cpu().double().numpy()
    if (k < 0).any() or (k > trials).any():
        raise ValueError(f"successes: expected counts in [0, {trials}], got [{k.min()}, {k.max()}]")
    with_successes = k > 0
    out = torch.zeros(k.shape, dtype=torch.float64)
    if with_successes.any():
        vals = beta.ppf(alpha, k[with_successes], trials - k[with_successes] + 1)
        out[torch.from_numpy(with_successes)] = torch.from_numpy(vals.astype("float64"))
    return out


def gaussian_radius(p_lower: torch.Tensor, sigma: float) -> torch.Tensor:
    """``sigma * Phi^-1(p_lower)`` where ``p_lower > 1/2``, else ``-inf`` (float64)."""
    p = p_lower.double()
    r = torch.from_numpy(norm.ppf(p.clamp(0.0, 1.0).numpy())) * sigma
    return torch.where(p > 0.5, r, torch.full_like(r, -math.inf))


def predict_top(counts: torch.Tensor, alpha: float) -> int:
    """Cohen et al.'s PREDICT on one count vector ``(num_classes,)``: the top class or :data:`ABSTAIN`."""
    top2 = torch.topk(counts, min(2, counts.numel())).indices.tolist()
    c1 = int(counts[top2[0]])
    c2 = int(counts[top2[1]]) if len(top2) > 1 else 0
    if c1 + c2 == 0 or binomtest(c1, c1 + c2, 0.5).pvalue > alpha:
        return ABSTAIN
    return top2[0]


def proportion_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of ``successes / trials`` (``(nan, nan)`` for no trials)."""
    if trials <= 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo = 0.0 if successes == 0 else float(beta.ppf(a, successes, trials - successes + 1))
    hi = 1.0 if successes == trials else float(beta.ppf(1 - a, successes + 1, trials - successes))
    return lo, hi
