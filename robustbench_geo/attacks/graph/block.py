"""Relaxed flips on a block of node pairs: the gradient attacks' path for models without ``dense_forward``.

A model that only has ``forward(x, edge_index, edge_weight)`` (a user's PyG model, GAT, GIN) has no
dense adjacency to differentiate. Running its forward on all ``N (N - 1)`` ordered pairs as weighted
edges would cost ``O(N^2)`` per step. Here the relaxation lives on a *block* of pairs instead
(Geisler et al. 2021's PR-BCD idea): every clean edge (a relaxed deletion, weight ``1 - s``) plus
``block_size`` other pairs drawn uniformly at random (relaxed insertions, weight ``s``). The
forward runs on ``E + block_size`` undirected edges, both directions, so a step costs
``O(E + block_size)``, and the gradient of each pair's ``s`` is the sum over its two directions, which
is exactly what the dense path computes for that pair.

While the block is being resampled, the insertions without mass are dropped (at most half of the
insertion block is kept: the largest ``s``) and fresh random pairs take their place, so the search
reaches every pair over the steps; for the last steps the block is fixed.

Edge weights are mapped to ``eps + (1 - 2 eps) w`` (``eps = 1e-7``) so that no relaxed edge has weight
exactly 0 or 1: a layer that takes ``log`` of its weights (PyG's weighted-GAT example) stays finite,
and a new pair at ``s = 0`` still gets a gradient.
"""

from __future__ import annotations

import torch

from robustbench_geo.attacks.graph.base import ids_to_pairs, pair_ids, upper_pairs
from robustbench_geo.attacks.graph.relax import project_budget_

EPS = 1e-7


class EdgeWeightIgnored(ValueError):
    """The model's output does not depend on ``edge_weight`` (e.g. ``SAGEConv``): gradient attacks have nothing to follow."""

    def __init__(self, model):
        super().__init__(f"{type(model).__name__}: the output does not depend on edge_weight, so the gradient attacks "
                         f"(pgd, prbcd, grbcd) get no gradient; expected a forward(x, edge_index, edge_weight) that "
                         f"uses the weights (GCNConv, GraphConv, a weighted GATConv), or use a gradient-free attack "
                         f"(dice, random_edges)")


def random_pairs(n: int, k: int, g: torch.Generator, exclude: torch.Tensor, device=None) -> torch.Tensor:
    """Up to ``k`` distinct pair ids ``i * N + j`` (``i < j``), uniform over unordered pairs, none in ``exclude``.

    Draws ``k`` ordered pairs and folds them (``(min, max)``; self-pairs dropped): every unordered pair
    has probability ``2 / N^2`` per draw. Returns sorted ids; ``exclude`` must be sorted.
    """
    ij = torch.randint(n, (2, k), generator=g)
    ij = ij[:, ij[0] != ij[1]]
    ids = torch.unique(ij.min(0).values * n + ij.max(0).values)
    if exclude.numel():
        pos = torch.searchsorted(exclude.cpu(), ids).clamp_max(exclude.numel() - 1)
        ids = ids[exclude.cpu()[pos] != ids]
    return ids.to(device)


def weighted_graph(ids: torch.Tensor, s: torch.Tensor, is_clean: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(edge_index (2, 2K), edge_weight (2K,))``: pairs ``ids`` with weight ``1 - s`` (clean) or ``s`` (new).

    Both directions of every pair, unsorted; differentiable in ``s``; weights mapped into ``[eps, 1 - eps]``.
    """
    w = torch.where(is_clean, 1 - s, s) * (1 - 2 * EPS) + EPS
    pairs = ids_to_pairs(ids, n)
    return torch.cat([pairs, pairs.flip(0)], 1), torch.cat([w, w])


class BlockRelaxation:
    """Relaxed flips ``s`` on the clean edges and a resampled block of other pairs; the forward sees only those.

    Same interface as :class:`~robustbench_geo.attacks.graph.relax.DenseRelaxation` (``start``, ``step``,
    ``candidates``, ``swap_gains``).

    Args:
        forward: ``(x, edge_index, edge_weight) -> (N, C)`` logits (the model, or its altered copy).
        edge_index: ``(2, 2E)`` the clean graph (both directions).
        block_size: node pairs outside the clean graph in the block (fewer when the graph has fewer).
        resample_steps: steps (from the first) after which the block is resampled.
    """

    def __init__(self, forward, x: torch.Tensor, edge_index: torch.Tensor, nodes: torch.Tensor,
                 labels: torch.Tensor, budget: int, block_size: int, resample_steps: int, seed: int):
        self.forward, self.x, self.nodes, self.labels, self.budget = forward, x, nodes, labels, budget
        self.n, self.dev = x.shape[0], x.device
        self.clean = torch.sort(pair_ids(upper_pairs(edge_index), self.n)).values
        free = self.n * (self.n - 1) // 2 - self.clean.numel()
        self.block_size, self.resample_steps = min(block_size, free), resample_steps
        self.g = torch.Generator().manual_seed(seed)
        self.ids = self.s = self.is_clean = None
        self.shift, self.forward_edges = None, 0

    # ---------------------------------------------------------------- the block

    def _set(self, ids: torch.Tensor, s: torch.Tensor) -> None:
        order = torch.argsort(ids)
        self.ids, self.s = ids[order], s[order]
        self.is_clean = torch.isin(self.ids, self.clean)

    def _fill(self, ids: torch.Tensor, s: torch.Tensor) -> None:
        """``ids`` (with ``s``) plus fresh random non-clean pairs up to the block size."""
        have = int((~torch.isin(ids, self.clean)).sum())
        for _ in range(20):  # random draws collide with the block; a few rounds top it up
            need = self.block_size - have
            if need <= 0:
                break
            taken = torch.sort(torch.cat([self.clean, ids])).values
            new = random_pairs(self.n, need + need // 8 + 8, self.g, taken, self.dev)[:need]
            ids, s = torch.cat([ids, new]), torch.cat([s, torch.zeros(new.numel(), device=self.dev)])
            have += new.numel()
        self._set(ids, s)

    def start(self, init_ids: torch.Tensor | None, random: bool, g: torch.Generator) -> None:
        """Zero flips, the pairs ``init_ids`` flipped (kept in the block), or (``random``) a random feasible point."""
        ids = self.clean.clone()
        s = torch.zeros(ids.numel(), device=self.dev)
        if init_ids is not None and init_ids.numel():
            extra = init_ids[~torch.isin(init_ids, ids)]
            ids, s = torch.cat([ids, extra]), torch.cat([s, torch.zeros(extra.numel(), device=self.dev)])
            s[torch.isin(ids, init_ids)] = 1.0
        self._fill(ids, s)
        if random and not (init_ids is not None and init_ids.numel()):
            self.s = torch.rand(self.s.numel(), generator=g).to(self.dev)
            project_budget_(self.s, self.budget)
        self.shift = None

    def _resample(self) -> None:
        new = ~self.is_clean
        mass = self.s.masked_fill(~new | (self.s <= EPS), -1.0)
        keep = torch.topk(mass, min(int((mass > 0).sum()), self.block_size // 2)).indices
        keep = torch.cat([torch.nonzero(self.is_clean).view(-1), keep])
        self._fill(self.ids[keep], self.s[keep])

    # ---------------------------------------------------------------- gradients

    def _gradient(self, ids: torch.Tensor, s: torch.Tensor, is_clean: torch.Tensor, loss_fn) -> torch.Tensor:
        s = s.detach().requires_grad_(True)
        ei, w = weighted_graph(ids, s, is_clean, self.n)
        self.forward_edges = max(self.forward_edges, ei.shape[1])
        loss = loss_fn(self.forward(self.x, ei, w)[self.nodes], self.labels)
        (grad,) = torch.autograd.grad(loss, s, allow_unused=True) if loss.requires_grad else (None,)
        if grad is None:
            raise EdgeWeightIgnored(self.forward)
        return grad

    def step(self, loss_fn, lr: float, t: int) -> None:
        """One projected gradient-ascent step of size ``lr`` (step ``t``); resamples the block while ``t`` is early."""
        grad = self._gradient(self.ids, self.s, self.is_clean, loss_fn)
        with torch.no_grad():
            self.s.add_(grad, alpha=lr)
            shift = project_budget_(self.s, self.budget, hint=self.shift)
            self.shift = self.shift if shift is None else shift
        if t < self.resample_steps:
            self._resample()

    @torch.no_grad()
    def candidates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted ids of the pairs with positive relaxed mass and that mass ``(ids, p)``."""
        pos = self.s > 0
        return self.ids[pos], self.s[pos]

    def swap_gains(self, ids: torch.Tensor, loss_fn):
        """First-order gains at the binary perturbation ``ids`` over the clean edges, ``ids`` and a fresh random
        block: ``(gain of each flip in ids, rank)``; ``rank(k, banned)`` gives the ``k`` highest-gain pairs of that
        set outside ``ids`` and ``banned``."""
        taken = torch.sort(torch.cat([self.clean, ids])).values
        fresh = random_pairs(self.n, self.block_size, self.g, taken, self.dev)
        cand = torch.sort(torch.cat([self.clean, ids[~torch.isin(ids, self.clean)], fresh])).values
        flipped = torch.isin(cand, ids)
        gain = self._gradient(cand, flipped.float(), torch.isin(cand, self.clean), loss_fn)
        own = gain[torch.searchsorted(cand, ids)]

        def rank(k: int, banned: torch.Tensor) -> torch.Tensor:
            ok = ~(flipped | torch.isin(cand, banned))
            order = torch.argsort(gain.masked_fill(~ok, -float("inf")), descending=True)[:k]
            return cand[order[ok[order]]]

        return own, rank
