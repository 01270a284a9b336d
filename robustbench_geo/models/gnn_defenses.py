"""Pre-processing defenses wrapped around a GCN: ``gcn_jaccard`` and ``gcn_svd``.

Both rebuild the graph inside ``forward``, so they defend in evasion and in poisoning alike (a
poisoned graph is cleaned before every training step) and stay differentiable in ``edge_weight``
(gradient attacks see the defense; adaptive attacks are possible).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from robustbench_geo.models.gnn import GCN
from robustbench_geo.models.registry import register_model


def jaccard_similarity(x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """Weighted Jaccard similarity ``sum min(x_i, x_j) / sum max(x_i, x_j)`` of each edge's endpoints.

    Equals ``|x_i AND x_j| / |x_i OR x_j|`` for binary features. Returns ``(E,)`` in ``[0, 1]``
    (0 when both feature vectors are zero).
    """
    a, b = x[edge_index[0]].abs(), x[edge_index[1]].abs()
    num = torch.minimum(a, b).sum(1)
    den = torch.maximum(a, b).sum(1)
    return torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(den))


class GCNJaccard(GCN):
    """GCN-Jaccard (Wu et al. 2019): edges whose endpoints' Jaccard feature similarity is below
    ``threshold`` are dropped (weight 0) before the GCN runs."""

    def __init__(self, in_features: int, num_classes: int, threshold: float = 0.01, hidden: int = 16, dropout: float = 0.5):
        super().__init__(in_features, num_classes, hidden, dropout)
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold: expected a Jaccard similarity in [0, 1], got {threshold}")
        self.threshold = threshold

    def keep_mask(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """``(E,)`` bool: edges the defense keeps."""
        return jaccard_similarity(x, edge_index) >= self.threshold

    def forward(self, x, edge_index, edge_weight=None):
        keep = self.keep_mask(x, edge_index)
        w = keep.to(x.dtype) if edge_weight is None else edge_weight * keep.to(edge_weight.dtype)
        return super().forward(x, edge_index, w)


@register_model("gcn_jaccard", task="graph")
def gcn_jaccard(in_features: int, num_classes: int, threshold: float = 0.01, hidden: int = 16, dropout: float = 0.5) -> GCNJaccard:
    """GCN-Jaccard (Wu et al. 2019): drop edges between nodes with Jaccard similarity < threshold (0.01)."""
    return GCNJaccard(in_features, num_classes, threshold, hidden, dropout)


class GCNSVD(GCN):
    """GCN-SVD (Entezari et al. 2020): the GCN runs on the rank-``rank`` truncated SVD of the adjacency.

    The low-rank matrix is dense (``N x N``), so this defense is for graphs of a few thousand nodes.
    Without ``edge_weight`` it is cached per structure (training and evaluation reuse it); with
    ``edge_weight`` it is recomputed; gradients flow through ``A V_k V_k^T`` with the singular
    subspace ``V_k`` held fixed (exact SVD gradients are unstable on repeated singular values).
    """

    def __init__(self, in_features: int, num_classes: int, rank: int = 50, hidden: int = 16, dropout: float = 0.5):
        super().__init__(in_features, num_classes, hidden, dropout)
        if rank < 1:
            raise ValueError(f"rank: expected a positive rank, got {rank}")
        self.rank = rank
        self._cache: tuple | None = None

    def low_rank_adjacency(self, edge_index, edge_weight, n: int, dtype=torch.float32) -> torch.Tensor:
        w = torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device) if edge_weight is None else edge_weight
        a = torch.zeros(n, n, dtype=w.dtype, device=edge_index.device).index_put((edge_index[0], edge_index[1]), w, accumulate=True)
        k = min(self.rank, n)
        with torch.no_grad():  # the subspace is held fixed under differentiation (SVD gradients blow up
            _, _, vh = torch.linalg.svd(a.detach())  # on repeated singular values); A V_k V_k^T = U_k S_k V_k^T
        v = vh[:k].T
        return (a @ v) @ v.T

    def forward(self, x, edge_index, edge_weight=None):
        n = x.shape[0]
        if edge_weight is None:
            key = (n, edge_index.shape[1], edge_index.device, int(edge_index.sum()), int((edge_index[0] * 7919 + edge_index[1]).sum()))
            if self._cache is None or self._cache[0] != key:
                with torch.no_grad():
                    self._cache = (key, self.low_rank_adjacency(edge_index, None, n, x.dtype))
            a = self._cache[1]
        else:
            a = self.low_rank_adjacency(edge_index, edge_weight, n, x.dtype)
        a = a - torch.diag(torch.diagonal(a))  # the self-loop of the normalisation is added by dense_forward
        return self.dense_forward(x, a)


@register_model("gcn_svd", task="graph")
def gcn_svd(in_features: int, num_classes: int, rank: int = 50, hidden: int = 16, dropout: float = 0.5) -> GCNSVD:
    """GCN-SVD (Entezari et al. 2020): GCN on the rank-50 truncated SVD of the adjacency (dense)."""
    return GCNSVD(in_features, num_classes, rank, hidden, dropout)
