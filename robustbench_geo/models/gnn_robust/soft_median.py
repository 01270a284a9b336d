"""Soft Median GDC (Geisler, Schmidt, Sirin, Zügner, Bojchevski & Günnemann, NeurIPS 2021).

A GCN whose sum aggregation is replaced by the *soft median* and whose graph is the sparsified
personalised-PageRank diffusion of GDC (Gasteiger et al. 2019):

* diffusion: ``Pi = alpha (I - (1 - alpha) A_hat)^-1`` with ``A_hat = D^-1/2 (A + I) D^-1/2``
  (exact, dense), keep each row's ``neighbors`` largest entries and normalise each row to sum 1;
* soft median of node ``i`` over its diffusion neighbours ``j`` (weights ``a_ij``) on the
  transformed features ``H = X W``: ``xbar_i`` = the dimension-wise weighted median of the ``h_j``,
  ``c_ij = ||xbar_i - h_j||``, ``s_ij = softmax_j(-c_ij / (T sqrt(d)))`` over the neighbours, and
  ``out_i = (sum_j a_ij / sum_j s_ij a_ij) sum_j s_ij a_ij h_j`` (Geisler et al., Eq. 7).

References: the soft median of Geisler et al.'s code (sigeisler/robustness_of_gnns_at_scale,
``rgnn_at_scale/aggregation.py``, ``soft_median``: distances divided by ``sqrt(d)``, a softmax over each
row's non-zero weights, weights rescaled to the row's original sum) and Mujkanovic et al.'s model,
which their adaptive attacks ran (``gb/exutil.py`` ``make_attacked_model("soft_median_gdc")``:
``gb/preprocess.py`` ``personalized_page_rank`` with the exact inverse, ``gcn_norm`` clamping degrees of
``A + I`` at 1e-5 and row sums of the top-k values at 1e-5; ``gb/model/softmedian.py``
``SoftMedianPropagation``; ``gb/model/gcn.py`` ``GCN`` with ``loops=False``, no input dropout). Their
softmax over all nodes (``only_weight_neighbors=False``) cancels against the rescaling, so it equals
the one over the neighbours used here.

The median's position is chosen without gradient; everything else (the diffusion, its top-k
values, the distances) is differentiable, so gradient attacks reach the model through the
diffusion. The diffusion needs an ``N x N`` inverse (Cholesky, 0.4 s for the Cora LCC on one core):
``forward`` builds the dense adjacency from ``edge_index`` and runs the dense path, caching the
diffusion of an unweighted graph by its ``edge_index`` (a :class:`ContentCache`: training and clean
evaluation reuse it, two graphs never share it).

Hyper-parameters: 64 hidden units, dropout 0.5, ``alpha`` (teleport) 0.15, top-64 neighbours,
temperature 0.5, Adam lr 0.01, weight decay 1e-3: Mujkanovic et al. 2022's
``soft_median_gdc_faith_cora`` (``ex_config/evasion_global.yml``), which follows the authors'
Cora configuration.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_geo.models.gnn import dense_gcn_norm
from robustbench_geo.models.gnn_robust.common import edge_weights, to_dense
from robustbench_geo.models.registry import register_model
from robustbench_geo.models.tensor_cache import ContentCache


class _SPDInverse(torch.autograd.Function):
    """``M^-1`` of a symmetric positive definite ``M`` by Cholesky, with a backward that exploits a sparse gradient.

    ``I - (1 - alpha) D^-1/2 (A + I) D^-1/2`` is symmetric positive definite for a symmetric, non-negative
    ``A`` (the normalised matrix's spectrum lies in ``[-1, 1]``, so ``M``'s lies in ``[alpha, 2 - alpha]``).
    Cholesky plus ``cholesky_inverse`` takes about 40 % of ``torch.linalg.inv``'s time on the Cora LCC.
    The backward ``dL/dM = -P^T G P^T = -P G P`` (``P`` symmetric) multiplies the gradient ``G`` of the
    diffusion first: the diffusion is read only through each row's top-k entries, so ``G`` has ``k``
    non-zeros per row and ``G P`` costs ``k N^2`` instead of ``N^3``; one dense product is left instead of
    autograd's two. A matrix symmetric up to rounding is factorised from its lower triangle; one that is
    not symmetric, or whose factorisation fails, takes ``torch.linalg.inv`` (forward and backward), so the
    function is ``M^-1`` for every invertible input.
    """

    @staticmethod
    def forward(ctx, m: torch.Tensor) -> torch.Tensor:
        # symmetric up to rounding (the normalisation's d_i a_ij d_j and d_j a_ji d_i round differently)
        tol = 64 * torch.finfo(m.dtype).eps * m.abs().max()
        factor, info = torch.linalg.cholesky_ex(m) if (m - m.mT).abs().max() <= tol else (None, 1)
        if factor is not None and int(info) == 0:
            # row-major (LAPACK returns a column-major result; sparse products and top-k are slow on it)
            inv, ctx.symmetric = torch.cholesky_inverse(factor).contiguous(), True
        else:
            inv, ctx.symmetric = torch.linalg.inv(m), False
        ctx.save_for_backward(inv)
        return inv

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (inv,) = ctx.saved_tensors
        if not ctx.symmetric:
            return -inv.mT @ grad @ inv.mT
        nonzero = (grad != 0).sum()
        if grad.device.type == "cpu" and nonzero * 8 < grad.numel():
            return -(inv @ torch.sparse.mm(grad.to_sparse(), inv))
        return -(inv @ (grad @ inv))


def ppr_diffusion(adj: torch.Tensor, teleport: float, neighbors: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``neighbors`` row-normalised PPR of a dense ``(N, N)`` adjacency: ``(idx, val)``, both ``(N, k)``."""
    n = adj.shape[0]
    eye = torch.eye(n, dtype=adj.dtype, device=adj.device)
    ppr = teleport * _SPDInverse.apply(eye - (1 - teleport) * dense_gcn_norm(adj))
    val, idx = ppr.topk(min(neighbors, n), dim=1)
    return idx, val / val.sum(1, keepdim=True).clamp_min(1e-5)


def soft_median(idx: torch.Tensor, val: torch.Tensor, h: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft-median aggregation ``(N, d)`` of ``h`` ``(N, d)`` over the weighted neighbours ``idx``/``val`` ``(N, k)``."""
    hn = h[idx]  # (N, k, d)
    with torch.no_grad():
        order = hn.argsort(1)
        cum = val[:, :, None].expand_as(hn).gather(1, order).cumsum(1)
        pos = (cum < val.sum(1)[:, None, None] / 2).sum(1, keepdim=True).clamp_(max=idx.shape[1] - 1)
        slot = order.gather(1, pos)  # (N, 1, d): which neighbour holds each dimension's median
    med = hn.gather(1, slot).squeeze(1)
    dist = torch.linalg.vector_norm(med[:, None, :] - hn, dim=2)
    logits = (-dist / (temperature * math.sqrt(h.shape[1]))).masked_fill(val == 0, float("-inf"))
    weighted = logits.softmax(1) * val
    scale = val.sum(1) / weighted.sum(1).clamp_min(1e-12)
    return scale[:, None] * torch.einsum("nk,nkd->nd", weighted, hn)


@register_model("soft_median_gdc", task="graph")
class SoftMedianGDC(nn.Module):
    """Soft Median GDC (Geisler et al. 2021): soft-median GCN on the top-64 PPR diffusion, 64 hidden (dense)."""

    train_defaults = {"lr": 0.01, "weight_decay": 1e-3}

    def __init__(self, in_features: int, num_classes: int, hidden: int = 64, dropout: float = 0.5,
                 teleport: float = 0.15, neighbors: int = 64, temperature: float = 0.5):
        super().__init__()
        if not 0 < teleport <= 1 or neighbors < 1 or temperature <= 0:
            raise ValueError(f"teleport in (0, 1], neighbors >= 1, temperature > 0: expected, got "
                             f"{teleport}, {neighbors}, {temperature}")
        self.lin1 = nn.Linear(in_features, hidden)
        self.lin2 = nn.Linear(hidden, num_classes)
        for lin in (self.lin1, self.lin2):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.dropout, self.teleport, self.neighbors, self.temperature = dropout, teleport, neighbors, temperature
        self._diffusion = ContentCache()  # the unweighted graph's diffusion, keyed by its edge_index

    def _run(self, x, idx, val):
        h = soft_median(idx, val, x @ self.lin1.weight.T, self.temperature) + self.lin1.bias
        h = F.dropout(F.relu(h), self.dropout, self.training)
        return soft_median(idx, val, h @ self.lin2.weight.T, self.temperature) + self.lin2.bias

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        n = x.shape[0]
        if edge_weight is not None:
            return self.dense_forward(x, to_dense(edge_index, edge_weights(edge_index, edge_weight, x), n))
        idx, val = self._diffusion.get(
            (edge_index,), lambda ei: ppr_diffusion(to_dense(ei, edge_weights(ei, None, x), n), self.teleport, self.neighbors),
            n, x.dtype)
        return self._run(x, idx, val)

    def dense_forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Same function on a dense ``(N, N)`` adjacency without self-loops (differentiable in ``adj``)."""
        return self._run(x, *ppr_diffusion(adj, self.teleport, self.neighbors))
