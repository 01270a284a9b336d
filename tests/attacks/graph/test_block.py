"""Gradient attacks on a user's own PyG model: the block relaxation never runs the forward on ~N^2 edges."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustbench_geo.attacks import create_attack
from robustbench_geo.attacks.graph.adaptive import build_surrogate
from robustbench_geo.attacks.graph.auto import AutoAttack
from robustbench_geo.attacks.graph.base import edge_budget, upper_pairs
from robustbench_geo.attacks.graph.block import BlockRelaxation, EdgeWeightIgnored, random_pairs
from robustbench_geo.attacks.graph.dense import get_loss
from robustbench_geo.attacks.graph.relax import DenseRelaxation
from robustbench_geo.training import TrainConfig, train_graph_model
from tests.attacks.graph.conftest import sbm_graph, train_small
from tests.attacks.graph.test_invariants import reference_check


# ---------------------------------------------------------------- user models, as PyG's examples write them


class UserGCN(torch.nn.Module):
    """PyG's PR-BCD example GCN: ``gcn_norm`` once per forward, then ``GCNConv(normalize=False)`` layers."""

    def __init__(self, in_channels, out_channels, hidden=16):
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.conv1 = GCNConv(in_channels, hidden, normalize=False)
        self.conv2 = GCNConv(hidden, out_channels, normalize=False)

    def forward(self, x, edge_index, edge_weight=None):
        from torch_geometric.nn.conv.gcn_conv import gcn_norm

        edge_index, edge_weight = gcn_norm(edge_index, edge_weight, num_nodes=x.size(0), add_self_loops=True)
        h = F.dropout(self.conv1(x, edge_index, edge_weight).relu(), training=self.training)
        return self.conv2(h, edge_index, edge_weight)


class UserSAGE(torch.nn.Module):
    """GraphSAGE ignores edge weights (``SAGEConv`` takes none): the attacks get no gradient, but must still run."""

    def __init__(self, in_channels, out_channels, hidden=16):
        super().__init__()
        from torch_geometric.nn import SAGEConv

        self.conv1 = SAGEConv(in_channels, hidden)
        self.conv2 = SAGEConv(hidden, out_channels)

    def forward(self, x, edge_index, edge_weight=None):
        x = F.relu(self.conv1(x, edge_index))
        x = F.dropout(x, p=0.5, training=self.training)
        return self.conv2(x, edge_index)


def _weighted_gat_conv():
    """``GATConv`` whose attention logits get ``log2(w)`` added (PyG's documented weighted-GAT fallback for PR-BCD):
    weight 1 keeps GAT, weight -> 0 removes the edge."""
    from torch_geometric.nn import GATConv
    from torch_geometric.utils import softmax

    class WeightedGATConv(GATConv):
        def edge_update(self, alpha_j, alpha_i, edge_attr, index, ptr, size_i):
            logits = F.leaky_relu(alpha_j if alpha_i is None else alpha_i + alpha_j, self.negative_slope)
            if edge_attr is not None:
                logits = logits + torch.log2(edge_attr).unsqueeze(-1)
            return F.dropout(softmax(logits, index, ptr, size_i), p=self.dropout, training=self.training)

    return WeightedGATConv


class UserGAT(torch.nn.Module):
    def __init__(self, in_channels, out_channels, hidden=8, heads=4):
        super().__init__()
        conv = _weighted_gat_conv()
        self.conv1 = conv(in_channels, hidden, heads=heads, fill_value=1.0)
        self.conv2 = conv(hidden * heads, out_channels, fill_value=1.0)

    def forward(self, x, edge_index, edge_weight=None):
        x = F.elu(self.conv1(x, edge_index, edge_weight))
        x = F.dropout(x, p=0.5, training=self.training)
        return self.conv2(x, edge_index, edge_weight)


USER_MODELS = {"GCNConv": UserGCN, "SAGEConv": UserSAGE, "GATConv": UserGAT}


class EdgeCounter(torch.nn.Module):
    """The model, refusing any forward on more than ``limit`` directed edges; remembers the largest one it ran."""

    def __init__(self, model, limit: int):
        super().__init__()
        self.inner, self.limit, self.most = model, limit, 0

    def forward(self, x, edge_index, edge_weight=None):
        self.most = max(self.most, edge_index.shape[1])
        assert edge_index.shape[1] <= self.limit, f"forward on {edge_index.shape[1]} edges (limit {self.limit})"
        return self.inner(x, edge_index, edge_weight)


def train_user(cls, graph, seed=0, epochs=100):
    torch.manual_seed(seed)
    model = cls(graph.num_features, graph.num_classes)
    train_graph_model(model, graph, TrainConfig(epochs=epochs, lr=0.01, weight_decay=5e-4, seed=seed, patience=epochs),
                      progress=False)
    return model.eval()


@pytest.fixture(scope="module")
def graph():
    return sbm_graph(n=150, classes=3, p_in=0.08, p_out=0.01, seed=1)


@pytest.fixture(scope="module")
def user_models(graph):
    return {name: train_user(cls, graph) for name, cls in USER_MODELS.items()}


BLOCK = 800
ATTACKS = [("pgd", {"steps": 6, "samples": 3, "refine_steps": 4, "block_size": BLOCK}),
           ("prbcd", {"block_size": BLOCK, "epochs": 6, "epochs_resampling": 4}),
           ("grbcd", {"block_size": BLOCK, "epochs": 4}),
           ("auto", {"steps": 4, "refine_steps": 3, "block_size": BLOCK, "stop_accuracy": "never"})]


@pytest.mark.parametrize("attack,params", ATTACKS, ids=[a for a, _ in ATTACKS])
@pytest.mark.parametrize("name", list(USER_MODELS))
def test_user_models_never_run_on_all_pairs(name, attack, params, graph, user_models):
    """The forward sees at most the clean edges, the budget and the block (both directions), never ~N^2 edges."""
    n, e = graph.num_nodes, graph.num_edges
    budget = edge_budget(graph, 0.05)
    model = EdgeCounter(user_models[name], limit=n * n // 4)
    run = create_attack(attack, model, budget_edge_fraction=0.05, **params)
    if name == "SAGEConv" and attack != "auto":  # no gradient through the weights: one clear error, not a blind attack
        with pytest.raises(EdgeWeightIgnored, match="does not depend on edge_weight.*dice, random_edges"):
            run(graph, seed=0)
        return
    res = run(graph, seed=0)
    reference_check(graph, res, budget)
    assert 2 * e <= model.most <= 2 * (e + budget + BLOCK) < n * n // 4
    if name == "SAGEConv":  # auto records every member as skipped and returns the clean graph
        assert res.flips == 0 and all("edge_weight" in r["skipped"] for r in res.work["members"])


def test_auto_on_a_user_model_runs_the_sparse_members(graph, user_models):
    model = user_models["GCNConv"]
    assert AutoAttack.members(model) == ["pgd/prob_margin", "pgd/tanh_margin", "prbcd"]
    res = AutoAttack(model, steps=4, refine_steps=2, block_size=BLOCK, stop_accuracy="never")(graph, seed=0)
    ran = [r["member"] for r in res.work["members"] if "accuracy" in r]
    assert ran == ["pgd/prob_margin", "pgd/tanh_margin", "prbcd", "pgd/init=best"]
    with pytest.raises(ValueError, match="block_size: expected a positive count"):
        AutoAttack(model, block_size=0)


def test_mask_needs_a_dense_model(graph, user_models):
    with pytest.raises(ValueError, match="expected a model with dense_forward"):
        create_attack("pgd", user_models["GCNConv"], mask="eigenspace", mask_rank=4)(graph)


# ---------------------------------------------------------------- the block gradient against the dense path


@pytest.mark.parametrize("at", ["clean", "relaxed"])
def test_block_gradient_equals_the_dense_gradient_on_its_pairs(at):
    """With a dense model, the gain the block relaxation computes for each of its pairs (forward on weighted
    edges) equals the gain the dense relaxation computes for that pair (dense_forward on the N x N adjacency)."""
    graph = sbm_graph(n=50, seed=3)
    model, _ = train_small("gcn", graph, epochs=30)
    model.eval()
    n, nodes = graph.num_nodes, graph.idx_test
    labels, loss = graph.y[nodes], get_loss("prob_margin")
    block = BlockRelaxation(model, graph.x, graph.edge_index, nodes, labels, 5, 300, 0, seed=0)
    block.start(None, at == "relaxed", torch.Generator().manual_seed(1))
    dense = DenseRelaxation(build_surrogate(model, graph.x, graph.dense_adjacency()), graph.x, nodes, labels, 5)
    dense.start(None, False, torch.Generator())
    i, j = block.ids // n, block.ids % n
    dense.s[i, j] = dense.s[j, i] = block.s
    got = block._gradient(block.ids, block.s, block.is_clean, loss)
    want = dense._gradient(dense.s, loss)[i, j]
    assert block.ids.numel() > graph.num_edges and torch.isin(upper_pairs(graph.edge_index)[0] * n
                                                              + upper_pairs(graph.edge_index)[1], block.ids).all()
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-3), (got - want).abs().max()


def test_random_pairs_are_distinct_upper_pairs_outside_the_excluded():
    g = torch.Generator().manual_seed(0)
    n = 30
    exclude = torch.tensor([0 * n + 1, 2 * n + 5, 7 * n + 29])
    ids = random_pairs(n, 2000, g, exclude)
    assert torch.equal(ids, torch.unique(ids))
    assert ((ids // n) < (ids % n)).all() and not torch.isin(ids, exclude).any()
    assert ids.numel() > 0.9 * (n * (n - 1) // 2 - 3)  # 2000 draws reach nearly all 432 free pairs


def test_block_resampling_keeps_the_clean_edges_and_the_mass(graph, user_models):
    """Resampling drops the insertions without mass only, and the block stays at its size."""
    model = user_models["GCNConv"]
    nodes = graph.idx_test
    relax = BlockRelaxation(model, graph.x, graph.edge_index, nodes, graph.y[nodes], 10, 500, 3, seed=0)
    relax.start(None, False, torch.Generator())
    for t in range(3):
        before_ids, before_s = relax.ids.clone(), relax.s.clone()
        relax.step(get_loss("prob_margin"), 5.0, t)
        assert int((~relax.is_clean).sum()) == 500 and int(relax.is_clean.sum()) == graph.num_edges
        assert float(relax.s.sum()) <= 10 + 1e-4
    kept = relax.ids[relax.s > 0]
    assert torch.isin(kept, torch.cat([before_ids, relax.ids])).all() and kept.numel() > 0
    assert before_s.numel() == relax.s.numel()


@pytest.mark.parametrize("attack,param,valid", [("prbcd", "labels", "predicted, true"),
                                                ("prbcd", "select", "accuracy, loss"), ("grbcd", "labels", "predicted, true")])
def test_rbcd_names_are_checked(attack, param, valid, user_models):
    with pytest.raises(KeyError, match=f"Valid {param}.*{valid}"):
        create_attack(attack, user_models["GCNConv"], **{param: "nope"})
