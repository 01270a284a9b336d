"""The dense forward passes that gradient attacks differentiate compute the models' own functions."""

from __future__ import annotations

import pytest
import torch

from robustbench_geo.attacks.graph.dense import dense_logits
from robustbench_geo.models import build_model
from robustbench_geo.models.gnn_defenses import dense_jaccard_similarity, jaccard_similarity
from tests.attacks.graph.conftest import sbm_graph


@pytest.mark.parametrize("name,kw", [("gcn", {}), ("sgc", {}), ("gcn_svd", {"rank": 8}), ("gcn_jaccard", {"threshold": 0.1})])
def test_dense_forward_is_the_model_and_its_gradient(name, kw):
    graph = sbm_graph(seed=3)
    torch.manual_seed(0)
    model, _ = build_model(name, graph, **kw)
    model.eval()
    assert hasattr(model, "dense_forward")
    ei = graph.edge_index
    w = torch.rand(ei.shape[1], dtype=torch.float64).float()
    w = (w + w[torch.argsort(ei[1] * graph.num_nodes + ei[0])]) / 2  # symmetric weights (edge_index is sorted)
    w.requires_grad_(True)
    sparse = model(graph.x, ei, w)
    adj = torch.zeros(graph.num_nodes, graph.num_nodes).index_put((ei[0], ei[1]), w.detach()).requires_grad_(True)
    dense = dense_logits(model, graph.x, adj)
    assert torch.allclose(dense, sparse, atol=1e-5), (dense - sparse).abs().max()
    probe = torch.randn_like(dense)
    (g_sparse,) = torch.autograd.grad((sparse * probe).sum(), w)
    (g_dense,) = torch.autograd.grad((dense * probe).sum(), adj)
    # attacks flip undirected pairs: compare the gradient of each pair, both directions summed
    rev = torch.argsort(ei[1] * graph.num_nodes + ei[0])  # position of (j, i) for edge (i, j)
    pair_dense = (g_dense + g_dense.T)[ei[0], ei[1]]
    assert torch.allclose(pair_dense, g_sparse + g_sparse[rev], atol=1e-5), (pair_dense - g_sparse - g_sparse[rev]).abs().max()


@pytest.mark.parametrize("name", ["gcn", "gcn_jaccard"])
def test_gcn_csr_path_is_the_message_passing(name):
    """A graph repeated with weights that need no gradient goes through the cached CSR A_hat; values and
    gradients (parameters and features) equal the message passing's, with self-loops, duplicate edges and
    zero weights present."""
    graph = sbm_graph(seed=5)
    torch.manual_seed(0)
    model, _ = build_model(name, graph)
    model.eval()
    n = graph.num_nodes
    ei = torch.cat([graph.edge_index, torch.tensor([[0, 1, 2], [0, 1, 5]]), graph.edge_index[:, :4]], 1)
    w = torch.rand(ei.shape[1])
    w[::7] = 0.0
    for weight in (None, w):
        x1, x2 = graph.x.clone().requires_grad_(True), graph.x.clone().requires_grad_(True)
        model(graph.x, ei, weight)  # first sight: message passing; the second call builds A_hat
        csr = model(x1, ei, weight)
        assert model._adj._entry[2]._csr is not None
        passing = model(x2, ei, (torch.ones(ei.shape[1]) if weight is None else weight.clone()).requires_grad_(True))
        assert torch.allclose(csr, passing, atol=1e-5), (csr - passing).abs().max()
        probe = torch.randn(n, csr.shape[1])
        g_csr = torch.autograd.grad((csr * probe).sum(), [x1, *model.parameters()])
        g_mp = torch.autograd.grad((passing * probe).sum(), [x2, *model.parameters()])
        for a, b in zip(g_csr, g_mp):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (a - b).abs().max()
    # a different graph of the same shape is not served the cached matrix
    other = ei.clone()
    other[1, :10] = (other[1, :10] + 1) % n
    model(graph.x, ei)
    model(graph.x, other)
    again = model(graph.x, other)
    fresh = model(graph.x, other, torch.ones(other.shape[1]).requires_grad_(True))  # message passing
    assert torch.allclose(again, fresh, atol=1e-5), (again - fresh).abs().max()


def test_dense_jaccard_matches_the_per_edge_one():
    g = torch.Generator().manual_seed(0)
    for x in ((torch.rand(30, 12, generator=g) < 0.3).float(), torch.rand(30, 12, generator=g) * (torch.rand(30, 12, generator=g) < 0.5)):
        ii, jj = torch.meshgrid(torch.arange(30), torch.arange(30), indexing="ij")
        ei = torch.stack([ii.reshape(-1), jj.reshape(-1)])
        x[3] = 0  # a featureless node: NaN against itself, 0 against the others
        dense, per_edge = dense_jaccard_similarity(x).reshape(-1), jaccard_similarity(x, ei)
        assert torch.allclose(dense, per_edge, atol=1e-6, equal_nan=True)
        assert int(per_edge.isnan().sum()) == 1


def test_gcn_svd_low_rank_is_the_truncated_svd_for_symmetric_and_general_matrices():
    model, _ = build_model("gcn_svd", sbm_graph(seed=0), rank=5)
    g = torch.Generator().manual_seed(0)
    m = torch.randn(30, 30, generator=g, dtype=torch.float64)
    for a in (m + m.T, m):
        u, sv, vh = torch.linalg.svd(a)
        expected = u[:, :5] @ torch.diag(sv[:5]) @ vh[:5]
        assert torch.allclose(model._low_rank(a), expected, atol=1e-10)


def test_gcn_svd_sparse_lanczos_path_is_the_dense_eigendecomposition():
    """The sparse solver (used from ``dense_below`` nodes on) computes the same subspace and logits as LAPACK."""
    from robustbench_geo.models.gnn_defenses import top_eigenvectors

    graph = sbm_graph(n=90, seed=1)
    ei, n = graph.edge_index, graph.num_nodes
    w = torch.ones(ei.shape[1], dtype=torch.float64)
    lam = torch.linalg.eigvalsh(graph.dense_adjacency().double()).abs().sort(descending=True).values
    k = next(k for k in range(8, 20) if lam[k - 1] - lam[k] > 1e-3)  # a rank with a spectral gap: a unique subspace
    sparse, dense = top_eigenvectors(ei[0], ei[1], w, n, k, dense_below=10), top_eigenvectors(ei[0], ei[1], w, n, k)
    assert torch.allclose(sparse @ sparse.T, dense @ dense.T, atol=1e-8)
    torch.manual_seed(0)
    model, _ = build_model("gcn_svd", graph, rank=k)
    model.eval()
    with torch.no_grad():
        reference = model(graph.x, ei)
        model._cache, model.dense_below = None, 10
        assert torch.allclose(model(graph.x, ei), reference, atol=1e-5)
        assert torch.allclose(model.dense_forward(graph.x, graph.dense_adjacency()), reference, atol=1e-5)
