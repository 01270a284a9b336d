"""Each GNN defense against a small transcription of its reference's formula (see each model's docstring).

The expected functions below are written out from the reference code's definitions (dense, loop-based
where that is clearer), not from this package's helpers. The graph reaches the edge cases: an isolated
node, two featureless nodes joined by an edge, non-binary features, and, through edge weights or a
hand-made pre-processed matrix, degrees of ``A + I`` that are exactly zero or negative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustbench_geo.models.gnn_defenses import GCNJaccard, GCNSVD
from robustbench_geo.models.gnn_robust import GNNGuard, GRAND, ProGNN, RGCN, SoftMedianGDC
from tests.attacks.graph.conftest import _one_thread  # noqa: F401  (one intra-op thread, autouse)

N, FEATS, CLASSES = 9, 6, 3
#: undirected edges; node 8 is isolated, nodes 6 and 7 have no features
EDGES = [(0, 1), (0, 2), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7), (1, 5), (7, 3), (0, 4)]


def _graph():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(N, FEATS, generator=g) < 0.5).double()
    x[0] = torch.tensor([2.0, 0.5, 0.0, 1.0, 0.0, 0.0], dtype=torch.float64)  # non-binary
    x[6] = x[7] = 0
    x[8, 0] = 1.0
    ei = torch.tensor(EDGES).T
    ei = torch.cat([ei, ei.flip(0)], 1)
    a = torch.zeros(N, N, dtype=torch.float64)
    a[ei[0], ei[1]] = 1
    return x, ei, a


def _dense(ei, w):
    a = torch.zeros(N, N, dtype=torch.float64)
    a[ei[0], ei[1]] = w
    return a


def _weights_with_a_zero_degree(ei):
    """Edge weights under which node 7's degree of ``A + I`` is exactly 0 (and node 3's is 1)."""
    w = torch.ones(ei.shape[1], dtype=torch.float64)
    w[((ei[0] == 7) & (ei[1] == 3)) | ((ei[0] == 3) & (ei[1] == 7))] = -2.0
    return w


def _clamped_norm(m, power=-0.5, floor=1e-5):
    """Mujkanovic et al.'s gcn_norm of an adjacency that already holds its self-loops: degrees clamped at 1e-5."""
    deg = m.sum(1).clamp_min(floor)
    s = deg.pow(power)
    return s[:, None] * m * s[None, :]


def _deeprobust_norm(m):
    """DeepRobust's normalize_adj_tensor (dense) of ``m + I``: d^-1/2, with inf (zero degree) set to 0."""
    m = m + torch.eye(m.shape[0], dtype=m.dtype)
    r = m.sum(1).pow(-0.5)
    r[torch.isinf(r)] = 0
    return torch.diag(r) @ m @ torch.diag(r)


def _gcn(model, a_hat, x):
    """Two GCN layers on a normalised dense matrix (eval mode: no dropout)."""
    h = F.relu(a_hat @ (x @ model.conv1.lin.weight.T) + model.conv1.bias)
    return a_hat @ (h @ model.conv2.lin.weight.T) + model.conv2.bias


def _first_layer_input(model, *args):
    """What the first linear layer of a GCN-based model receives in a training-mode forward."""
    seen = []
    handle = model.conv1.lin.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    try:
        model.train()
        torch.manual_seed(0)
        model(*args)
    finally:
        handle.remove()
        model.eval()
    return seen[0]


def _model(cls, *args, **kw):
    torch.manual_seed(1)
    return cls(FEATS, CLASSES, *args, **kw).double().eval()


# -- GCN-SVD: Mujkanovic et al.'s svd_gcn (low_rank, then add_loops + gcn_norm clamped at 1e-5) ------------------

def test_gcn_svd_is_the_gcn_on_the_whole_low_rank_matrix_plus_identity():
    x, ei, a = _graph()
    rank = 4
    u, s, vt = np.linalg.svd(a.numpy())
    assert s[rank - 1] - s[rank] > 1e-3  # a unique rank-4 subspace
    low = torch.from_numpy(u[:, :rank] @ np.diag(s[:rank]) @ vt[:rank])
    model = _model(GCNSVD, rank, 8)
    expected = _gcn(model, _clamped_norm(low + torch.eye(N, dtype=torch.float64)), x)
    with torch.no_grad():
        assert torch.allclose(model(x, ei), expected, atol=1e-10)
        assert torch.allclose(model.dense_forward(x, a), expected, atol=1e-10)
    # the deliberate deviation: the diagonal of the low-rank matrix dropped
    off = low - torch.diag(torch.diagonal(low))
    dropped = _model(GCNSVD, rank, 8, keep_diagonal=False)
    with torch.no_grad():
        assert torch.allclose(dropped(x, ei), _gcn(dropped, _clamped_norm(off + torch.eye(N, dtype=torch.float64)), x),
                              atol=1e-10)


def test_gcn_svd_clamps_zero_and_negative_degrees_at_1e_5():
    x, _, _ = _graph()
    m = torch.zeros(N, N, dtype=torch.float64)
    m[0, 1] = m[1, 0] = -1.0  # degrees of m + I: nodes 0 and 1 exactly 0
    m[2, 3] = m[3, 2] = -2.5  # nodes 2 and 3 negative
    m[4, 5] = m[5, 4] = 0.7
    model = _model(GCNSVD, 4, 8)
    expected = _gcn(model, _clamped_norm(m + torch.eye(N, dtype=torch.float64)), x)
    with torch.no_grad():
        got = model.dense_classifier(x, m)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-8)
    # another floor is an explicit option
    other = _model(GCNSVD, 4, 8, degree_floor=1e-12)
    with torch.no_grad():
        assert torch.allclose(other.dense_classifier(x, m),
                              _gcn(other, _clamped_norm(m + torch.eye(N, dtype=torch.float64), floor=1e-12), x), rtol=1e-10)


@pytest.mark.parametrize("cls, args", [(GCNSVD, (4, 8)), (GCNJaccard, (0.01, 8)), (ProGNN, (8,))])
def test_gcn_based_defenses_do_not_drop_input_features(cls, args):
    """DeepRobust's and Mujkanovic et al.'s GCN apply dropout to the hidden layer only."""
    x, ei, _ = _graph()
    model = _model(cls, *args)
    assert torch.equal(_first_layer_input(model, x, ei), x)


# -- GCN-Jaccard: DeepRobust's dropedge_jaccard, then DeepRobust's GCN ------------------------------------------

def _deeprobust_jaccard_keep(x, ei, threshold):
    keep = []
    for i, j in ei.T.tolist():
        a, b = x[i].numpy(), x[j].numpy()
        inter = np.count_nonzero(a * b)
        with np.errstate(invalid="ignore", divide="ignore"):
            jac = inter * 1.0 / (np.count_nonzero(a) + np.count_nonzero(b) - inter)
        keep.append(not jac < threshold)
    return torch.tensor(keep)


def test_gcn_jaccard_keeps_the_edges_of_deeprobust_dropedge_jaccard():
    x, ei, _ = _graph()
    model = _model(GCNJaccard, 0.01, 8)
    for threshold in (0.01, 0.3, 0.5):
        model.threshold = threshold
        model._dense_keep.clear()
        expected = _deeprobust_jaccard_keep(x, ei, threshold)
        assert torch.equal(model.keep_mask(x, ei), expected), threshold
        assert torch.equal(model.dense_keep_mask(x)[ei[0], ei[1]], expected), threshold
    pair = ((ei[0] == 6) & (ei[1] == 7)).nonzero().item()
    assert model.keep_mask(x, ei)[pair]  # two featureless nodes: J = 0/0, kept as in DeepRobust
    model.threshold = 0.3
    keep = _deeprobust_jaccard_keep(x, ei, 0.3)
    expected = _gcn(model, _deeprobust_norm(_dense(ei[:, keep], 1.0)), x)
    with torch.no_grad():
        assert torch.allclose(model(x, ei), expected, atol=1e-10)
        assert torch.allclose(model.dense_forward(x, _dense(ei, 1.0)), expected, atol=1e-10)


# -- RGCN: DeepRobust's RGCN / Mujkanovic et al.'s RGCN ---------------------------------------------------------

def _rgcn_reference(model, x, a, seed):
    m_loops = a + torch.eye(N, dtype=torch.float64)
    a_mean, a_var = _clamped_norm(m_loops, -0.5), _clamped_norm(m_loops, -1.0)
    mean, var = F.elu(x @ model.conv1.mean.weight.T), F.relu(x @ model.conv1.var.weight.T)
    att = torch.exp(-model.gamma * var)
    mean, var = a_mean @ (mean * att), a_var @ (var * att * att)
    mean, var = F.elu(mean @ model.conv2.mean.weight.T), F.relu(var @ model.conv2.var.weight.T)
    att = torch.exp(-model.gamma * var)
    mean, var = a_mean @ (mean * att), a_var @ (var * att * att)
    if seed is None:
        return mean
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return mean + eps * torch.sqrt(var + 1e-8)


def test_rgcn_evaluates_one_seeded_gaussian_sample_as_the_references_sample():
    x, ei, a = _graph()
    model = _model(RGCN, 8)
    w = _weights_with_a_zero_degree(ei)
    with torch.no_grad():
        for weights, adj in ((None, a), (w, _dense(ei, w))):
            expected = _rgcn_reference(model, x, adj, 0)
            assert torch.allclose(model(x, ei, weights), expected, rtol=1e-9, atol=1e-9)
            assert torch.allclose(model.dense_forward(x, adj), expected, rtol=1e-9, atol=1e-9)
        assert torch.equal(model(x, ei), model(x, ei))  # the same draw every call
        mean_only = _model(RGCN, 8, eval_noise_seed=None)
        assert torch.allclose(mean_only(x, ei), _rgcn_reference(mean_only, x, a, None), atol=1e-10)


# -- GNNGuard: Mujkanovic et al.'s GNNGuard (mimic_ref_impl=False) ----------------------------------------------

def _gnnguard_reference(model, x, a):
    beta = torch.sigmoid(model.pre_beta.detach())
    h, mem = x, None
    for k, lin in enumerate((model.lin1, model.lin2)):
        hd = h.detach()
        gram = hd @ hd.T
        norms = torch.diagonal(gram).sqrt()
        norms = torch.where(norms < 1e-8, torch.ones_like(norms), norms)
        s = a * (gram / norms[:, None] / norms[None, :])
        count = (s != 0).sum(1).to(s.dtype)
        sums = s.sum(1)
        sums = torch.where(sums.abs() < model.div_limit, torch.ones_like(sums), sums)
        alpha = s * (count / ((count + 1) * sums))[:, None] + torch.diag(1 / (count + 1))
        mem = alpha if mem is None else beta * mem + (1 - beta) * alpha
        h = _clamped_norm(mem) @ (h @ lin.weight.T) + lin.bias
        if k == 0:
            h = F.relu(h)
    return h


def test_gnnguard_matches_mujkanovic_edge_weights_and_layer_memory():
    x, ei, a = _graph()
    x = x.clone()
    x[5] = 1e-10 * x[1]  # a row norm below 1e-8: counted as 1 by the reference's cosine
    model = _model(GNNGuard, 8)
    expected = _gnnguard_reference(model, x, a)
    with torch.no_grad():
        assert torch.allclose(model(x, ei), expected, atol=1e-10)
        assert torch.allclose(model.dense_forward(x, a), expected, atol=1e-10)


# -- GNNGuard, formulation="authors": mims-harvard/GNNGuard defense/gcn.py (att_coef, forward), nn/conv/gcn_conv.py --

def _gnnguard_authors_reference(model, x, a):
    """The authors' forward with attention, written out with loops over a dict of weighted pairs."""
    n = x.shape[0]

    def cosine(f):  # sklearn's cosine_similarity: rows scaled to unit norm, a zero row stays zero
        norms = np.sqrt((f * f).sum(1))
        norms[norms == 0] = 1
        u = f / norms[:, None]
        return u @ u.T

    def att_coef(f, pairs):
        c = cosine(f)
        m = np.zeros((n, n))
        for i, j in pairs:
            m[i, j] = c[i, j] if c[i, j] >= 0.1 else 0.0
        np.fill_diagonal(m, 0.0)  # the self-loops the reference adds are taken out again before normalising
        for i in range(n):
            if np.abs(m[i]).sum() > 0:
                m[i] = m[i] / np.abs(m[i]).sum()  # sklearn's normalize(norm="l1"), rows
        count = (m != 0).sum(1)
        for i in range(n):
            m[i, i] = 1.0 / (count[i] + 1)
        return {(i, j): math.exp(m[i, j]) for i in range(n) for j in range(n) if m[i, j] != 0}

    def conv(h, weights, lin):  # no self-loops added; degree summed over the source; message source -> target
        z = h @ lin.weight.detach().numpy().T
        deg = np.zeros(n)
        for (i, _), v in weights.items():
            deg[i] += v
        out = np.zeros_like(z)
        for (i, j), v in weights.items():
            out[j] += v / math.sqrt(deg[i] * deg[j]) * z[i]
        return out + lin.bias.detach().numpy()

    xs = x.numpy()
    pairs = {(i, j) for i in range(n) for j in range(n) if a[i, j] != 0} | {(i, i) for i in range(n)}
    first = att_coef(xs, pairs)
    h = np.maximum(conv(xs, first, model.lin1), 0.0)
    second = att_coef(h, set(first))  # the second layer's edges: the pairs the first layer's weights kept
    return torch.from_numpy(conv(h, second, model.lin2))


def test_gnnguard_authors_formulation_matches_att_coef_and_the_authors_propagation():
    x, ei, a = _graph()
    x[4] = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.1, 3.0], dtype=torch.float64)
    cos = F.normalize(x, dim=1) @ F.normalize(x, dim=1).T
    assert ((a > 0) & (cos > 0) & (cos < 0.1)).any() and ((a > 0) & (cos >= 0.1)).any()  # edges under and over 0.1
    model = _model(GNNGuard, 8, formulation="authors")
    with torch.no_grad():  # non-zero biases: featureless nodes get alike hidden rows, so the second layer's
        model.lin1.bias.uniform_(0.1, 0.5)  # similarity of the edge 6-7 the first layer dropped is 1
        model.lin2.bias.uniform_(-0.5, 0.5)
    expected = _gnnguard_authors_reference(model, x, a)
    with torch.no_grad():
        assert torch.allclose(model(x, ei), expected, atol=1e-10)
        assert torch.allclose(model.dense_forward(x, a), expected, atol=1e-10)
        assert not torch.allclose(_model(GNNGuard, 8)(x, ei), expected, atol=1e-3)  # the default differs
    # the dense path is differentiable in the adjacency and agrees with weighted sparse edges
    w = torch.rand(ei.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 0.5 + 0.5
    adj = _dense(ei, w).requires_grad_()
    out = model.dense_forward(x, adj)
    assert torch.allclose(out, model(x, ei, w), atol=1e-10)
    out.sum().backward()
    assert adj.grad[a > 0].abs().sum() > 0


def test_gnnguard_unknown_formulation_lists_the_valid_ones():
    with pytest.raises(KeyError, match="unknown GNNGuard formulation 'author'.*authors, paper"):
        GNNGuard(FEATS, CLASSES, formulation="author")


# -- GRAND: THUDM/GRAND and Mujkanovic et al.'s GRAND (eval: DropNode's expectation) ------------------------------

def test_grand_eval_matches_the_reference_propagation_including_a_zero_degree():
    x, ei, a = _graph()
    model = _model(GRAND, 8, 3)
    w = _weights_with_a_zero_degree(ei)
    for weights, adj in ((None, a), (w, _dense(ei, w))):
        a_hat = _clamped_norm(adj + torch.eye(N, dtype=torch.float64))
        xn = x / x.abs().sum(1, keepdim=True).clamp_min(1e-12) * (1 - model.dropnode)
        out = xn
        for _ in range(model.order):
            out = xn + a_hat @ out
        expected = model.lin2(F.relu(model.lin1(out / (model.order + 1))))
        with torch.no_grad():
            assert torch.allclose(model(x, ei, weights), expected, rtol=1e-9, atol=1e-9)
            assert torch.allclose(model.dense_forward(x, adj), expected, rtol=1e-9, atol=1e-9)


# -- Soft-Median-GDC: Mujkanovic et al.'s personalized_page_rank + Geisler et al.'s soft_median -----------------

def _weighted_median_rows(w, h):
    """Per row ``i`` and dimension ``f``: the value of ``h[:, f]`` where the cumulative weight of row ``i``
    (nodes sorted by that value) first reaches half the row's total."""
    out = torch.empty(w.shape[0], h.shape[1], dtype=h.dtype)
    for i in range(w.shape[0]):
        for f in range(h.shape[1]):
            order = torch.argsort(h[:, f], stable=True)
            cum = torch.cumsum(w[i, order], 0)
            out[i, f] = h[order[int((cum < w[i].sum() / 2).sum())], f]
    return out


def _soft_median_reference(w, h, temperature):
    med = _weighted_median_rows(w, h)
    out = torch.zeros_like(h)
    for i in range(w.shape[0]):
        nb = w[i].nonzero().flatten()
        dist = (med[i] - h[nb]).norm(dim=1) / math.sqrt(h.shape[1])
        soft = torch.softmax(-dist / temperature, 0) * w[i, nb]
        out[i] = (soft / soft.sum() * w[i, nb].sum()) @ h[nb]
    return out


def test_soft_median_gdc_matches_the_reference_diffusion_and_aggregation():
    x, ei, a = _graph()
    model = _model(SoftMedianGDC, 4, 0.5, 0.15, 4, 0.5)
    a_hat = _clamped_norm(a + torch.eye(N, dtype=torch.float64))
    ppr = 0.15 * torch.linalg.inv(torch.eye(N, dtype=torch.float64) - 0.85 * a_hat)
    val, idx = ppr.topk(4, dim=1)
    w = torch.zeros_like(ppr).scatter(1, idx, val / val.sum(1, keepdim=True).clamp_min(1e-5))
    with torch.no_grad():
        h = F.relu(_soft_median_reference(w, x @ model.lin1.weight.T, 0.5) + model.lin1.bias)
        expected = _soft_median_reference(w, h @ model.lin2.weight.T, 0.5) + model.lin2.bias
        assert torch.allclose(model(x, ei), expected, atol=1e-9)
        assert torch.allclose(model.dense_forward(x, a), expected, atol=1e-9)


# -- Pro-GNN: DeepRobust's ProGNN (EstimateAdj.normalize + GCN) on the learned graph with the input's flips ---------

def test_prognn_runs_deeprobust_gcn_on_the_learned_graph_with_the_flips():
    x, ei, a = _graph()
    model = _model(ProGNN, 8)
    g = torch.Generator().manual_seed(2)
    s = torch.rand(N, N, generator=g, dtype=torch.float64).triu(1)
    s = s + s.T
    model.train_adj, model.learned_adj = a.clone(), s
    flipped = a.clone()
    flipped[0, 5] = flipped[5, 0] = 1.0  # an insertion
    flipped[6, 7] = flipped[7, 6] = 0.0  # a deletion
    s_flip = s.clone()
    s_flip[0, 5] = s_flip[5, 0] = 1 - s[0, 5]
    s_flip[6, 7] = s_flip[7, 6] = 1 - s[6, 7]
    expected = _gcn(model, _deeprobust_norm(s_flip), x)
    with torch.no_grad():
        assert torch.allclose(model(x, flipped.nonzero().T), expected, atol=1e-10)
        assert torch.allclose(model.dense_forward(x, flipped), expected, atol=1e-10)
