"""PGD's helpers are exact: the budget projection, the tiled symmetrisation, the top pairs."""

from __future__ import annotations

import pytest
import torch

from robustbench_geo.attacks.graph.dense import symmetrize
from robustbench_geo.attacks.graph.relax import budget_shift, project_budget, top_pairs


def test_symmetrize_tiles_equal_the_plain_sum():
    for n, tile in ((7, 3), (64, 16), (50, 512)):
        g = torch.randn(n, n)
        assert torch.equal(symmetrize(g, tile), symmetrize(g, tile).T)
        assert torch.allclose(symmetrize(g, tile), g + g.T)


def _exact_projection(s: torch.Tensor, budget: float) -> torch.Tensor:
    """Projection onto {0 <= s <= 1, sum s <= budget} by sorting the breakpoints (independent of bisection)."""
    c = s.clamp(0, 1)
    if c.sum() <= budget:
        return c
    v = s.double().reshape(-1)
    pts = torch.sort(torch.cat([v, v - 1]).clamp_min(0)).values
    f = [(v - mu).clamp(0, 1).sum() for mu in pts.tolist()]
    k = next(i for i, fi in enumerate(f) if fi <= budget)  # f is non-increasing, piecewise linear between pts
    lo, hi, flo, fhi = float(pts[k - 1]), float(pts[k]), float(f[k - 1]), float(f[k])
    mu = hi if fhi == flo else lo + (flo - budget) * (hi - lo) / (flo - fhi)
    return (s.double() - mu).clamp(0, 1).float()


@pytest.mark.parametrize("seed", range(12))
def test_budget_projection_is_exact_with_and_without_hints(seed):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(40, generator=g) * [0.01, 0.5, 3.0][seed % 3] + [0.0, 0.3, 1.0][seed % 3]
    budget = float(torch.randint(1, 12, (1,), generator=g))
    exact = _exact_projection(s, budget)
    assert exact.sum() <= budget + 1e-4
    assert torch.allclose(project_budget(s, budget), exact, atol=1e-5)
    if s.clamp(0, 1).sum() > budget:
        mu = budget_shift(s, budget)
        for hint in (mu * 0.97, mu * 1.03, mu * 1e-3, mu * 50, 1e-9):
            got = (s - budget_shift(s, budget, hint=hint)).clamp(0, 1)
            assert got.sum() <= budget + 1e-4
            assert torch.allclose(got, exact, atol=1e-5), hint


@pytest.mark.parametrize("seed", range(8))
def test_top_pairs_is_the_exact_top_k_of_a_symmetric_matrix(seed):
    g = torch.Generator().manual_seed(seed)
    n = 25
    m = symmetrize(torch.randn(n, n, generator=g))
    m.fill_diagonal_(-float("inf"))
    banned = torch.rand(n, n, generator=g) < [0.0, 0.5, 0.97, 1.0][seed % 4]
    m.masked_fill_(banned | banned.T, -float("inf"))
    iu = torch.triu_indices(n, n, 1)
    vals = m[iu[0], iu[1]]
    for k in (1, 5, 40, 400):
        ids = top_pairs(m, k)
        finite = torch.isfinite(vals)
        expected = torch.sort(vals[finite], descending=True).values[:k]
        assert torch.equal(m.reshape(-1)[ids], expected)
        assert bool(((ids // n) < (ids % n)).all())
