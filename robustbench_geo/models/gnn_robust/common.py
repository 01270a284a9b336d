"""Shared pieces of the robust GNNs: sparse propagation and its dense twin.

Conventions (the same as :mod:`robustbench_geo.models.gnn`): ``edge_index`` ``(2, E)`` holds
directed edges ``source -> target`` (messages flow from ``edge_index[0]`` to ``edge_index[1]``),
``edge_weight`` ``(E,)`` is ``None`` for all ones, and the graph has no self-loops. The dense
adjacency ``adj`` ``(N, N)`` has ``adj[i, j]`` = weight of the pair ``{i, j}`` and node ``i``
aggregates row ``i``; on a symmetric graph both views are the same function, which is what the
tests compare.
"""

from __future__ import annotations

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
