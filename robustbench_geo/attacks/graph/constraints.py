"""Unnoticeability constraints of Nettack / Metattack (Zügner et al. 2018, 2019).

* **Singletons**: a deletion that leaves a node without edges is not allowed.
* **Degree power law**: degrees ``d >= d_min`` (``d_min = 2``) follow a power law with exponent
  ``alpha = 1 + n / (sum log d - n log(d_min - 1/2))`` (approximate MLE). A flip is allowed only if
  the likelihood-ratio statistic ``Lambda = -2 l(D_0 u D') + 2 (l(D_0) + l(D'))`` of the clean
  degrees ``D_0`` and the perturbed degrees ``D'`` stays below ``ll_cutoff`` (0.004, about the
  chi-squared(1) quantile at p = 0.95), with ``l(D) = n log alpha + n alpha log d_min -
  (alpha + 1) sum log d``.
* **Feature co-occurrence** (Nettack, features): a feature may be switched on at a node only if its
  co-occurrence with the node's features is high enough; see :func:`cooccurrence_mask`.
"""

from __future__ import annotations

import math

import torch

D_MIN = 2.0


def singleton_mask(adj: torch.Tensor) -> torch.Tensor:
    """``(N, N)`` bool: flips that do not leave a node without edges (deletions at degree-1 nodes are False)."""
    deg = adj.sum(1)
    lonely = deg <= 1
    return ~((adj > 0) & (lonely[:, None] | lonely[None, :]))


def _alpha(n, s):
    return 1 + n / (s - n * math.log(D_MIN - 0.5))


def _ll(n, s, alpha):
    return n * torch.log(alpha) + n * alpha * math.log(D_MIN) - (alpha + 1) * s


def degree_stats(deg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, sum log d)`` over the degrees ``d >= d_min`` (float64)."""
    d = deg.double()
    keep = d >= D_MIN
    return keep.sum().double(), torch.log(d[keep]).sum()


def _endpoint_change(deg: torch.Tensor, delta: float):
    """Change of ``(n, sum log d)`` when one endpoint's degree moves by ``delta`` (per node)."""
    d = deg.double()
    new = d + delta
    old_in, new_in = (d >= D_MIN).double(), (new >= D_MIN).double()
    ds = torch.log(new.clamp_min(1)) * new_in - torch.log(d.clamp_min(1)) * old_in
    return new_in - old_in, ds


def loglik_mask(deg_clean: torch.Tensor, adj: torch.Tensor, rows: torch.Tensor | None = None,
                ll_cutoff: float = 0.004) -> torch.Tensor:
    """Flips that keep the degree distribution's power law (likelihood-ratio test below ``ll_cutoff``).

    Args:
        deg_clean: ``(N,)`` degrees of the clean graph.
        adj: ``(N, N)`` current (already perturbed) dense adjacency.
        rows: restrict to flips ``(rows[k], j)`` (then the result is ``(len(rows), N)``); default all rows.

    Returns:
        bool mask of allowed flips, same shape as ``adj[rows]``.
    """
    n0, s0 = degree_stats(deg_clean)
    ll0 = _ll(n0, s0, _alpha(n0, s0))
    deg = adj.sum(1)
    n_cur, s_cur = degree_stats(deg)
    # the statistic depends on a flip only through its endpoints' degrees: tabulate it over the
    # distinct degrees (U x U per direction) and look it up, instead of N x N float64 arithmetic
    uniq, inv = torch.unique(deg, return_inverse=True)
    tables = []
    for delta in (1.0, -1.0):
        dn, ds = _endpoint_change(uniq, delta)
        n_new = n_cur + dn[:, None] + dn[None, :]
        s_new = s_cur + ds[:, None] + ds[None, :]
        ll_new = _ll(n_new, s_new, _alpha(n_new, s_new))
        n_comb, s_comb = n0 + n_new, s0 + s_new
        stat = -2 * _ll(n_comb, s_comb, _alpha(n_comb, s_comb)) + 2 * (ll_new + ll0)
        tables.append(stat < ll_cutoff)
    r = inv if rows is None else inv[rows]
    sub = adj if rows is None else adj[rows]
    return torch.where(sub > 0, tables[1][r][:, inv], tables[0][r][:, inv])


def cooccurrence_mask(x: torch.Tensor, adj: torch.Tensor, node: int) -> torch.Tensor:
    """``(F,)`` bool: features that may be switched on at ``node`` (Nettack's co-occurrence test).

    With the binary feature co-occurrence graph ``C = [X^T X > 0]`` (no diagonal) and its degrees
    ``d_g``, feature ``f`` may be switched on at ``u`` (features ``S_u``) when
    ``sum_{g in S_u, C_fg = 1} 1 / d_g > 1/2 sum_{g in S_u} 1 / d_g`` (a random walker on ``C``
    started in ``S_u`` reaches ``f`` with probability above a threshold). Existing features of
    ``node`` may always be switched off.
    """
    xb = (x > 0).float()
    co = (xb.T @ xb)
    co.fill_diagonal_(0)
    co = (co > 0).float()
    dg = co.sum(1)
    inv = torch.where(dg > 0, 1.0 / dg.clamp_min(1), torch.zeros_like(dg))
    have = xb[node] > 0
    if not have.any():
        return ~have
    score = (co[have] * inv[have][:, None]).sum(0)
    thresh = 0.5 * inv[have].sum()
    return (score > thresh) | have
