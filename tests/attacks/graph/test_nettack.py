"""Nettack: closed-form candidate logits equal recomputation; invariants for every mode."""

from __future__ import annotations

import pytest
import torch

from robustbench_geo.attacks import create_attack
from robustbench_geo.attacks.graph.constraints import cooccurrence_mask
from robustbench_geo.attacks.graph.nettack import dense_row_a2, flip_logits
from robustbench_geo.models.gnn import dense_gcn_norm
from tests.attacks.graph.conftest import sbm_graph
from tests.attacks.graph.test_invariants import reference_check


def test_closed_form_logits_equal_recomputed_ones():
    gr = sbm_graph(n=25)
    adj = gr.dense_adjacency().double()
    h = torch.randn(25, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a_hat = dense_gcn_norm(adj)
    assert torch.allclose(dense_row_a2(adj, 4), (a_hat @ a_hat)[4])
    nbrs = torch.nonzero(adj[4]).view(-1).tolist()
    for u, a in [(4, 4), (4, nbrs[0]), (4, nbrs[1]), (0, 0)]:
        fast = flip_logits(adj, h, u, a)
        for v in range(25):
            if v == a or (a != u and v == u):
                continue
            b = adj.clone()
            b[a, v] = b[v, a] = 1 - b[a, v]
            ref = (dense_gcn_norm(b) @ dense_gcn_norm(b) @ h)[u]
            assert torch.allclose(fast[v], ref, atol=1e-12), (u, a, v)


def test_cooccurrence_mask_matches_definition():
    x = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]], dtype=torch.float32)
    m = cooccurrence_mask(x, None, 0)  # node 0 has features {0, 1}
    # C: 0-1, 1-2 co-occur; degrees d0=1, d1=2, d2=1, d3=0; threshold 0.5 (1/1 + 1/2) = 0.75
    # feature 2 co-occurs with feature 1 only: 1/2 < 0.75 -> not allowed; 3 with none
    assert m.tolist() == [True, True, False, False]


MODES = [{}, {"features": True}, {"features": True, "structure": False}, {"direct": False},
         {"direct": False, "features": True, "n_influencers": 2}, {"ll_constraint": False}]


@pytest.mark.parametrize("params", MODES, ids=[str(p) for p in MODES])
def test_nettack_invariants(params):
    for seed in range(3):
        gr = sbm_graph(seed=seed)
        att = create_attack("nettack", None, **params)
        for target in gr.idx_test[:3].tolist():
            res = att(gr, target, seed=seed)
            reference_check(gr, res, res.budget)
            deg = int((gr.edge_index[0] == target).sum())
            assert res.budget == deg + 2 and res.target == target
            touched = torch.cat([res.insertions, res.deletions], 1)
            if params.get("direct", True):
                assert (touched == target).any(0).all()
                assert (res.feature_flips[0] == target).all()
            else:
                assert not (touched == target).any()
            if res.x is not None:
                changed = (res.x != gr.x).nonzero()
                assert changed.shape[0] == res.feature_flips.shape[1]


def test_nettack_fools_its_surrogate_and_budget_override():
    gr = sbm_graph(seed=1)
    att = create_attack("nettack", None, budget_flips_per_target=4)
    res = att(gr, int(gr.idx_test[0]))
    assert res.budget == 4 and res.budget_used <= 4
    with pytest.raises(ValueError, match="node id in \\[0, 60\\)"):
        att(gr, 60)
    with pytest.raises(ValueError, match="structure=True and/or features=True"):
        create_attack("nettack", None, structure=False)


def test_surrogate_is_drawn_from_the_seed():
    gr = sbm_graph(seed=2)
    att = create_attack("nettack", None)
    w0, w1 = att.surrogate(gr, 0), att.surrogate(gr, 1)
    assert not torch.allclose(w0, w1)
    assert torch.equal(create_attack("nettack", None).surrogate(gr, 1), w1)
    t = int(gr.idx_test[0])
    first, again = att(gr, t, seed=1), create_attack("nettack", None)(gr, t, seed=1)
    assert torch.equal(first.edge_index, again.edge_index)
