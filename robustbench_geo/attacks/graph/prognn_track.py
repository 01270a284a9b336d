"""The fixed Pro-GNN track: the published pre-attacked graphs as a (pseudo-)attack.

Pro-GNN (Jin et al. 2020) released Metattack and Nettack perturbations of the Cora LCC with its
fixed split; our LCC matches them flip for flip. Running it through the same runner gives
evasion (evaluate the model on the pre-attacked graph) and poisoning (retrain on it) numbers that
any model can be compared on. It is named ``prognn_perturbed`` (after
:func:`~robustbench_geo.data.load_prognn_perturbed`, which reads the graphs) so that it is not taken for the
``prognn`` defense. ``rate`` is the fraction of edges for ``meta`` (0.05-0.25) and the
perturbations per target for ``nettack`` (1.0-5.0; accuracy is then over all test nodes, the
attacked targets are in ``work["targets"]``).
"""

from __future__ import annotations

import torch

from robustbench_geo.attacks.base import register_attack
from robustbench_geo.attacks.graph.base import GraphAttack, GraphPerturbation, finalize, pair_ids, upper_pairs, ids_to_pairs
from robustbench_geo.data.base import GraphDataset


@register_attack("prognn_perturbed", domain="graph")
class ProGNNTrack(GraphAttack):
    """Pro-GNN's pre-attacked graphs (Metattack 5-25 %, Nettack 1-5 per target) as a fixed track."""

    uses_model = False
    budget_param = "rate"
    param_docs = {"rate": "meta: fraction of edges (0.05, 0.1, 0.15, 0.2, 0.25); nettack: flips per target (1-5)",
                  "attack": "meta or nettack"}

    def __init__(self, model=None, *, rate: float = 0.05, attack: str = "meta"):
        super().__init__(model)
        from robustbench_geo.data.graphs import PROGNN_RATES
        from robustbench_geo.check import unknown_name_error

        if attack not in PROGNN_RATES:
            raise unknown_name_error("pre-attacked graph", attack, PROGNN_RATES)
        if float(rate) not in PROGNN_RATES[attack]:
            raise ValueError(f"rate: Pro-GNN {attack} graphs exist for {PROGNN_RATES[attack]}, got {rate}")
        self.rate, self.attack = float(rate), attack

    def __call__(self, graph: GraphDataset, *, seed: int = 0) -> GraphPerturbation:
        from robustbench_geo.data.graphs import load_prognn_perturbed

        if graph.split != "prognn":
            raise ValueError(f"prognn: the pre-attacked graphs belong to the 'prognn' split of the LCC, got split {graph.split!r}")
        p = load_prognn_perturbed(graph.name, self.attack, self.rate, root=graph.meta.get("root"))
        if p.num_nodes != graph.num_nodes or p.split_hash != graph.split_hash:
            raise ValueError("prognn: the pre-attacked graph does not match this graph's nodes/split")
        n = graph.num_nodes
        clean = pair_ids(upper_pairs(graph.edge_index.cpu()), n)
        pert = pair_ids(upper_pairs(p.edge_index), n)
        flips = ids_to_pairs(torch.cat([clean[~torch.isin(clean, pert)], pert[~torch.isin(pert, clean)]]), n)
        work = {"file": p.meta.get("perturbed_file"), "targets": p.meta.get("targets")}
        return finalize(graph.to("cpu"), flips, flips.shape[1], work=work, drop_singletons=False)
