"""Budget and validity invariants of every structure attack, checked against a loop-based reference."""

from __future__ import annotations

import pytest
import torch

from robustbench_geo.attacks import create_attack, get_attack, list_attacks
from robustbench_geo.attacks.graph.base import (
    GraphPerturbation, InvalidPerturbationError, check_perturbation, edge_budget, finalize, target_budget,
)
from robustbench_geo.attacks.graph.relax import Flips
from robustbench_geo.models.predict import graph_logits
from tests.attacks.graph.conftest import pendant_graph, sbm_graph, train_small


def reference_check(graph, res: GraphPerturbation, budget: int) -> None:
    """Slow, obviously correct re-check of a perturbation with Python sets."""
    n = graph.num_nodes
    clean = {(i, j) for i, j in graph.edge_index.T.tolist() if i < j}
    directed = [tuple(e) for e in res.edge_index.T.tolist()]
    assert len(directed) == len(set(directed)), "duplicate edges"
    assert all(i != j for i, j in directed), "self-loop"
    assert set(directed) == {(j, i) for i, j in directed}, "not symmetric"
    new = {(i, j) for i, j in directed if i < j}
    ins = {tuple(p) for p in res.insertions.T.tolist()}
    dels = {tuple(p) for p in res.deletions.T.tolist()}
    assert ins == new - clean and dels == clean - new
    assert len(ins) + len(dels) + res.feature_flips.shape[1] <= budget == res.budget
    deg = [0] * n
    for i, j in new:
        deg[i] += 1
        deg[j] += 1
    assert all(d > 0 for d in deg), "a node was left without edges"


GLOBAL = [("random_edges", {"kind": "flip"}), ("random_edges", {"kind": "add"}), ("random_edges", {"kind": "remove"}), ("dice", {}),
          ("pgd", {"steps": 5, "samples": 3, "refine_steps": 0}), ("pgd", {"steps": 5, "samples": 3, "loss": "cw", "refine_steps": 0}),
          ("pgd", {"steps": 5, "samples": 3, "refine_steps": 8}),
          ("pgd", {"steps": 5, "samples": 3, "refine_steps": 8, "select": "changed", "refine_loss": "mce"}),
          ("prbcd", {"block_size": 500, "epochs": 8, "epochs_resampling": 4}), ("grbcd", {"block_size": 500, "epochs": 8})]


@pytest.mark.parametrize("name,params", GLOBAL, ids=[f"{n}-{'-'.join(map(str, p.values()))}" for n, p in GLOBAL])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5])
def test_global_attacks_respect_budget_and_validity(name, params, fraction, small_gcn):
    model, _ = small_gcn
    for seed in range(4):
        graph = sbm_graph(seed=seed)
        res = create_attack(name, model, budget_edge_fraction=fraction, **params)(graph, seed=seed)
        budget = edge_budget(graph, fraction)
        reference_check(graph, res, budget)
        if name == "random_edges" and params["kind"] == "add":
            assert res.deletions.shape[1] == 0 and res.insertions.shape[1] == budget
        if name == "random_edges" and params["kind"] == "remove":
            assert res.insertions.shape[1] == 0
        if name == "dice":
            y = graph.y
            assert (y[res.insertions[0]] != y[res.insertions[1]]).all()
            assert (y[res.deletions[0]] == y[res.deletions[1]]).all()


@pytest.mark.parametrize("name,params", GLOBAL[:4] + GLOBAL[4:5] + GLOBAL[6:7])
def test_attacks_are_deterministic_by_seed(name, params, small_graph, small_gcn):
    model, _ = small_gcn
    a = create_attack(name, model, budget_edge_fraction=0.2, **params)
    r1, r2 = a(small_graph, seed=3), a(small_graph, seed=3)
    assert torch.equal(r1.edge_index, r2.edge_index)
    if name in ("random_edges", "dice"):
        assert not torch.equal(r1.edge_index, a(small_graph, seed=4).edge_index)


def test_check_perturbation_catches_invalid_results(small_graph):
    g = small_graph
    ok = finalize(g, torch.zeros(2, 0, dtype=torch.long), 0)
    bad_sym = GraphPerturbation(g.edge_index[:, 1:], torch.zeros(2, 0, dtype=torch.long),
                                torch.zeros(2, 0, dtype=torch.long), 5)
    with pytest.raises(InvalidPerturbationError, match="symmetric|differs"):
        check_perturbation(g, bad_sym)
    loop = torch.cat([g.edge_index, torch.tensor([[0], [0]])], 1)
    with pytest.raises(InvalidPerturbationError, match="self-loops"):
        check_perturbation(g, GraphPerturbation(loop, ok.insertions, ok.deletions, 5))
    pair = g.edge_index[:, :1].sort(0).values
    over = finalize(g, pair, 1)
    with pytest.raises(InvalidPerturbationError, match="exceed the budget"):
        check_perturbation(g, GraphPerturbation(over.edge_index, over.insertions, over.deletions, 0))
    with pytest.raises(InvalidPerturbationError, match="self-loop"):
        finalize(g, torch.tensor([[3], [3]]), 1)


def test_deleting_all_edges_of_a_node_is_skipped(small_graph):
    g = small_graph
    node = 0
    nbrs = g.edge_index[1, g.edge_index[0] == node]
    res = finalize(g, torch.stack([torch.full_like(nbrs, node), nbrs]), len(nbrs))
    assert res.deletions.shape[1] == len(nbrs) - 1 and res.work["singleton_deletions_skipped"] == 1


def test_finalize_counts_insertions_at_degree_one_nodes():
    g = pendant_graph()
    n = g.num_nodes
    p = n - 1  # a pendant node: its only edge is (anchor, p)
    anchor = int(g.edge_index[1, g.edge_index[0] == p])
    other = next(v for v in range(n) if v not in (p, anchor))
    delete, insert = [min(anchor, p), max(anchor, p)], [min(other, p), max(other, p)]
    for order in ([delete, insert], [insert, delete]):  # the insertion counts whatever its priority
        res = finalize(g, torch.tensor(order).T, 2)
        assert res.flips == 2 and "singleton_deletions_skipped" not in res.work
        reference_check(g, res, 2)
    alone = finalize(g, torch.tensor([delete]).T, 1)
    assert alone.flips == 0 and alone.work["singleton_deletions_skipped"] == 1


def test_pgd_and_finalize_apply_one_isolation_rule():
    """A flip set PGD calls valid (``Flips.isolated``) is returned whole by finalize; any other loses deletions."""
    g = pendant_graph()
    n, flips = g.num_nodes, Flips(g)
    clean = flips.clean
    gen = torch.Generator().manual_seed(0)
    seen = {True: 0, False: 0}
    for trial in range(200):
        pend = 40 + torch.randperm(n - 40, generator=gen)[:2]  # two pendant nodes lose their only edge ...
        anchors = torch.stack([g.edge_index[1, g.edge_index[0] == int(v)][0] for v in pend])
        dels = torch.cat([torch.minimum(pend, anchors) * n + torch.maximum(pend, anchors),
                          clean[torch.randperm(len(clean), generator=gen)[:2]]])
        gets = pend[torch.rand(2, generator=gen) < 0.7]  # ... and some of them gain a new one
        other = torch.randint(0, 40, gets.shape, generator=gen)
        ins = torch.minimum(gets, other) * n + torch.maximum(gets, other)
        ins = ins[~torch.isin(ins, clean)]
        ids = torch.unique(torch.cat([dels, ins]))
        res = finalize(g, torch.stack([ids // n, ids % n]), ids.numel())
        valid = not bool(flips.isolated(ids).any())
        seen[valid] += 1
        assert (res.flips == ids.numel()) == valid, trial
    assert min(seen.values()) > 20  # both kinds of flip sets were drawn


def test_pgd_returns_the_graph_it_judged_on_degree_one_nodes():
    g = pendant_graph(seed=1)
    model, _ = train_small("gcn", g, epochs=60)
    for seed in range(3):
        res = create_attack("pgd", model, budget_edge_fraction=0.2, steps=5, samples=3, refine_steps=8,
                            labels="true")(g, seed=seed)
        reference_check(g, res, edge_budget(g, 0.2))
        assert "singleton_deletions_skipped" not in res.work
        pred = graph_logits(model, g, res.edge_index).argmax(1)[g.idx_test]
        assert res.work["misclassified_true"] == int((pred != g.y[g.idx_test]).sum())


def test_bad_budgets_are_clear_errors(small_graph):
    for bad in (-0.1, 1.5, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="expected a fraction of edges in \\[0, 1\\]"):
            edge_budget(small_graph, bad)
    with pytest.raises(ValueError, match="counts per target are for targeted attacks"):
        edge_budget(small_graph, 5)
    for bad in (2.5, -1, "3"):
        with pytest.raises(ValueError, match="non-negative integer count of flips per target"):
            target_budget(small_graph, 0, bad)
    with pytest.raises(ValueError, match="at most N - 1"):
        target_budget(small_graph, 0, small_graph.num_nodes)
    assert target_budget(small_graph, 0, 3.0) == 3
    deg = int((small_graph.edge_index[0] == 0).sum())
    assert target_budget(small_graph, 0, None) == deg + 2


def test_unknown_names_list_valid_ones(small_gcn):
    with pytest.raises(KeyError, match="Valid attacks: .*dice.*pgd.*random_edges"):
        get_attack("pgdd")
    with pytest.raises(KeyError, match="Did you mean 'cw'"):
        create_attack("pgd", small_gcn[0], loss="cww")
    with pytest.raises(KeyError, match="Valid random attack kinds: add, flip, remove"):
        create_attack("random_edges", None, kind="swap")
    with pytest.raises(ValueError, match="unknown parameter\\(s\\) \\['budget'\\]"):
        create_attack("dice", None, budget=0.1)
    assert {"random_edges", "dice", "pgd"} <= set(list_attacks("graph"))


def test_dense_attack_refuses_large_graphs_naming_prbcd(small_graph, small_gcn):
    with pytest.raises(MemoryError, match=r"use a sparse attack \(prbcd, grbcd, dice, random_edges\)"):
        create_attack("pgd", small_gcn[0], max_memory_gb=1e-6)(small_graph)


@pytest.mark.parametrize("budget", [None, 0, 1, 3])
def test_gradargmax_invariants_and_effect(budget, small_gcn):
    model, _ = small_gcn
    for seed in range(3):
        graph = sbm_graph(seed=seed)
        att = create_attack("gradargmax", model, budget_flips_per_target=budget)
        for t in graph.idx_test[:4].tolist():
            res = att(graph, t, seed=seed)
            reference_check(graph, res, res.budget)
            touched = torch.cat([res.insertions, res.deletions], 1)
            assert (touched == t).any(0).all()
            if budget is None:
                assert res.budget == int((graph.edge_index[0] == t).sum()) + 2
