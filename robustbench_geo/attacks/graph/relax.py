"""What the gradient structure attacks share on relaxed flips: the budget projection and binary flip sets.

Relaxed flips ``s`` live in ``[0, 1]`` per node pair; the budget constrains ``sum(s)``. Binary
perturbations are sets of pair ids ``i * N + j`` (``i < j``) relative to a clean graph.
"""

from __future__ import annotations

import torch

from robustbench_geo.attacks.graph.base import (
    apply_flips, degrees, flipped_degrees, ids_to_pairs, left_isolated, pair_ids, upper_pairs,
)
from robustbench_geo.attacks.graph.dense import symmetrize
from robustbench_geo.data.base import GraphDataset


def budget_shift(s: torch.Tensor, budget: float, iters: int = 40, hint: float | None = None) -> float:
    """The shift ``mu >= 0`` with ``sum(clamp(s - mu, 0, 1)) <= budget``, tight within ``iters`` bisections.

    Assumes ``sum(clamp(s, 0, 1)) > budget``; stops early once the bracket is below float32
    resolution. Entries that contribute 0 (``<= lo``) or exactly 1 (``>= hi + 1``) for every
    remaining shift are dropped as the bracket closes, so later steps touch only the entries near
    the threshold. ``hint`` (e.g. the previous PGD step's shift)
    brackets the root first, probing outward from it (x0.9, x0.5, x0.1, ... or x1.1, x2, x10, ...):
    on a PGD step the shift moves little, so two passes over ``s`` usually leave a short list.
    """
    v = s.reshape(-1)
    lo, hi, ones = 0.0, float(v.max()), 0

    def probe(mu):
        nonlocal v, lo, hi, ones
        if ones + float((v - mu).clamp_(0, 1).sum()) > budget:
            lo = mu
            v = v[v > lo]
        else:
            hi = mu
            if v.numel() <= 1 << 20:  # on the full matrix the bookkeeping costs more than it saves
                big = v >= hi + 1
                if bool(big.any()):
                    ones += int(big.sum())
                    v = v[~big]

    if hint is not None and lo < hint < hi:
        probe(hint)
        factors = (0.9, 0.5, 0.1, 1e-2, 1e-4, 1e-8) if hi == hint else (1.1, 2.0, 10.0, 1e2, 1e4, 1e8)
        for f in factors:
            mu = hint * f
            if not lo < mu < hi:
                break
            probe(mu)
            if (hi == mu) != (f < 1):  # crossed the root
                break
    if lo == 0.0:
        v = v[v > 0]
    for _ in range(iters):
        if hi - lo <= 1e-7 * hi:  # float32 cannot resolve a finer shift
            break
        probe((lo + hi) / 2)
    return hi


def project_budget_(s: torch.Tensor, budget: float, iters: int = 40, hint: float | None = None) -> float | None:
    """In-place Euclidean projection of ``s`` onto ``{0 <= s <= 1, sum(s) <= budget}``.

    Returns the shift of :func:`budget_shift` (``hint`` is passed on), or ``None`` when clipping
    to ``[0, 1]`` already meets the budget.
    """
    if float(s.clamp(0, 1).sum()) <= budget:
        s.clamp_(0, 1)
        return None
    shift = budget_shift(s, budget, iters, hint)
    s.sub_(shift).clamp_(0, 1)
    return shift


def project_budget(s: torch.Tensor, budget: float, iters: int = 40) -> torch.Tensor:
    """Euclidean projection of ``s`` onto ``{0 <= s <= 1, sum(s) <= budget}`` (bisection on the shift)."""
    out = s.clone()
    project_budget_(out, budget, iters)
    return out


class Flips:
    """Binary perturbations as sorted pair ids ``i * N + j`` (``i < j``) relative to a clean graph."""

    def __init__(self, graph: GraphDataset):
        self.n = graph.num_nodes
        self.clean_edge_index = graph.edge_index
        self.clean = torch.sort(pair_ids(upper_pairs(graph.edge_index), self.n)).values
        self.degree = degrees(graph.edge_index, self.n)

    def is_deletion(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.isin(ids, self.clean)

    def edge_index(self, ids: torch.Tensor) -> torch.Tensor:
        """``(2, E')`` symmetric edges of the clean graph with the pairs ``ids`` flipped."""
        return apply_flips(self.clean_edge_index, ids_to_pairs(ids, self.n), self.n)

    def degrees(self, ids: torch.Tensor) -> torch.Tensor:
        return flipped_degrees(self.degree, ids_to_pairs(ids, self.n), self.is_deletion(ids))

    def isolated(self, ids: torch.Tensor) -> torch.Tensor:
        """``(N,)`` bool: nodes with edges in the clean graph and none after flipping ``ids`` (:func:`left_isolated`,
        the rule :func:`finalize` applies, so a flip set PGD accepts is returned whole)."""
        return left_isolated(self.degree, self.degrees(ids))

    def isolating_deletions(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids of the clean edges still present whose deletion would leave an endpoint without edges."""
        low = self.degrees(ids) <= 1
        present = self.clean[~torch.isin(self.clean, ids)]
        return present[low[present // self.n] | low[present % self.n]]


class DenseRelaxation:
    """Relaxed flips on every node pair: ``s`` ``(N, N)`` symmetric, differentiated through a dense surrogate.

    ``s_ij = s_ji`` is the relaxed flip of pair ``{i, j}``, so the perturbed adjacency is
    ``base + direction * s`` without a transpose, and the gradient of pair ``{i, j}`` is
    ``direction_ij (G_ij + G_ji)`` for ``G = dL/dA'``. Its budget counts every pair twice.
    """

    def __init__(self, surrogate, x: torch.Tensor, nodes: torch.Tensor, labels: torch.Tensor, budget: int):
        self.sur, self.x, self.nodes, self.labels, self.budget = surrogate, x, nodes, labels, budget
        self.n = surrogate.base.shape[0]
        self.s, self.shift = None, None

    def start(self, init_ids: torch.Tensor | None, random: bool, g: torch.Generator) -> None:
        """Zero flips, the pairs ``init_ids`` flipped, or (``random``) a random point of the feasible set."""
        n, dev = self.n, self.sur.base.device
        self.s, self.shift = torch.zeros(n, n, device=dev), None
        if init_ids is not None and init_ids.numel():
            self.s.view(-1)[init_ids] = 1.0
            self.s.view(-1)[(init_ids % n) * n + init_ids // n] = 1.0
        elif random:
            s = torch.rand(n, n, generator=g).to(dev).triu_(1)
            self.s = s + s.T
            project_budget_(self.s, 2 * self.budget)

    def _gradient(self, s: torch.Tensor, loss_fn) -> torch.Tensor:
        with torch.no_grad():
            p = self.sur.perturbed(s).requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(self.sur.forward(self.x, p)[self.nodes], self.labels), p)
        with torch.no_grad():
            return symmetrize(grad).mul_(self.sur.direction)

    def step(self, loss_fn, lr: float, t: int) -> None:
        """One projected gradient-ascent step of size ``lr`` (step ``t``)."""
        gain = self._gradient(self.s, loss_fn)
        with torch.no_grad():
            self.s.add_(gain, alpha=lr)
            shift = project_budget_(self.s, 2 * self.budget, hint=self.shift)
            self.shift = self.shift if shift is None else shift

    @torch.no_grad()
    def candidates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted ids of the pairs with positive relaxed mass and that mass ``(ids, p)``."""
        iu = torch.nonzero(torch.triu(self.s, 1) > 0)
        return iu[:, 0] * self.n + iu[:, 1], self.s[iu[:, 0], iu[:, 1]]

    def swap_gains(self, ids: torch.Tensor, loss_fn):
        """First-order gains at the binary perturbation ``ids``: ``(gain of each flip in ids, rank)``;
        ``rank(k, banned)`` gives the ``k`` unflipped pairs of highest gain, none of ``banned``."""
        n = self.n
        with torch.no_grad():
            s = torch.zeros_like(self.sur.base)
            s[ids // n, ids % n] = s[ids % n, ids // n] = 1.0
        gain = self._gradient(s, loss_fn)
        del s
        own = gain[ids // n, ids % n]

        def rank(k: int, banned: torch.Tensor) -> torch.Tensor:
            gain.view(-1)[torch.cat([banned, (banned % n) * n + banned // n])] = -float("inf")
            gain.fill_diagonal_(-float("inf"))
            return top_pairs(gain, k)

        return own, rank


def top_pairs(gain: torch.Tensor, k: int) -> torch.Tensor:
    """Ids ``i * N + j`` (``i < j``) of the ``k`` highest finite entries of a symmetric ``(N, N)`` matrix.

    The ``2k``-th largest row maximum bounds the ``2k``-th largest entry from below, so one pass
    for the row maxima and one for the threshold leave a short list to sort (cheaper than a top-k
    over all ``N^2`` entries). Every pair appears twice; the upper copy is kept.
    """
    rowmax = gain.max(1).values
    rowmax = rowmax[torch.isfinite(rowmax)]
    if rowmax.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=gain.device)
    thr = torch.topk(rowmax, 2 * k).values[-1] if rowmax.numel() >= 2 * k else -float("inf")
    idx = torch.nonzero((gain >= thr).triu_(1).view(-1)).view(-1)
    vals = gain.view(-1)[idx]
    keep = torch.isfinite(vals)
    idx, vals = idx[keep], vals[keep]
    return idx[torch.argsort(vals, descending=True)[:k]]
