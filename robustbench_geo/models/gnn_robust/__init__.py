"""Robust GNNs from the literature, each with a dense forward for gradient attacks.

``rgcn`` (Zhu et al. 2019), ``gnnguard`` (Zhang & Zitnik 2020), ``soft_median_gdc`` (Geisler et al.
2021), ``prognn`` (Jin et al. 2020) and ``grand`` (Feng et al. 2020). Every model maps
``forward(x, edge_index, edge_weight=None)`` to ``(N, C)`` logits and offers
``dense_forward(x, adj)`` on a dense ``(N, N)`` adjacency without self-loops that computes the same
function and is differentiable in ``adj`` (what PGD and the other dense attacks differentiate).
Models whose training differs from plain cross-entropy define
``training_loss(x, edge_index, edge_weight, y, idx_train, epoch)``, and ``train_defaults`` holds
the authors' training settings (:func:`robustbench_geo.training.default_config` applies them).
"""

from robustbench_geo.models.gnn_robust import gnnguard, grand, prognn, rgcn, soft_median  # noqa: F401  (register)
from robustbench_geo.models.gnn_robust.gnnguard import GNNGuard
from robustbench_geo.models.gnn_robust.grand import GRAND
from robustbench_geo.models.gnn_robust.prognn import ProGNN
from robustbench_geo.models.gnn_robust.rgcn import RGCN
from robustbench_geo.models.gnn_robust.soft_median import SoftMedianGDC

__all__ = ["GNNGuard", "GRAND", "ProGNN", "RGCN", "SoftMedianGDC"]
