"""Metattack: the fast (symmetrised) meta-gradient equals the direct unrolled one; constraints match references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robustbench_geo.attacks import create_attack
from robustbench_geo.attacks.graph.constraints import D_MIN, loglik_mask, singleton_mask
from robustbench_geo.attacks.graph.metattack import Metattack, _uniform
from robustbench_geo.models.gnn import dense_gcn_norm
from tests.attacks.graph.conftest import sbm_graph
from tests.attacks.graph.test_invariants import reference_check


def direct_meta_gradient(att, adj, x, y, train, unlabeled, labels, seed):
    """Unroll the surrogate training on (W1, W2) with dense products everywhere (slow reference)."""
    g = torch.Generator().manual_seed(seed)
    a_mod = adj.clone().requires_grad_(True)
    a_hat = dense_gcn_norm(a_mod)
    w1 = _uniform((x.shape[1], att.hidden), g).requires_grad_(True)
    w2 = _uniform((att.hidden, int(y.max()) + 1), g).requires_grad_(True)
    v1, v2 = torch.zeros_like(w1), torch.zeros_like(w2)
    for _ in range(att.train_iters):
        out = a_hat @ (a_hat @ x @ w1) @ w2
        loss = F.cross_entropy(out[train], y[train])
        g1, g2 = torch.autograd.grad(loss, [w1, w2], create_graph=True)
        v1, v2 = att.momentum * v1 + g1, att.momentum * v2 + g2
        w1, w2 = w1 - att.lr * v1, w2 - att.lr * v2
    out = a_hat @ (a_hat @ x @ w1) @ w2
    lam = att.lambda_train
    loss = lam * F.cross_entropy(out[train], y[train]) + (1 - lam) * F.cross_entropy(out[unlabeled], labels[unlabeled])
    return torch.autograd.grad(loss, a_mod)[0]


@pytest.mark.parametrize("lambda_train", [0.0, 0.5, 1.0])
def test_fast_meta_gradient_equals_direct_unrolling(lambda_train):
    torch.set_default_dtype(torch.float64)
    try:
        gr = sbm_graph(n=40, features=12)
        x, y, adj = gr.x.double(), gr.y, gr.dense_adjacency().double()
        unl = torch.cat([gr.idx_val, gr.idx_test]).sort().values
        labels = y.clone()
        att = Metattack(lambda_train=lambda_train, train_iters=15)
        fast = att._meta_gradient(adj.clone().requires_grad_(True), x.to_sparse(), x.T.to_sparse(), y, gr.idx_train,
                                  unl, labels, torch.Generator().manual_seed(3))
        ref = direct_meta_gradient(att, adj, x, y, gr.idx_train, unl, labels, 3)
        # A_hat X is computed as (X^T A_hat)^T, which routes part of the gradient to the transposed
        # entry; a flip changes both (i, j) and (j, i), so the symmetrised gradients must agree
        assert torch.allclose(fast + fast.T, ref + ref.T, atol=1e-10, rtol=1e-6)
    finally:
        torch.set_default_dtype(torch.float32)


def _ll_reference(deg0, deg1):
    def stats(d):
        d = [v for v in d if v >= D_MIN]
        return len(d), sum(math.log(v) for v in d)

    def alpha(n, s):
        return 1 + n / (s - n * math.log(D_MIN - 0.5))

    def ll(n, s):
        a = alpha(n, s)
        return n * math.log(a) + n * a * math.log(D_MIN) - (a + 1) * s

    n0, s0 = stats(deg0)
    n1, s1 = stats(deg1)
    return -2 * ll(n0 + n1, s0 + s1) + 2 * (ll(n0, s0) + ll(n1, s1))


def test_loglik_mask_matches_a_per_pair_reference():
    gr = sbm_graph(n=30)
    adj = gr.dense_adjacency()
    deg0 = adj.sum(1)
    adj[0, 5] = adj[5, 0] = 1 - adj[0, 5]  # a perturbed current graph
    mask = loglik_mask(deg0, adj, ll_cutoff=0.004)
    for i in range(0, 30, 3):
        for j in range(30):
            if i == j:
                continue
            d = adj.sum(1).tolist()
            step = 1 - 2 * adj[i, j].item()
            d[i] += step
            d[j] += step
            assert bool(mask[i, j]) == (_ll_reference(deg0.tolist(), d) < 0.004), (i, j)
    assert torch.equal(loglik_mask(deg0, adj, rows=torch.tensor([3, 7])), mask[[3, 7]])


def test_singleton_mask():
    adj = torch.zeros(4, 4)
    adj[0, 1] = adj[1, 0] = adj[1, 2] = adj[2, 1] = 1
    m = singleton_mask(adj)
    assert not m[0, 1] and not m[1, 0] and not m[1, 2]  # 0 and 2 have degree 1
    assert m[0, 2] and m[2, 3]  # insertions are always fine


@pytest.mark.parametrize("params", [{}, {"approximate": True}, {"lambda_train": 1.0, "ll_constraint": False}])
def test_metattack_invariants_and_determinism(params):
    for seed in range(3):
        gr = sbm_graph(seed=seed)
        att = create_attack("metattack", None, budget_edge_fraction=0.1, train_iters=10, **params)
        att.progress = False
        res = att(gr, seed=seed)
        reference_check(gr, res, res.budget)
        if not params.get("ll_constraint", True):  # without the degree test nothing stops it early
            assert res.flips == res.budget
        assert res.flips >= res.budget // 2
        if seed == 0:
            assert torch.equal(res.edge_index, att(gr, seed=seed).edge_index)


def test_symmetric_matmul_matches_autograd_of_a_plain_product():
    from robustbench_geo.attacks.graph.metattack import _sym_mm

    g = torch.Generator().manual_seed(0)
    a = torch.rand(9, 9, generator=g, dtype=torch.float64)
    a = (a + a.T).requires_grad_(True)
    b = torch.rand(9, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.rand(9, 3, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad((_sym_mm(a, b) * w).sum(), [a, b])
    plain = torch.autograd.grad((a @ b * w).sum(), [a, b])
    assert all(torch.allclose(x, y, atol=1e-12) for x, y in zip(ours, plain))  # (gradcheck would perturb A asymmetrically)
    assert torch.allclose(_sym_mm(a, b), a @ b, atol=1e-12)
