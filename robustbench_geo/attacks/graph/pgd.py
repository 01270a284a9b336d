"""PGD topology attack (Xu et al. 2019, "Topology Attack and Defense for Graph Neural Networks").

Evasion: relax the flips to ``s`` in ``[0, 1]`` per node pair, ``A' = A + (1 - 2A) * s``, ascend the
attack loss (``prob_margin`` by default: the margin of the softmax probabilities, which we found
clearly stronger than the paper's ``ce`` and ``cw`` on Cora; all are available) on the attacked nodes
(test nodes, labelled with the model's own predictions as in the paper) with step ``lr / sqrt(t + 1)``, project onto ``{0 <= s <= 1, sum s <= budget}`` (bisection),
then draw ``samples`` Bernoulli(s) perturbations, keep those within the budget and return the one
with the highest loss.
"""

from __future__ import annotations

import math
import time

import torch

from robustbench_geo.attacks.base import register_attack
from robustbench_geo.attacks.graph.base import (
    GraphAttack, GraphPerturbation, check_dense_memory, edge_budget, finalize,
)
from robustbench_geo.attacks.graph.dense import dense_logits, dense_matrices, get_loss
from robustbench_geo.data.base import GraphDataset


def project_budget(s: torch.Tensor, budget: float, iters: int = 40) -> torch.Tensor:
    """Euclidean projection of ``s`` onto ``{0 <= s <= 1, sum(s) <= budget}`` (bisection on the shift)."""
    c = s.clamp(0, 1)
    if c.sum() <= budget:
        return c
    v = s[s > 0]  # the shift is positive here, so only positive entries can stay positive
    lo, hi = 0.0, float(v.max())
    for _ in range(iters):
        mu = (lo + hi) / 2
        if (v - mu).clamp(0, 1).sum() > budget:
            lo = mu
        else:
            hi = mu
    return (s - hi).clamp(0, 1)


@register_attack("pgd", domain="graph")
class PGDAttack(GraphAttack):
    """PGD topology attack (Xu et al. 2019): evasion, CE or CW loss, relaxation + random sampling."""

    param_docs = {
        "budget_edge_fraction": "flips as a fraction of the clean graph's edges",
        "loss": "prob_margin (softmax margin, strongest here), ce (cross-entropy), cw (Carlini-Wagner margin), "
                "tanh_margin or mce (cross-entropy on still-correct nodes)",
        "steps": "projected gradient steps",
        "lr": "step size at step 0 (decays as 1/sqrt(t+1)); None = 0.1 * budget for cw, else 200",
        "samples": "Bernoulli samples drawn from the relaxed perturbation",
        "max_memory_gb": "refuse graphs whose dense matrices need more (GiB)",
    }

    def __init__(self, model, *, budget_edge_fraction: float = 0.05, loss: str = "prob_margin", steps: int = 100,
                 lr: float | None = None, samples: int = 20, max_memory_gb: float = 8.0):
        super().__init__(model)
        get_loss(loss)
        if steps < 1 or samples < 1:
            raise ValueError(f"steps, samples: expected positive counts, got {steps}, {samples}")
        self.budget_edge_fraction, self.loss, self.steps, self.lr = budget_edge_fraction, loss, steps, lr
        self.samples, self.max_memory_gb = samples, max_memory_gb

    def __call__(self, graph: GraphDataset, *, seed: int = 0, nodes: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None) -> GraphPerturbation:
        budget = edge_budget(graph, self.budget_edge_fraction)
        n = graph.num_nodes
        mem = check_dense_memory("pgd", n, 4 + dense_matrices(self.model), self.max_memory_gb)
        t0 = time.perf_counter()
        model = self.model.eval()
        dev = next(iter(model.parameters())).device
        x, a = graph.x.to(dev), graph.to(dev).dense_adjacency()
        nodes = (graph.idx_test if nodes is None else nodes).to(dev)
        with torch.no_grad():
            if labels is None:
                labels = dense_logits(model, x, a)[nodes].argmax(1)
        labels = labels.to(dev)
        loss_fn = get_loss(self.loss)
        lr0 = self.lr if self.lr is not None else (200.0 if self.loss == "ce" else 0.1 * budget)
        mask = torch.ones(n, n, device=dev).triu(1)
        flip_sign = (1 - 2 * a) * mask  # +1 inserts, -1 deletes; 0 on and below the diagonal
        s = torch.zeros(n, n, device=dev)

        def perturbed(s_up):
            d = flip_sign * s_up
            return a + d + d.T

        for t in range(self.steps if budget > 0 else 0):
            s.requires_grad_(True)
            loss = loss_fn(dense_logits(model, x, perturbed(s))[nodes], labels)
            (grad,) = torch.autograd.grad(loss, s)
            with torch.no_grad():
                s = project_budget((s + lr0 / math.sqrt(t + 1) * grad) * mask, budget)
        s = s.detach()
        flips, best_loss, drawn = self._sample(model, x, a, s, budget, nodes, labels, loss_fn, perturbed, seed)
        work = {"steps": self.steps, "gradient_evaluations": self.steps if budget else 0, "samples": drawn,
                "relaxed_mass": float(s.sum()), "best_sample_loss": best_loss, "dense_memory_gib": mem,
                "seconds": time.perf_counter() - t0}
        return finalize(graph.to("cpu"), flips.cpu(), budget, work=work)

    @torch.no_grad()
    def _sample(self, model, x, a, s, budget, nodes, labels, loss_fn, perturbed, seed):
        iu = torch.nonzero(s > 0)
        p = s[iu[:, 0], iu[:, 1]]
        g = torch.Generator().manual_seed(seed)
        best, best_loss, drawn = None, -float("inf"), 0
        for _ in range(self.samples):
            pick = torch.rand(p.shape[0], generator=g).to(p.device) < p
            drawn += 1
            if int(pick.sum()) > budget:
                continue
            hard = torch.zeros_like(s)
            hard[iu[pick, 0], iu[pick, 1]] = 1.0
            loss = float(loss_fn(dense_logits(model, x, perturbed(hard))[nodes], labels))
            if loss > best_loss:
                best, best_loss = iu[pick], loss
        if best is None:  # no sample within budget: the most likely flips
            best = iu[torch.argsort(p, descending=True)[:budget]]
        else:  # highest relaxed mass first, so that singleton filtering drops the weakest flips
            best = best[torch.argsort(s[best[:, 0], best[:, 1]], descending=True)]
        return best.T, best_loss, drawn
