"""Shared pieces of the robust GNNs: sparse propagation and its dense twin.

Conventions (the same as :mod:`robustbench_geo.models.gnn`): ``edge_index`` ``(2, E)`` holds
directed edges ``source -> target`` (messages flow from ``edge_index[0]`` to ``edge_index[1]``),
``edge_weight`` ``(E,)`` is ``None`` for all ones, and the graph has no self-loops. The dense
adjacency ``adj`` ``(N, N)`` has ``adj[i, j]`` = weight of the pair ``{i, j}`` and node ``i``
aggregates row ``i``; on a symmetric graph both views are the same function, which is what the
tests compare.
"""

from __future__ import annotations

import warnings

import torch

from robustbench_geo.models.gnn import DEGREE_FLOOR, scatter


def edge_weights(edge_index: torch.Tensor, edge_weight: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``(E,)`` weights in ``x``'s dtype (ones when ``edge_weight`` is ``None``)."""
    if edge_weight is None:
        return torch.ones(edge_index.shape[1], dtype=x.dtype, device=x.device)
    return edge_weight.to(x.dtype)


def with_self_loops(edge_index: torch.Tensor, w: torch.Tensor, n: int, fill: float = 1.0):
    """``edge_index`` and ``w`` with one self-loop of weight ``fill`` per node appended (last ``n`` entries)."""
    loops = torch.arange(n, device=edge_index.device)
    ei = torch.cat([edge_index, torch.stack([loops, loops])], 1)
    return ei, torch.cat([w, torch.full((n,), fill, dtype=w.dtype, device=w.device)])


def propagate(edge_index: torch.Tensor, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``out[i] = sum_{(j -> i)} w_e h[j]``, ``(N, C)``."""
    return scatter(h[edge_index[0]] * w[:, None], edge_index[1], 0, dim_size=h.shape[0], reduce="sum")


def to_dense(edge_index: torch.Tensor, w: torch.Tensor, n: int) -> torch.Tensor:
    """Dense ``(N, N)`` adjacency with ``adj[i, j] = w`` of edge ``(i, j)`` (duplicates summed), differentiable in ``w``."""
    a = torch.zeros(n, n, dtype=w.dtype, device=w.device)
    return a.index_put((edge_index[0], edge_index[1]), w, accumulate=True)


def degree_scales(edge_index: torch.Tensor, w: torch.Tensor, n: int, power: float) -> torch.Tensor:
    """``(N,)`` ``deg^power`` of ``A + I`` (weighted in-degree plus the self-loop), for the sparse path.

    Degrees are clamped at :data:`~robustbench_geo.models.gnn.DEGREE_FLOOR` (Mujkanovic et al.'s ``gcn_norm``).
    """
    deg = scatter(w, edge_index[1], 0, dim_size=n, reduce="sum") + 1
    return deg.clamp_min(DEGREE_FLOOR).pow(power)


def dense_degree_scale(adj: torch.Tensor, power: float) -> torch.Tensor:
    """``(N, 1)`` column ``deg^power`` of ``A + I`` for :func:`~robustbench_geo.models.gnn.dense_gcn_propagate`."""
    return (adj.sum(1) + 1).clamp_min(DEGREE_FLOOR).pow(power)[:, None]


def scaled_propagate(edge_index: torch.Tensor, w: torch.Tensor, h: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``S (A + I) S h`` with ``S = diag(scale)``: the sparse twin of ``dense_gcn_propagate``.

    ``scale`` ``(N,)`` is ``deg^-1/2`` for the GCN normalisation, ``deg^-1`` for ``D^-1 (A + I) D^-1``.
    """
    h = scale[:, None] * h
    return scale[:, None] * (propagate(edge_index, w, h) + h)


#: a dense adjacency with at most this share of non-zero entries is multiplied through CSR (see :func:`sparse_aware_mm`)
SPARSE_SHARE = 0.1


def _csr(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n: int) -> torch.Tensor:
    """CSR ``(n, n)`` of entries sorted by row."""
    crow = torch.zeros(n + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=n).cumsum(0)
    with warnings.catch_warnings():  # torch's "Sparse CSR tensor support is in beta state"
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support", category=UserWarning)
        return torch.sparse_csr_tensor(crow, cols, vals, (n, n), check_invariants=False)


class SparseAdjacency:
    """The non-zeros of a dense ``(N, N)`` adjacency (no gradient), as CSR for ``adj @ h`` and ``adj^T @ g``."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n: int):
        self.rows, self.cols, self.vals, self.n = rows, cols, vals, n
        self.csr, self._csr_t = _csr(rows, cols, vals, n), None

    def transposed(self) -> torch.Tensor:
        if self._csr_t is None:
            order = torch.argsort(self.cols * self.n + self.rows)
            self._csr_t = _csr(self.cols[order], self.rows[order], self.vals[order], self.n)
        return self._csr_t


def sparse_adjacency(adj: torch.Tensor) -> SparseAdjacency | None:
    """The non-zeros of ``adj`` ``(N, N)`` when at most :data:`SPARSE_SHARE` of it is non-zero (CPU), else ``None``.

    A gradient attack's relaxed adjacency is the clean graph plus the pairs carrying perturbation mass: on the
    Cora LCC PGD's relaxation holds 1-2.5 % non-zero pairs over its steps (GRAND, 5 % budget).
    """
    if adj.device.type != "cpu" or adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
        return None
    with torch.no_grad():
        flat = adj.detach().reshape(-1)
        nz = torch.nonzero(flat).view(-1)
        if nz.numel() > SPARSE_SHARE * flat.numel():
            return None
        n = adj.shape[0]
        return SparseAdjacency(nz // n, nz % n, flat[nz], n)


class _SparseAwareMM(torch.autograd.Function):
    """``adj @ h`` for a dense ``adj`` with few non-zeros: the product and ``h``'s gradient through CSR copies,
    ``adj``'s gradient the dense ``G h^T`` (every pair gets one, as on the dense path)."""

    @staticmethod
    def forward(ctx, adj, h, sparse):
        ctx.save_for_backward(h)
        ctx.sparse = sparse
        return torch.sparse.mm(sparse.csr, h)

    @staticmethod
    def backward(ctx, grad):
        (h,) = ctx.saved_tensors
        grad_adj = grad @ h.T if ctx.needs_input_grad[0] else None
        grad_h = torch.sparse.mm(ctx.sparse.transposed(), grad) if ctx.needs_input_grad[1] else None
        return grad_adj, grad_h, None


def sparse_aware_mm(adj: torch.Tensor, h: torch.Tensor, sparse: SparseAdjacency | None) -> torch.Tensor:
    """``adj @ h``, through ``sparse`` (:func:`sparse_adjacency` of ``adj``) when it is given: equal up to rounding,
    with the same gradients in ``adj`` (dense) and ``h``, at the cost of the non-zeros instead of ``N^2`` per
    product (the gradient in ``adj`` is still one dense ``N x N`` outer product)."""
    if sparse is None:
        return adj @ h
    return _SparseAwareMM.apply(adj, h, sparse)
