"""PR-BCD and GR-BCD (Geisler et al. 2021, "Robustness of Graph Neural Networks at Scale").

Thin wrappers around ``torch_geometric.contrib.nn.PRBCDAttack`` / ``GRBCDAttack``: sparse,
memory O(E + block_size), so they scale to graphs where the dense attacks refuse. Evasion on the
attacked nodes (test nodes, labelled with the model's predictions); the flips are re-derived from
the returned perturbation and checked like every other result (deletions that would isolate a node
are dropped, which PyG does not prevent).
"""

from __future__ import annotations

import time

import torch

from robustbench_geo.attacks.base import register_attack
from robustbench_geo.attacks.graph.base import GraphAttack, GraphPerturbation, edge_budget, finalize
from robustbench_geo.data.base import GraphDataset

PRBCD_LOSSES = ("prob_margin", "tanh_margin", "masked", "margin", "mce", "ce")


class _RBCD(GraphAttack):
    def _labels(self, graph: GraphDataset, nodes: torch.Tensor, dev) -> torch.Tensor:
        with torch.no_grad():
            pred = self.model(graph.x.to(dev), graph.edge_index.to(dev)).argmax(1)
        labels = graph.y.to(dev).clone()
        labels[nodes] = pred[nodes]
        return labels

    def _run(self, attack, graph: GraphDataset, budget: int, seed: int, nodes: torch.Tensor | None) -> GraphPerturbation:
        t0 = time.perf_counter()
        self.model.eval()
        dev = next(iter(self.model.parameters())).device
        nodes = (graph.idx_test if nodes is None else nodes).to(dev)
        labels = self._labels(graph, nodes, dev)
        if budget == 0:
            return finalize(graph.to("cpu"), torch.zeros(2, 0, dtype=torch.long), 0, work={"seconds": 0.0})
        torch.manual_seed(seed)
        _, pert = attack.attack(graph.x.to(dev), graph.edge_index.to(dev), labels, budget=budget, idx_attack=nodes)
        pert = pert.cpu()
        pert = pert[:, pert[0] != pert[1]]
        work = {"pyg_flips": int(pert.shape[1]), "seconds": time.perf_counter() - t0}
        return finalize(graph.to("cpu"), pert, budget, work=work)


@register_attack("prbcd", domain="graph")
class PRBCD(_RBCD):
    """PR-BCD (Geisler et al. 2021): projected randomized block coordinate descent, sparse, scalable."""

    param_docs = {"budget_edge_fraction": "flips as a fraction of the clean graph's edges",
                  "block_size": "node pairs optimised at once", "epochs": "optimisation epochs",
                  "epochs_resampling": "epochs that resample the block", "loss": "attack loss",
                  "lr": "learning-rate factor"}

    def __init__(self, model, *, budget_edge_fraction: float = 0.05, block_size: int = 250_000, epochs: int = 125,
                 epochs_resampling: int = 100, loss: str = "prob_margin", lr: float = 1000.0):
        super().__init__(model)
        from robustbench_geo.check import unknown_name_error

        if loss not in PRBCD_LOSSES:
            raise unknown_name_error("loss", loss, PRBCD_LOSSES)
        if block_size < 1 or epochs < 1 or not 0 <= epochs_resampling <= epochs:
            raise ValueError(f"block_size, epochs, epochs_resampling: expected positive, with epochs_resampling <= epochs, "
                             f"got {block_size}, {epochs}, {epochs_resampling}")
        self.budget_edge_fraction, self.block_size, self.epochs = budget_edge_fraction, block_size, epochs
        self.epochs_resampling, self.loss, self.lr = epochs_resampling, loss, lr

    def __call__(self, graph: GraphDataset, *, seed: int = 0, nodes: torch.Tensor | None = None) -> GraphPerturbation:
        from torch_geometric.contrib.nn import PRBCDAttack

        budget = edge_budget(graph, self.budget_edge_fraction)
        att = PRBCDAttack(self.model, self.block_size, self.epochs, self.epochs_resampling, loss=self.loss, lr=self.lr,
                          is_undirected=True, log=False)
        return self._run(att, graph, budget, seed, nodes)


@register_attack("grbcd", domain="graph")
class GRBCD(_RBCD):
    """GR-BCD (Geisler et al. 2021): greedy randomized block coordinate descent, sparse, scalable."""

    param_docs = {"budget_edge_fraction": "flips as a fraction of the clean graph's edges",
                  "block_size": "node pairs scored at once", "epochs": "greedy epochs", "loss": "attack loss"}

    def __init__(self, model, *, budget_edge_fraction: float = 0.05, block_size: int = 250_000, epochs: int = 125,
                 loss: str = "masked"):
        super().__init__(model)
        from robustbench_geo.check import unknown_name_error

        if loss not in PRBCD_LOSSES:
            raise unknown_name_error("loss", loss, PRBCD_LOSSES)
        if block_size < 1 or epochs < 1:
            raise ValueError(f"block_size, epochs: expected positive counts, got {block_size}, {epochs}")
        self.budget_edge_fraction, self.block_size, self.epochs, self.loss = budget_edge_fraction, block_size, epochs, loss

    def __call__(self, graph: GraphDataset, *, seed: int = 0, nodes: torch.Tensor | None = None) -> GraphPerturbation:
        from torch_geometric.contrib.nn import GRBCDAttack

        budget = edge_budget(graph, self.budget_edge_fraction)
        att = GRBCDAttack(self.model, self.block_size, min(self.epochs, max(budget, 1)), loss=self.loss,
                          is_undirected=True, log=False)
        return self._run(att, graph, budget, seed, nodes)
