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
from robustbench_geo.models.tensor_cache import TensorCache


def jaccard_similarity(x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """Weighted Jaccard similarity ``sum min(x_i, x_j) / sum max(x_i, x_j)`` of each edge's endpoints.

    Equals ``|x_i AND x_j| / |x_i OR x_j|`` for binary features. Returns ``(E,)`` in ``[0, 1]``
    (0 when both feature vectors are zero).
    """
    a, b = x[edge_index[0]].abs(), x[edge_index[1]].abs()
    num = torch.minimum(a, b).sum(1)
    den = torch.maximum(a, b).sum(1)
    return torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(den))


def dense_jaccard_similarity(x: torch.Tensor) -> torch.Tensor:
    """:func:`jaccard_similarity` of every pair of nodes, ``(N, N)``.

    With ``s_i = sum |x_i|``: ``sum min = (s_i + s_j - L1) / 2`` and ``sum max = (s_i + s_j + L1) / 2``,
    where ``L1`` is the L1 distance of the rows; for binary features ``L1 = s_i + s_j - 2 x_i . x_j``,
    a matrix product.
    """
    a = x.abs().to(torch.float64)
    s = a.sum(1)
    tot = s[:, None] + s[None, :]
    binary = bool(((a == 0) | (a == 1)).all())
    l1 = tot - 2 * (a @ a.T) if binary else torch.cdist(a, a, p=1)
    num, den = (tot - l1) / 2, (tot + l1) / 2
    return torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(den)).to(x.dtype)


class GCNJaccard(GCN):
    """GCN-Jaccard (Wu et al. 2019): edges whose endpoints' Jaccard feature similarity is below
    ``threshold`` are dropped (weight 0) before the GCN runs."""

    def __init__(self, in_features: int, num_classes: int, threshold: float = 0.01, hidden: int = 16, dropout: float = 0.5):
        super().__init__(in_features, num_classes, hidden, dropout)
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold: expected a Jaccard similarity in [0, 1], got {threshold}")
        self.threshold = threshold
        self._dense_keep = TensorCache()

    def keep_mask(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """``(E,)`` bool: edges the defense keeps."""
        return jaccard_similarity(x, edge_index) >= self.threshold

    def forward(self, x, edge_index, edge_weight=None):
        keep = self.keep_mask(x, edge_index)
        w = keep.to(x.dtype) if edge_weight is None else edge_weight * keep.to(edge_weight.dtype)
        return super().forward(x, edge_index, w)

    def dense_forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """The same function on a dense ``(N, N)`` adjacency: the GCN on the pairs the defense keeps."""
        return super().dense_forward(x, adj * self.dense_keep_mask(x).to(adj.dtype))

    def dense_keep_mask(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, N)`` bool: the pairs the defense would keep as edges (cached per feature matrix)."""
        return self._dense_keep.get(x, lambda t: dense_jaccard_similarity(t) >= self.threshold, self.threshold)


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
        return self._low_rank(a)

    def _low_rank(self, a: torch.Tensor) -> torch.Tensor:
        """``A V_k V_k^T`` (= ``U_k S_k V_k^T``) of a dense ``(N, N)`` matrix.

        The subspace is held fixed under differentiation (SVD gradients blow up on repeated
        singular values). A symmetric ``A`` (every undirected graph, and the relaxed graphs of
        PGD) takes its eigendecomposition: its singular vectors are the eigenvectors of the
        largest ``|lambda|``, and LAPACK's symmetric solver converges where the SVD driver can
        fail on such ill-conditioned matrices.
        """
        k = min(self.rank, a.shape[0])
        with torch.no_grad():
            m = a.detach()
            if torch.equal(m, m.T):
                lam, vecs = torch.linalg.eigh(m)
                v = vecs[:, torch.argsort(lam.abs(), descending=True)[:k]]
            else:
                v = torch.linalg.svd(m)[2][:k].T
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
        return super().dense_forward(x, self._off_diagonal(a))

    def dense_forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """The same function on a dense ``(N, N)`` adjacency: the GCN on its rank-``rank`` approximation."""
        return super().dense_forward(x, self._off_diagonal(self._low_rank(adj)))

    @staticmethod
    def _off_diagonal(a: torch.Tensor) -> torch.Tensor:
        """``a`` without its diagonal: the normalisation adds the self-loops."""
        return a - torch.diag(torch.diagonal(a))


@register_model("gcn_svd", task="graph")
def gcn_svd(in_features: int, num_classes: int, rank: int = 50, hidden: int = 16, dropout: float = 0.5) -> GCNSVD:
    """GCN-SVD (Entezari et al. 2020): GCN on the rank-50 truncated SVD of the adjacency (dense)."""
    return GCNSVD(in_features, num_classes, rank, hidden, dropout)
