"""The robust GNNs (rgcn, gnnguard, grand, soft_median_gdc, prognn): dense forward, gradients, training hooks."""

from __future__ import annotations

import pytest
import torch

from robustbench_geo.attacks.graph.dense import dense_logits
from robustbench_geo.models import build_model
from robustbench_geo.models.gnn_robust.gnnguard import dense_edge_importance
from robustbench_geo.models.gnn_robust.soft_median import soft_median
from robustbench_geo.training import TrainConfig, default_config, model_train_defaults, train_graph_model
from tests.attacks.graph.conftest import _one_thread, sbm_graph  # noqa: F401  (one intra-op thread, autouse)

MODELS = {"rgcn": {}, "gnnguard": {}, "grand": {}, "soft_median_gdc": {"neighbors": 12}, "prognn": {}}


def _train(name, graph, epochs=30, seed=0, **kw):
    torch.manual_seed(seed)
    model, _ = build_model(name, graph, **{**MODELS[name], **kw})
    cfg = TrainConfig(epochs=epochs, lr=0.01, weight_decay=5e-4, seed=seed, patience=epochs)
    train_graph_model(model, graph, cfg, progress=False)
    return model.eval()


@pytest.fixture(scope="module")
def trained():
    """Each model briefly trained on a small SBM graph (Pro-GNN then holds a learned graph)."""
    graph = sbm_graph(seed=3)
    return graph, {name: _train(name, graph) for name in MODELS}


def _random_binary_graph(n, p, seed):
    g = torch.Generator().manual_seed(seed)
    a = (torch.rand(n, n, generator=g) < p).triu(1)
    a = a | a.T
    return a.nonzero().T.contiguous(), a.float()


@pytest.mark.parametrize("name", MODELS)
def test_dense_forward_equals_sparse_forward_on_binary_graphs(name, trained):
    graph, models = trained
    model = models[name]
    # the training graph and random binary graphs on the same nodes (flips for Pro-GNN's learned graph)
    for seed in range(3):
        ei, adj = (graph.edge_index, graph.dense_adjacency()) if seed == 0 else _random_binary_graph(graph.num_nodes, 0.08, seed)
        with torch.no_grad():
            sparse, dense = model(graph.x, ei), model.dense_forward(graph.x, adj)
        assert torch.allclose(dense, sparse, atol=1e-4), (name, seed, (dense - sparse).abs().max())
        assert torch.equal(dense_logits(model, graph.x, adj), dense)  # what the attacks call


@pytest.mark.parametrize("name", MODELS)
def test_dense_gradient_is_finite_and_matches_the_edge_weight_gradient(name, trained):
    graph, models = trained
    model = models[name]
    ei, n = graph.edge_index, graph.num_nodes
    w = torch.rand(ei.shape[1], generator=torch.Generator().manual_seed(1))
    rev = torch.argsort(ei[1] * n + ei[0])  # position of (j, i) for edge (i, j) (edge_index is sorted)
    w = ((w + w[rev]) / 2).requires_grad_(True)
    adj = torch.zeros(n, n).index_put((ei[0], ei[1]), w.detach()).requires_grad_(True)
    sparse, dense = model(graph.x, ei, w), model.dense_forward(graph.x, adj)
    assert torch.allclose(dense, sparse, atol=1e-4), (dense - sparse).abs().max()
    probe = torch.randn_like(dense)
    (g_dense,) = torch.autograd.grad((dense * probe).sum(), adj)
    (g_sparse,) = torch.autograd.grad((sparse * probe).sum(), w)
    assert torch.isfinite(g_dense).all() and g_dense.abs().sum() > 0
    pair = (g_dense + g_dense.T)[ei[0], ei[1]]
    assert torch.allclose(pair, g_sparse + g_sparse[rev], atol=1e-4), (pair - g_sparse - g_sparse[rev]).abs().max()
    # relaxed PGD-style perturbations of the binary graph keep the gradient finite
    a = graph.dense_adjacency()
    s = torch.rand(n, n, generator=torch.Generator().manual_seed(2)).triu(1) * 0.3
    p = (a + (1 - 2 * a) * (s + s.T)).requires_grad_(True)
    (g,) = torch.autograd.grad(model.dense_forward(graph.x, p).logsumexp(1).sum(), p)
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("name", MODELS)
def test_training_fits_the_small_graph_and_eval_is_deterministic(name, trained):
    graph, models = trained
    model = models[name]
    with torch.no_grad():
        first, second = model(graph.x, graph.edge_index), model(graph.x, graph.edge_index)
    assert torch.equal(first, second)
    acc = (first.argmax(1)[graph.idx_test] == graph.y[graph.idx_test]).float().mean().item()
    assert acc > 0.6, f"{name}: test accuracy {acc:.2f} on an easy SBM graph (3 classes)"


def test_train_defaults_apply_below_explicit_overrides():
    assert model_train_defaults("soft_median_gdc")["weight_decay"] == 1e-3
    assert default_config("graph", "soft_median_gdc").weight_decay == 1e-3
    assert default_config("graph", "gnnguard").epochs == 81
    assert default_config("graph", "gnnguard", epochs=10).epochs == 10
    assert default_config("graph", "gcn") == default_config("graph")
    assert default_config("image", "grand") == default_config("image")


def test_prognn_learns_a_graph_and_perturbs_it_by_the_input_flips(trained):
    graph, models = trained
    model = models["prognn"]
    a, s = model.train_adj, model.learned_adj
    assert torch.equal(a, graph.dense_adjacency())
    assert s.min() >= 0 and s.max() <= 1 and not torch.allclose(s, a)
    i, j = 0, int(torch.nonzero(a[0] == 0)[1])  # a non-edge
    flipped = a.clone()
    flipped[i, j] = flipped[j, i] = 1
    eff = model.effective_adjacency(flipped)
    expected = s.clone()
    expected[i, j], expected[j, i] = 1 - s[i, j], 1 - s[j, i]
    assert torch.allclose(eff, expected)
    with pytest.raises(ValueError, match="expected an adjacency of shape"):
        model.effective_adjacency(torch.zeros(3, 3))
    # the learned graph travels with the weights
    fresh, _ = build_model("prognn", graph)
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    assert torch.equal(fresh(graph.x, graph.edge_index), model(graph.x, graph.edge_index))


def test_soft_median_matches_a_loop_weighted_median_and_tends_to_the_weighted_mean():
    g = torch.Generator().manual_seed(0)
    n, k, d = 7, 4, 3
    idx = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(n)])
    val = torch.rand(n, k, generator=g)
    val = val / val.sum(1, keepdim=True)
    h = torch.randn(n, d, generator=g)
    # temperature -> infinity: uniform softmax weights, the plain weighted mean
    mean = torch.einsum("nk,nkd->nd", val, h[idx])
    assert torch.allclose(soft_median(idx, val, h, 1e9), mean, atol=1e-5)
    # temperature -> 0: the neighbour closest to the weighted median dominates
    out = soft_median(idx, val, h, 1e-4)
    for i in range(n):
        med = torch.empty(d)
        for c in range(d):  # weighted median: first sorted value whose cumulative weight reaches half
            order = torch.argsort(h[idx[i], c])
            cum = torch.cumsum(val[i][order], 0)
            med[c] = h[idx[i][order[int((cum < 0.5 * val[i].sum()).sum())]], c]
        nearest = h[idx[i]][torch.argmin((h[idx[i]] - med).norm(dim=1))]
        assert torch.allclose(out[i], nearest, atol=1e-4)


def test_gnnguard_importance_rows_sum_to_one_and_ignore_dissimilar_neighbours():
    x = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0]])
    adj = torch.tensor([[0, 1, 1, 1], [1, 0, 0, 0], [1, 0, 0, 1], [1, 0, 1, 0]], dtype=torch.float)
    alpha = dense_edge_importance(x, adj)
    assert torch.allclose(alpha.sum(1), torch.ones(4))
    assert alpha[0, 2] == 0  # orthogonal features: the edge gets no weight
    assert torch.isclose(alpha[0, 0], torch.tensor(1 / 3))  # two similar neighbours: self weight 1 / (2 + 1)


def test_stochastic_training_modes():
    graph = sbm_graph(seed=1)
    for name in ("rgcn", "grand"):
        torch.manual_seed(0)
        model, _ = build_model(name, graph)
        model.train()
        assert not torch.equal(model(graph.x, graph.edge_index), model(graph.x, graph.edge_index))


def test_grand_eval_is_the_expected_mixed_order_propagation():
    from robustbench_geo.models.gnn import dense_gcn_norm

    graph = sbm_graph(seed=2)
    torch.manual_seed(0)
    model, _ = build_model("grand", graph, order=3)
    model.eval()
    a_hat = dense_gcn_norm(graph.dense_adjacency())
    x = graph.x / graph.x.sum(1, keepdim=True).clamp_min(1e-12) * (1 - model.dropnode)
    p = sum(torch.linalg.matrix_power(a_hat, k) for k in range(4)) / 4
    expected = model.lin2(torch.relu(model.lin1(p @ x)))
    assert torch.allclose(model(graph.x, graph.edge_index), expected, atol=1e-5)


def test_nuclear_prox_of_a_symmetric_matrix_is_singular_value_soft_thresholding():
    from robustbench_geo.models.gnn_robust.prognn import nuclear_prox_symmetric

    m = torch.randn(20, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = m + m.T
    u, sv, vh = torch.linalg.svd(s)
    expected = (u * (sv - 1.5).clamp_min(0)) @ vh
    assert torch.allclose(nuclear_prox_symmetric(s, 1.5), expected, atol=1e-10)


@pytest.mark.parametrize("name", ["rgcn", "gnnguard"])
def test_short_training_on_real_cora_is_sane(name, cora):
    """A few epochs on the Cora LCC (Pro-GNN split); full runs are in benchmarks/gnn_defenses.py."""
    torch.manual_seed(0)
    model, _ = build_model(name, cora)
    train_graph_model(model, cora, default_config("graph", name, epochs=40, patience=40), progress=False)
    with torch.no_grad():
        pred = model.eval()(cora.x, cora.edge_index).argmax(1)
    acc = (pred[cora.idx_test] == cora.y[cora.idx_test]).float().mean().item()
    assert acc > 0.7, f"{name}: {acc:.3f} test accuracy after 40 epochs (full training reaches about 0.8)"


@pytest.mark.parametrize("name", MODELS)
def test_pgd_attacks_each_defense_through_its_dense_forward(name, trained):
    from robustbench_geo.attacks import create_attack

    graph, models = trained
    model = models[name]
    with torch.no_grad():
        clean = (model(graph.x, graph.edge_index).argmax(1) == graph.y)[graph.idx_test].float().mean()
    res = create_attack("pgd", model, budget_edge_fraction=0.2, steps=10, samples=3, refine_steps=3)(graph, seed=0)
    assert 0 < res.flips <= res.budget
    with torch.no_grad():
        attacked = (model(graph.x, res.edge_index).argmax(1) == graph.y)[graph.idx_test].float().mean()
    assert attacked <= clean


def test_prognn_feature_smoothness_is_the_trace_of_the_normalised_laplacian_form():
    graph = sbm_graph(seed=4)
    model, _ = build_model("prognn", graph)
    g = torch.Generator().manual_seed(0)
    s = torch.rand(graph.num_nodes, graph.num_nodes, generator=g, dtype=torch.float64)
    x = graph.x.double()
    model._gram = x @ x.T
    sym = (s + s.T) / 2
    r = torch.diag((sym.sum(1) + 1e-3).rsqrt())
    lap = r @ (torch.diag(sym.sum(1)) - sym) @ r
    assert torch.allclose(model.feature_smoothness(s), torch.trace(x.T @ lap @ x))


@pytest.mark.parametrize("symmetric", [True, False])
def test_ppr_inverse_and_its_gradient_equal_the_plain_inverse(symmetric):
    """The Cholesky inverse with the sparse-gradient backward is ``torch.linalg.inv`` (value and gradient)."""
    from robustbench_geo.models.gnn import dense_gcn_norm
    from robustbench_geo.models.gnn_robust.soft_median import _SPDInverse

    _, adj = _random_binary_graph(40, 0.15, seed=4)
    w = torch.rand(40, 40, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    adj = adj.double() * ((w + w.T) / 2 if symmetric else w)  # weighted (relaxed) graph
    m = (torch.eye(40, dtype=torch.float64) - 0.85 * dense_gcn_norm(adj)).requires_grad_(True)
    probe = torch.randn(40, 40, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    for sparse_grad in (True, False):  # read through a top-k (sparse gradient) or everywhere (dense)
        outs = []
        for inverse in (_SPDInverse.apply, torch.linalg.inv):
            p = inverse(m)
            loss = (p.topk(3, dim=1).values * probe[:, :3]).sum() if sparse_grad else (p * probe).sum()
            outs.append((p, *torch.autograd.grad(loss, m)))
        assert outs[0][0].grad_fn.symmetric == symmetric  # the Cholesky path ran exactly when it applies
        assert torch.allclose(outs[0][0], outs[1][0], atol=1e-10)
        assert torch.allclose(outs[0][1], outs[1][1], atol=1e-9), (outs[0][1] - outs[1][1]).abs().max()
    assert torch.autograd.gradcheck(_SPDInverse.apply, (m,))


@pytest.mark.parametrize("dense_nodes", [4096, 0], ids=["table", "sorted-ids"])
def test_pair_similarities_equal_the_direct_computation_across_calls(dense_nodes):
    """The per-pair cache of GCN-Jaccard gives jaccard_similarity on every call: new pairs, repeated pairs, both
    directions, after its size limit empties it, and for a new feature matrix (an N x N table for small graphs,
    sorted pair ids above ``dense_nodes``)."""
    from robustbench_geo.models.gnn_defenses import PairSimilarities, jaccard_similarity

    g = torch.Generator().manual_seed(0)
    n = 40
    sims = PairSimilarities(max_pairs=150, dense_nodes=dense_nodes, chunk=7)
    x = (torch.rand(n, 12, generator=g) < 0.3).float()
    for step in range(8):
        if step == 5:
            x = torch.rand(n, 12, generator=g)  # a new (weighted) feature matrix
        ei = torch.randint(n, (2, 60), generator=g)
        ei = torch.cat([ei, ei.flip(0)], 1)
        torch.testing.assert_close(sims(x, ei), jaccard_similarity(x, ei), rtol=0, atol=0, equal_nan=True, msg=str(step))


@pytest.mark.parametrize("dense_nodes", [4096, 0], ids=["table", "sorted-ids"])
def test_gnnguard_cached_input_cosine_equals_edge_cosine_bit_for_bit(dense_nodes):
    """GNNGuard keeps the input features' cosine per node pair: on every call (new pairs, repeated pairs, both
    directions, a new feature matrix) it is edge_cosine's value exactly, so the sparse forward is unchanged; a
    graph with many edges reads the N x N matrix, equal up to rounding."""
    from robustbench_geo.models.gnn_defenses import PairSimilarities
    from robustbench_geo.models.gnn_robust import GNNGuard
    from robustbench_geo.models.gnn_robust.gnnguard import DENSE_EDGES_RATIO, edge_cosine

    g = torch.Generator().manual_seed(0)
    n = 400
    assert 160 * DENSE_EDGES_RATIO < n * n  # the per-pair path below
    model = GNNGuard(30, 3)
    model._pair_cos = PairSimilarities(similarity=model._pair_cos.similarity, prepare=model._pair_cos.prepare,
                                       dense_nodes=dense_nodes, chunk=11)
    x = torch.rand(n, 30, generator=g) * (torch.rand(n, 30, generator=g) < 0.3)
    x[3] = 0  # a featureless node: cosine 0
    for step in range(6):
        if step == 4:
            x = torch.rand(n, 30, generator=g)
        ei = torch.randint(n, (2, 80), generator=g)
        ei = torch.cat([ei, ei.flip(0)], 1)
        assert torch.equal(model._input_edge_cosine(x, ei), edge_cosine(x, ei)), step
    copy = __import__("copy").deepcopy(model)  # the altered surrogate: a fresh cache with the same formula
    assert torch.equal(copy._input_edge_cosine(x, ei), edge_cosine(x, ei))
    many = torch.randint(n, (2, n * n // DENSE_EDGES_RATIO), generator=g)  # the N x N matrix
    torch.testing.assert_close(model._input_edge_cosine(x, many), edge_cosine(x, many), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("div_limit", [1e-8, 0.01])
def test_gnnguard_dense_forward_equals_the_importance_matrices_with_gradients(div_limit):
    """The dense forward never builds the (N, N) importance matrices; values and gradients in the adjacency equal
    the direct formula (alpha_l from dense_edge_importance, layer memory, D^-1/2 W D^-1/2) on a relaxed graph."""
    from robustbench_geo.models.gnn_robust import GNNGuard

    g = torch.Generator().manual_seed(0)
    n = 30
    torch.manual_seed(0)
    model = GNNGuard(12, 4, div_limit=div_limit).double().eval()
    x = torch.rand(n, 12, generator=g, dtype=torch.float64) * (torch.rand(n, 12, generator=g) < 0.4)
    x[2] = 0
    a = (torch.rand(n, n, generator=g) < 0.15).double().triu(1)
    s = torch.rand(n, n, generator=g, dtype=torch.float64).triu(1) * 0.3
    adj = a + (1 - 2 * a) * s
    adj = (adj + adj.T).requires_grad_(True)

    def direct(adj):
        beta = model.pre_beta.sigmoid()
        h, mem = x, None
        for k, lin in enumerate((model.lin1, model.lin2)):
            alpha = dense_edge_importance(h, adj, None, model.div_limit)
            mem = alpha if mem is None else beta * mem + (1 - beta) * alpha
            deg = mem.sum(1).clamp_min(1e-5).rsqrt()
            h = deg[:, None] * (mem @ (deg[:, None] * (h @ lin.weight.T))) + lin.bias
            if k == 0:
                h = torch.relu(h)
        return h

    probe = torch.randn(n, 4, generator=g, dtype=torch.float64)
    out, expected = model.dense_forward(x, adj), direct(adj)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad((out * probe).sum(), adj)
    (grad_expected,) = torch.autograd.grad((expected * probe).sum(), adj)
    torch.testing.assert_close(grad, grad_expected, rtol=1e-10, atol=1e-12)


def test_grand_dense_route_for_many_weighted_edges_equals_message_passing(monkeypatch):
    """On a graph with many edges (PR-BCD's block) GRAND propagates on the dense adjacency; values and edge-weight
    gradients equal message passing's and the sparse product's (duplicates and negative weights included)."""
    from robustbench_geo.models.gnn_robust import GRAND, grand

    g = torch.Generator().manual_seed(0)
    n = 25
    torch.manual_seed(0)
    model = GRAND(10, 3, order=4).double().eval()
    x = torch.rand(n, 10, generator=g, dtype=torch.float64)
    ei = torch.randint(n, (2, 120), generator=g)
    ei = ei[:, ei[0] != ei[1]]
    ei = torch.cat([ei, ei.flip(0), ei[:, :5]], 1)  # both directions, five duplicated edges
    w0 = torch.rand(ei.shape[1], generator=g, dtype=torch.float64)
    w0[:3] = -0.2
    probe = torch.randn(n, 3, generator=g, dtype=torch.float64)
    results = []
    for ratio in (0, 10 ** 6):  # message passing, dense
        monkeypatch.setattr(grand, "DENSE_EDGES_RATIO", ratio)
        w = w0.clone().requires_grad_(True)
        out = model(x, ei, w)
        results.append((out, *torch.autograd.grad((out * probe).sum(), w)))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-10, atol=1e-12)
    for ratio in (0, 10 ** 6):  # without gradient: the sparse product, or dense; the same values
        monkeypatch.setattr(grand, "DENSE_EDGES_RATIO", ratio)
        with torch.no_grad():
            torch.testing.assert_close(model(x, ei, w0), results[0][0], rtol=1e-10, atol=1e-12)


def test_sparse_aware_product_equals_the_dense_one_with_gradients():
    """adj @ h through the non-zeros of a mostly-zero dense adjacency: the values and both gradients of the dense
    product (adj's for every pair, zeros included); above SPARSE_SHARE non-zeros it is the dense product itself."""
    from robustbench_geo.models.gnn_robust.common import SPARSE_SHARE, sparse_adjacency, sparse_aware_mm

    g = torch.Generator().manual_seed(0)
    n = 40
    adj = torch.rand(n, n, generator=g, dtype=torch.float64) * (torch.rand(n, n, generator=g) < 0.05)
    adj[3, 7] = -0.5  # not symmetric, a negative entry
    h = torch.randn(n, 5, generator=g, dtype=torch.float64)
    sparse = sparse_adjacency(adj)
    assert sparse is not None and int(torch.bincount(sparse.rows, minlength=n).sum()) == int((adj != 0).sum())
    a1, h1 = adj.clone().requires_grad_(True), h.clone().requires_grad_(True)
    a2, h2 = adj.clone().requires_grad_(True), h.clone().requires_grad_(True)
    probe = torch.randn(n, 5, generator=g, dtype=torch.float64)
    out1, out2 = sparse_aware_mm(a1, h1, sparse), a2 @ h2
    torch.testing.assert_close(out1, out2)
    grads1 = torch.autograd.grad((out1 * probe).sum(), (a1, h1))
    grads2 = torch.autograd.grad((out2 * probe).sum(), (a2, h2))
    for g1, g2 in zip(grads1, grads2):
        torch.testing.assert_close(g1, g2)
    assert torch.autograd.gradcheck(lambda a, b: sparse_aware_mm(a, b, sparse_adjacency(a.detach())),
                                    (adj.clone().requires_grad_(True), h.clone().requires_grad_(True)))
    dense = torch.rand(n, n, generator=g) * (torch.rand(n, n, generator=g) < 2 * SPARSE_SHARE)
    assert sparse_adjacency(dense) is None


@pytest.mark.parametrize("name", ["gnnguard", "grand"])
def test_dense_forward_through_the_non_zeros_equals_the_dense_products(name, monkeypatch):
    """GNNGuard's and GRAND's dense forward on a mostly-zero relaxed graph take the CSR products; values and
    gradients in the adjacency equal the all-dense computation."""
    from robustbench_geo.models.gnn_robust import GNNGuard, GRAND, common

    g = torch.Generator().manual_seed(1)
    n, feats, classes = 300, 20, 4
    torch.manual_seed(0)
    model = {"gnnguard": GNNGuard, "grand": GRAND}[name](feats, classes).double().eval()
    _, a = _random_binary_graph(n, 0.02, 5)
    a = a.double()
    s = torch.rand(n, n, generator=g, dtype=torch.float64) * (torch.rand(n, n, generator=g) < 0.01)
    s = (s + s.T).clamp(max=1).fill_diagonal_(0)
    p = a + (1 - 2 * a) * s
    assert common.sparse_adjacency(p) is not None
    x = torch.rand(n, feats, generator=g, dtype=torch.float64) * (torch.rand(n, feats, generator=g) < 0.3)
    probe = torch.randn(n, classes, generator=g, dtype=torch.float64)
    results = []
    for share in (common.SPARSE_SHARE, -1.0):  # through the non-zeros, all dense
        monkeypatch.setattr(common, "SPARSE_SHARE", share)
        adj = p.clone().requires_grad_(True)
        out = model.dense_forward(x, adj)
        results.append((out, *torch.autograd.grad((out * probe).sum(), adj)))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-9, atol=1e-10)


def test_soft_median_cost_surrogate_is_the_mean_over_the_ppr_diffusion():
    """benchmarks/soft_median_cost.py's surrogate converges to ``alpha (I - (1 - alpha) A_hat)^-1 H`` (weighted graph)
    and shares the model's weights, so its transfer numbers are about the aggregation, not other weights."""
    import sys
    from pathlib import Path

    from robustbench_geo.models.gnn import dense_gcn_norm

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from soft_median_cost import MeanPPRSurrogate

    ei, adj = _random_binary_graph(30, 0.2, seed=7)
    g = torch.Generator().manual_seed(8)
    w = torch.rand(ei.shape[1], generator=g, dtype=torch.float64)
    w = (w + torch.sparse_coo_tensor(ei, w, (30, 30)).to_dense().T[ei[0], ei[1]]) / 2  # symmetric weights
    model, _ = build_model("soft_median_gdc", sbm_graph(seed=3))
    sur = MeanPPRSurrogate(model.double(), iters=300)
    h = torch.randn(30, 5, generator=g, dtype=torch.float64)
    weighted = torch.sparse_coo_tensor(ei, w, (30, 30)).to_dense()
    exact = 0.15 * torch.linalg.solve(torch.eye(30, dtype=torch.float64) - 0.85 * dense_gcn_norm(weighted), h)
    assert torch.allclose(sur.propagate(h, ei, w), exact, atol=1e-10)
    assert not torch.allclose(MeanPPRSurrogate(model, iters=2).propagate(h, ei, w), exact, atol=1e-3)
    assert sur.model is model
