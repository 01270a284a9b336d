"""Graph neural networks for node classification: ``forward(x, edge_index, edge_weight=None)``."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.nn import GCNConv

from robustbench_geo.models.registry import register_model


class GCN(nn.Module):
    """Two-layer GCN (Kipf & Welling 2017): ``A_hat ReLU(A_hat X W1) W2`` with dropout.

    ``A_hat`` is the symmetric normalisation of ``A + I`` built by PyG's ``GCNConv`` from
    ``edge_index`` and (optional) ``edge_weight``; the output is differentiable in ``edge_weight``.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 16, dropout: float = 0.5):
        super().__init__()
        self.conv1 = GCNConv(in_features, hidden)
        self.conv2 = GCNConv(hidden, num_classes)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training)
        x = F.relu(self.conv1(x, edge_index, edge_weight))
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2(x, edge_index, edge_weight)


@register_model("gcn", task="graph")
def gcn(in_features: int, num_classes: int, hidden: int = 16, dropout: float = 0.5) -> GCN:
    """Two-layer GCN (Kipf & Welling 2017), 16 hidden units, dropout 0.5."""
    return GCN(in_features, num_classes, hidden, dropout)
