"""GradArgmax (Dai et al. 2018, "Adversarial Attack on Graph Structured Data").

Targeted evasion: for target ``u``, take the gradient of the model's loss at ``u`` with respect to
the weights of all pairs ``(u, v)`` (present edges weight ``1 - w``, absent ones ``w``, at
``w = 0``), flip the pair with the largest positive gradient, and repeat up to the budget
(``budget_flips_per_target=1`` is the paper's single-edge setting). Works with any registered model
(sparse, through ``edge_weight``), on graphs of any size.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from robustbench_geo.attacks.base import register_attack
from robustbench_geo.attacks.graph.base import GraphAttack, GraphPerturbation, check_target, degrees, finalize, target_budget
from robustbench_geo.data.base import GraphDataset


@register_attack("gradargmax", domain="graph")
class GradArgmax(GraphAttack):
    """GradArgmax (Dai et al. 2018): greedy gradient-argmax edge flips at the target, evasion."""

    targeted = True
    budget_param = "budget_flips_per_target"
    param_docs = {"budget_flips_per_target": "flips per target; None = degree + 2, 1 = the paper's single edge"}

    def __init__(self, model, *, budget_flips_per_target: int | None = None):
        super().__init__(model)
        self.budget_flips_per_target = budget_flips_per_target

    def __call__(self, graph: GraphDataset, target: int, *, seed: int = 0) -> GraphPerturbation:
        graph = graph.to("cpu")
        u = check_target(graph, target)
        budget = target_budget(graph, u, self.budget_flips_per_target)
        t0 = time.perf_counter()
        model = self.model.eval()
        dev = next(iter(model.parameters())).device
        n = graph.num_nodes
        x, y_u = graph.x.to(dev), graph.y[u].view(1).to(dev)
        ei = graph.edge_index
        others = ei[:, (ei[0] != u) & (ei[1] != u)]
        present = torch.zeros(n)
        present[ei[1, ei[0] == u]] = 1.0
        deg = degrees(ei, n).float()
        v = torch.arange(n)
        cand = torch.cat([others, torch.stack([torch.full((n,), u), v]), torch.stack([v, torch.full((n,), u)])], 1).to(dev)
        flipped = torch.zeros(n, dtype=torch.bool)
        chosen = []
        for _ in range(budget):
            w = torch.zeros(n, device=dev, requires_grad=True)
            row = present.to(dev) + (1 - 2 * present.to(dev)) * w
            row = row * (v.to(dev) != u)
            weight = torch.cat([torch.ones(others.shape[1], device=dev), row, row])
            loss = F.cross_entropy(model(x, cand, weight)[u:u + 1], y_u)
            (grad,) = torch.autograd.grad(loss, w)
            grad = grad.cpu()
            ok = ~flipped & (v != u) & ~((present > 0) & ((deg <= 1) | (deg[u] <= 1)))
            grad = grad.masked_fill(~ok, float("-inf"))
            j = int(torch.argmax(grad))
            if grad[j] == float("-inf") or grad[j] <= 0:
                break  # no flip increases the loss to first order
            flipped[j] = True
            step = 1 - 2 * present[j]
            deg[u] += step
            deg[j] += step
            present[j] = 1 - present[j]
            chosen.append((u, j))
        flips = torch.tensor(chosen, dtype=torch.long).reshape(-1, 2).T
        return finalize(graph, flips, budget, target=u,
                        work={"gradient_evaluations": len(chosen) + 1, "seconds": time.perf_counter() - t0})
