"""Baselines: uniformly random flips (``random``) and DICE (``dice``, Waniek et al. 2018)."""

from __future__ import annotations

import torch

from robustbench_geo.attacks.base import register_attack
from robustbench_geo.attacks.graph.base import (
    GraphAttack, GraphPerturbation, degrees, edge_budget, finalize, pair_ids, upper_pairs,
)
from robustbench_geo.check import unknown_name_error
from robustbench_geo.data.base import GraphDataset

RANDOM_KINDS = ("add", "remove", "flip")


def _random_pairs(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    """``(2, k)`` uniformly random node pairs ``i < j``."""
    i = torch.randint(0, n, (k,), generator=g)
    j = torch.randint(0, n - 1, (k,), generator=g)
    j = j + (j >= i).long()
    return torch.stack([torch.minimum(i, j), torch.maximum(i, j)])


def _sample(graph: GraphDataset, budget: int, g: torch.Generator, want_del, want_ins, max_rounds: int = 200) -> torch.Tensor:
    """Draw flips one after another; ``want_del(pairs)`` / ``want_ins(pairs)`` say which candidates qualify.

    Each round draws a deletion (a random existing edge) or an insertion (a random pair) per the
    callers' rule, and keeps it when it qualifies, is new and does not isolate a node.
    """
    n = graph.num_nodes
    edges = upper_pairs(graph.edge_index)
    present = set(pair_ids(edges, n).tolist())
    deg = degrees(graph.edge_index, n).clone()
    chosen, seen = [], set()
    for _ in range(max_rounds):
        if len(chosen) >= budget:
            break
        m = 4 * (budget - len(chosen)) + 16
        dele = torch.rand(m, generator=g) < 0.5
        cand = _random_pairs(n, m, g)
        if edges.shape[1]:
            cand[:, dele] = edges[:, torch.randint(0, edges.shape[1], (int(dele.sum()),), generator=g)]
        ok_del, ok_ins = want_del(cand) & dele, want_ins(cand) & ~dele
        for k in torch.nonzero(ok_del | ok_ins).view(-1).tolist():
            i, j = int(cand[0, k]), int(cand[1, k])
            pid = i * n + j
            if pid in seen or len(chosen) >= budget:
                continue
            if pid in present:
                if not ok_del[k] or deg[i] <= 1 or deg[j] <= 1:
                    continue
                deg[i] -= 1
                deg[j] -= 1
            elif not ok_ins[k]:
                continue
            seen.add(pid)
            chosen.append((i, j))
    return torch.tensor(chosen, dtype=torch.long).reshape(-1, 2).T.contiguous()


@register_attack("random_edges", domain="graph")
class RandomAttack(GraphAttack):
    """Uniformly random edge insertions (``add``), deletions (``remove``) or either (``flip``)."""

    uses_model = False
    param_docs = {"budget_edge_fraction": "flips as a fraction of the clean graph's edges",
                  "kind": "add, remove or flip (each flip is an insertion or a deletion with probability 1/2)"}

    def __init__(self, model=None, *, budget_edge_fraction: float = 0.05, kind: str = "flip"):
        super().__init__(model)
        if kind not in RANDOM_KINDS:
            raise unknown_name_error("random attack kind", kind, RANDOM_KINDS)
        self.budget_edge_fraction, self.kind = budget_edge_fraction, kind

    def __call__(self, graph: GraphDataset, *, seed: int = 0) -> GraphPerturbation:
        budget = edge_budget(graph, self.budget_edge_fraction)
        g = torch.Generator().manual_seed(seed)
        yes = lambda p: torch.ones(p.shape[1], dtype=torch.bool)  # noqa: E731
        no = lambda p: torch.zeros(p.shape[1], dtype=torch.bool)  # noqa: E731
        want_del = no if self.kind == "add" else yes
        want_ins = no if self.kind == "remove" else yes
        flips = _sample(graph.to("cpu"), budget, g, want_del, want_ins)
        return finalize(graph.to("cpu"), flips, budget, work={"kind": self.kind, "requested": budget})


@register_attack("dice", domain="graph")
class DICEAttack(GraphAttack):
    """DICE (Waniek et al. 2018): delete edges inside classes, insert edges between classes (labels known)."""

    uses_model = False
    param_docs = {"budget_edge_fraction": "flips as a fraction of the clean graph's edges"}

    def __init__(self, model=None, *, budget_edge_fraction: float = 0.05):
        super().__init__(model)
        self.budget_edge_fraction = budget_edge_fraction

    def __call__(self, graph: GraphDataset, *, seed: int = 0) -> GraphPerturbation:
        budget = edge_budget(graph, self.budget_edge_fraction)
        g = torch.Generator().manual_seed(seed)
        y = graph.y.cpu()
        flips = _sample(graph.to("cpu"), budget, g, lambda p: y[p[0]] == y[p[1]], lambda p: y[p[0]] != y[p[1]])
        return finalize(graph.to("cpu"), flips, budget, work={"requested": budget})
