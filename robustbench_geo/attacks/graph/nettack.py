"""Nettack (Zügner, Akbarnejad & Günnemann 2018, "Adversarial Attacks on Neural Networks for Graph Data").

Targeted: for one target ``u`` it greedily picks, one at a time, the structure flip or feature flip
that most increases the surrogate's classification margin ``max_{c != y} Z_uc - Z_uy`` of
``Z = A_hat^2 X W`` (a linearised two-layer GCN trained on the clean graph, ``W = W1 W2``).
Because the surrogate is linear, every candidate's new margin is computed *exactly* in closed form
(no gradients): for a flip ``(a, b)`` only the degrees of ``a`` and ``b`` and the rows touching them
change, so ``Z_u`` is updated from a few ``(N, C)`` vectors for all candidates ``b`` at once.

* direct attack: flips ``(u, v)`` and features of ``u``;
* influencer attack: flips ``(a, v)`` and features of ``a`` for influencer nodes ``a`` (the
  ``n_influencers`` neighbours of ``u`` with the largest ``A_hat^2`` weight), never touching ``u``;
* constraints: no singleton, the degree power law (likelihood-ratio test) and the feature
  co-occurrence test (:mod:`.constraints`).
"""

from __future__ import annotations

import time

import torch

from robustbench_geo.attacks.base import register_attack
from robustbench_geo.attacks.graph.base import (
    GraphAttack, GraphPerturbation, check_dense_memory, check_target, finalize, target_budget,
)
from robustbench_geo.attacks.graph.constraints import cooccurrence_mask, loglik_mask
from robustbench_geo.attacks.graph.dense import train_linear_gcn
from robustbench_geo.data.base import GraphDataset
from robustbench_geo.models.gnn import dense_gcn_norm


def margin(logits: torch.Tensor, label: int) -> torch.Tensor:
    """``max_{c != label} z_c - z_label`` per row of ``(K, C)`` logits."""
    other = logits.clone()
    other[:, label] = float("-inf")
    return other.max(1).values - logits[:, label]


def flip_logits(adj: torch.Tensor, h: torch.Tensor, u: int, a: int, adj_sparse: torch.Tensor | None = None,
                deg: torch.Tensor | None = None) -> torch.Tensor:
    """Exact surrogate logits ``(A'_hat^2 H)_u`` ``(N, C)`` after flipping ``(a, v)``, for every ``v``.

    ``adj``: current dense adjacency (no self-loops); ``h = X W`` ``(N, C)``; ``adj_sparse`` and
    ``deg``: the same adjacency as a sparse tensor and its degrees (computed when not given). Rows
    ``v = a`` (and ``v = u`` when ``a != u``) are meaningless and must be masked by the caller.
    """
    sp_adj = adj.to_sparse() if adj_sparse is None else adj_sparse
    d = (adj.sum(1) if deg is None else deg) + 1
    s = d.rsqrt()
    t = torch.sparse.mm(sp_adj, s[:, None] * h) + s[:, None] * h  # T_k = sum_j A~_kj s_j H_j
    row_a = adj[a]
    delta = 1 - 2 * row_a  # +1 inserts (a, v), -1 deletes it
    sa_new = (d[a] + delta).rsqrt()  # (N,) s'_a for each candidate v
    sv_new = (d + delta).rsqrt()  # (N,) s'_v
    da, dv = sa_new - s[a], sv_new - s
    s2 = s * s
    if a == u:  # logits_u = s'_u sum_k A~'_uk s'_k^2 T'_k, expanded per candidate v
        a_uv = row_a
        p = (a_uv * s2) @ t  # sum_{k in N(u)} s_k^2 T_k
        sigma = (a_uv * s2).sum()
        q = torch.sparse.mm(sp_adj, (a_uv * s2)[:, None]).squeeze(1)  # q_v = sum_{k in N(u)} s_k^2 A_kv (A symmetric)
        inner = (p[None, :] - (a_uv * s2)[:, None] * t + (da * (sigma - a_uv * s2))[:, None] * h[u][None, :]
                 + (dv * q)[:, None] * h)
        self_term = (sa_new ** 2)[:, None] * (t[u][None, :] + da[:, None] * h[u][None, :] + (a_uv * dv)[:, None] * h
                                              + (delta * sv_new)[:, None] * h)
        new_v = ((1 - a_uv) * sv_new ** 2)[:, None] * (t + dv[:, None] * h + sa_new[:, None] * h[u][None, :])
        return sa_new[:, None] * (inner + self_term + new_v)
    # influencer flip (a, v), a != u: logits_u = s_u sum_{k in N~(u)} s'_k^2 T'_k
    in_u = adj[u].clone()
    in_u[u] = 1.0  # N~(u) indicator
    r = torch.sparse.mm(sp_adj, (in_u * s2)[:, None]).squeeze(1) + in_u * s2  # r_w = sum_{k in N~(u)} s_k^2 A~_kw
    base = (in_u * s2) @ t
    a_av = row_a
    t_a = t[a][None, :] + da[:, None] * h[a][None, :] + (a_av * dv)[:, None] * h + (delta * sv_new)[:, None] * h
    t_v = t + (a_av * da)[:, None] * h[a][None, :] + dv[:, None] * h + (delta * sa_new)[:, None] * h[a][None, :]
    total = (base[None, :] + (da * r[a])[:, None] * h[a][None, :] + (dv * r)[:, None] * h
             + delta[:, None] * (in_u[a] * s2[a] * sv_new[:, None] * h + (in_u * s2 * sa_new)[:, None] * h[a][None, :]))
    total = total + in_u[a] * (sa_new ** 2 - s2[a])[:, None] * t_a + (in_u * (sv_new ** 2 - s2))[:, None] * t_v
    return s[u] * total


@register_attack("nettack", domain="graph")
class Nettack(GraphAttack):
    """Nettack (Zügner et al. 2018): targeted, direct or influencer, structure and/or features."""

    targeted = True
    budget_param = "budget_flips_per_target"
    uses_model = False
    param_docs = {
        "budget_flips_per_target": "structure + feature flips per target; None = degree + 2",
        "direct": "direct attack (flips touch the target) or influencer attack (they never do)",
        "structure": "perturb edges", "features": "perturb (binary) features",
        "n_influencers": "influencer nodes (influencer attack)",
        "ll_constraint": "keep the degree power law (likelihood-ratio test)", "ll_cutoff": "likelihood-ratio cutoff",
        "max_memory_gb": "refuse graphs whose dense matrices need more (GiB)",
    }

    def __init__(self, model=None, *, budget_flips_per_target: int | None = None, direct: bool = True,
                 structure: bool = True, features: bool = False, n_influencers: int = 5, ll_constraint: bool = True,
                 ll_cutoff: float = 0.004, max_memory_gb: float = 8.0):
        super().__init__(model)
        if not (structure or features):
            raise ValueError("nettack: expected structure=True and/or features=True, got neither")
        if n_influencers < 1:
            raise ValueError(f"n_influencers: expected at least 1, got {n_influencers}")
        self.budget_flips_per_target, self.direct, self.structure, self.features = budget_flips_per_target, direct, structure, features
        self.n_influencers, self.ll_constraint, self.ll_cutoff, self.max_memory_gb = n_influencers, ll_constraint, ll_cutoff, max_memory_gb
        self._surrogate: tuple | None = None

    def surrogate(self, graph: GraphDataset, seed: int) -> torch.Tensor:
        """``W = W1 W2`` of the linearised GCN trained on ``graph`` from seed ``seed`` (cached per graph and seed).

        The surrogate's initialisation moves which targets fall (17-20 of 20 on Cora over seeds), so it
        is part of the attack's randomness: results over seeds include it.
        """
        key = (graph.split_hash, graph.num_nodes, graph.edge_index.shape[1], int(graph.edge_index.sum()), float(graph.x.sum()), seed)
        if self._surrogate is None or self._surrogate[0] != key:
            w = train_linear_gcn(graph.x, graph.dense_adjacency(), graph.y, graph.idx_train, graph.idx_val, seed=seed)
            self._surrogate = (key, w)
        return self._surrogate[1]

    def __call__(self, graph: GraphDataset, target: int, *, seed: int = 0) -> GraphPerturbation:
        graph = graph.to("cpu")
        u = check_target(graph, target)
        budget = target_budget(graph, u, self.budget_flips_per_target)
        mem = check_dense_memory("nettack", graph.num_nodes, 4, self.max_memory_gb)
        if self.features and not torch.all((graph.x == 0) | (graph.x == 1)):
            raise ValueError("nettack: features=True needs binary features (0/1); this graph's are not")
        t0 = time.perf_counter()
        w = self.surrogate(graph, seed)
        x = graph.x.clone()
        adj = graph.dense_adjacency()
        deg0 = adj.sum(1)
        label = int(graph.y[u])
        n = graph.num_nodes
        if self.direct:
            attackers = [u]
        else:
            a2 = dense_gcn_norm(adj)
            w2 = a2 @ a2[:, u]
            nbrs = torch.nonzero(adj[u]).view(-1)
            attackers = nbrs[torch.argsort(w2[nbrs], descending=True)[: self.n_influencers]].tolist()
        cooc = {a: cooccurrence_mask(graph.x, adj, a) for a in attackers} if self.features else {}
        flipped = torch.zeros(n, n, dtype=torch.bool)
        fflipped = torch.zeros_like(x, dtype=torch.bool)
        chosen, fchosen, margins, evaluated = [], [], [], 0
        adj_sp = adj.to_sparse()
        for _ in range(budget):
            h = x @ w
            best = (float("-inf"), None)
            deg = adj.sum(1)
            for a in attackers:
                if self.structure:
                    new = margin(flip_logits(adj, h, u, a, adj_sp, deg), label)
                    ok = ~flipped[a] & ~flipped[:, a]
                    ok[a] = False
                    ok[u] = ok[u] & (a == u)
                    ok &= ~((adj[a] > 0) & ((deg <= 1) | (deg[a] <= 1)))  # no singletons
                    if self.ll_constraint:
                        ok &= loglik_mask(deg0, adj, rows=torch.tensor([a]), ll_cutoff=self.ll_cutoff)[0]
                    evaluated += int(ok.sum())
                    new = new.masked_fill(~ok, float("-inf"))
                    v = int(torch.argmax(new))
                    if new[v] > best[0]:
                        best = (float(new[v]), ("edge", a, v))
                if self.features:
                    a2u = self._a2_entry(adj, u, a)
                    z_u = (dense_row_a2(adj, u) @ h)
                    delta = 1 - 2 * x[a]  # (F,)
                    new_z = z_u[None, :] + a2u * delta[:, None] * w  # (F, C)
                    new = margin(new_z, label)
                    ok = ~fflipped[a] & (cooc[a] | (x[a] > 0))
                    evaluated += int(ok.sum())
                    new = new.masked_fill(~ok, float("-inf"))
                    f = int(torch.argmax(new))
                    if new[f] > best[0]:
                        best = (float(new[f]), ("feature", a, f))
            if best[1] is None:
                break
            kind, a, b = best[1]
            if kind == "edge":
                adj[a, b] = adj[b, a] = 1 - adj[a, b]
                adj_sp = adj.to_sparse()
                flipped[a, b] = flipped[b, a] = True
                chosen.append((a, b))
            else:
                x[a, b] = 1 - x[a, b]
                fflipped[a, b] = True
                fchosen.append((a, b))
            margins.append(best[0])
        flips = torch.tensor(chosen, dtype=torch.long).reshape(-1, 2).T
        ff = torch.tensor(fchosen, dtype=torch.long).reshape(-1, 2).T
        work = {"surrogate_margins": margins, "candidates_evaluated": evaluated, "attackers": attackers,
                "dense_memory_gib": mem, "seconds": time.perf_counter() - t0}
        return finalize(graph, flips, budget, x=x if fchosen else None, feature_flips=ff, target=u, work=work)

    @staticmethod
    def _a2_entry(adj, u, a) -> torch.Tensor:
        return dense_row_a2(adj, u)[a]


def dense_row_a2(adj: torch.Tensor, u: int) -> torch.Tensor:
    """Row ``u`` of ``A_hat^2`` ``(N,)``."""
    s = (adj.sum(1) + 1).rsqrt()
    row = adj[u].clone()
    row[u] += 1
    r = s[u] * row * s * s  # A_hat[u] * s
    return (r @ adj + r) * s  # A_hat[u] @ (s A~ s)
