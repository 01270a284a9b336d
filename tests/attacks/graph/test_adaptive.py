"""Adaptive PGD variants and ``auto``: always judged on the real model, valid, never weaker than a member."""

from __future__ import annotations

import copy

import pytest
import torch

from robustbench_geo.attacks import create_attack
from robustbench_geo.attacks.graph.adaptive import build_surrogate, eigenspace_alignment
from robustbench_geo.attacks.graph.auto import AutoAttack
from robustbench_geo.attacks.graph.base import edge_budget
from robustbench_geo.data.base import GraphDataset
from robustbench_geo.models import build_model
from robustbench_geo.training import TrainConfig, seed_everything, train_graph_model
from tests.attacks.graph.conftest import sbm_graph
from tests.attacks.graph.test_invariants import reference_check


def _train(name, graph, **kw):
    seed_everything(0)
    model, _ = build_model(name, graph, **kw)
    train_graph_model(model, graph, TrainConfig(epochs=60, lr=0.01, weight_decay=5e-4, seed=0, patience=60), progress=False)
    return model.eval()


@pytest.fixture(scope="module")
def defended():
    graph = sbm_graph(seed=0)
    return graph, {"gcn_svd": _train("gcn_svd", graph, rank=8), "gcn_jaccard": _train("gcn_jaccard", graph, threshold=0.05)}


def independent_misclassified(model, graph, edge_index) -> int:
    """Test nodes the real model gets wrong on ``edge_index``: a fresh copy, its own sparse forward."""
    fresh = copy.deepcopy(model).eval()
    if hasattr(fresh, "_cache"):
        fresh._cache = None
    with torch.no_grad():
        pred = fresh(graph.x, edge_index)[graph.idx_test].argmax(1)
    return int((pred != graph.y[graph.idx_test]).sum())


VARIANTS = [{"surrogate": "drop"}, {"surrogate": "freeze"}, {"surrogate": "drop", "mask": "eigenspace"},
            {"surrogate": "freeze", "mask": "eigenspace", "lr_schedule": "cosine"},
            {"surrogate": "drop", "restarts": 2, "labels": "true", "loss": "tanh_margin"},
            {"surrogate": "drop", "init": "dice", "lr_schedule": "constant"}]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_adaptive_variants_report_the_real_models_accuracy(variant, defended):
    graph, models = defended
    for name, model in models.items():
        if variant.get("mask") == "eigenspace" and name != "gcn_svd":
            continue
        res = create_attack("pgd", model, budget_edge_fraction=0.1, steps=8, samples=3, refine_steps=4,
                            **variant)(graph, seed=1)
        assert res.work["misclassified_true"] == independent_misclassified(model, graph, res.edge_index)
        reference_check(graph, res, edge_budget(graph, 0.1))


def test_surrogates_differ_from_the_model_but_the_judge_does_not(defended):
    """Dropping the low-rank step changes what is differentiated, never what is reported."""
    graph, models = defended
    model = models["gcn_svd"]
    a = graph.dense_adjacency()
    with torch.no_grad():
        real = build_surrogate(model, graph.x, a, "model").logits(graph.x, torch.zeros_like(a))
        drop = build_surrogate(model, graph.x, a, "drop").logits(graph.x, torch.zeros_like(a))
    assert torch.allclose(real, model(graph.x, graph.edge_index), atol=1e-5)
    assert not torch.allclose(drop, real, atol=1e-3)
    mask = eigenspace_alignment(a, 8)
    assert torch.allclose(mask, mask.T) and float(mask.min()) >= 0 and float(mask.max()) <= 1 + 1e-6


def test_alter_differentiates_an_altered_copy_and_judges_the_real_model(defended):
    """GNNGuard's div_limit alteration: the surrogate uses 0.01, the model keeps 1e-8, the judge is the model."""
    graph = defended[0]
    model = _train("gnnguard", graph)
    a = graph.dense_adjacency()
    faint = a * 1e-4  # a relaxed graph whose rows sum below 0.01 (but above 1e-8)
    sur = build_surrogate(model, graph.x, a, "alter")
    with torch.no_grad():
        altered, real = sur.forward(graph.x, faint), model.dense_forward(graph.x, faint)
        assert torch.allclose(sur.logits(graph.x, torch.zeros_like(a)), model(graph.x, graph.edge_index), atol=1e-4)
    assert model.div_limit == 1e-8 and not torch.allclose(altered, real, atol=1e-3)
    assert "pgd/alter" in AutoAttack.members(model)
    res = create_attack("pgd", model, budget_edge_fraction=0.1, steps=6, samples=3, refine_steps=3,
                        surrogate="alter")(graph, seed=0)
    assert res.work["misclassified_true"] == independent_misclassified(model, graph, res.edge_index)
    reference_check(graph, res, edge_budget(graph, 0.1))


@pytest.mark.parametrize("fraction", [0.0, 0.3])
def test_adaptive_budget_and_validity(fraction, defended):
    graph, models = defended
    for seed in range(2):
        g = sbm_graph(seed=seed)
        res = create_attack("pgd", models["gcn_svd"], budget_edge_fraction=fraction, steps=5, samples=3, refine_steps=3,
                            surrogate="freeze", mask="eigenspace", restarts=2)(g, seed=seed)
        reference_check(g, res, edge_budget(g, fraction))


def test_init_is_never_weakened(defended):
    graph, models = defended
    model = models["gcn_jaccard"]
    start = create_attack("dice", model, budget_edge_fraction=0.1)(graph, seed=0)
    init = torch.cat([start.insertions, start.deletions], 1)
    res = create_attack("pgd", model, budget_edge_fraction=0.1, steps=3, samples=2, refine_steps=3,
                        surrogate="drop")(graph, seed=0, init_flips=init)
    assert res.work["misclassified_true"] >= independent_misclassified(model, graph, start.edge_index)


def test_auto_is_never_weaker_than_a_member(defended):
    graph, models = defended
    model = models["gcn_svd"]
    kw = {"budget_edge_fraction": 0.1, "steps": 6, "refine_steps": 3, "stop_accuracy": "never"}
    members = "pgd/prob_margin,pgd/drop+eigenspace,pgd/freeze,degree_collapse,prbcd"
    res = AutoAttack(model, members=members, **kw)(graph, seed=2)
    reference_check(graph, res, edge_budget(graph, 0.1))
    n_test = graph.idx_test.numel()
    auto_acc = 1 - independent_misclassified(model, graph, res.edge_index) / n_test
    assert auto_acc == pytest.approx(res.work["accuracy"])
    rows = {r["member"]: r for r in res.work["members"]}
    assert set(members.split(",")) <= set(rows) and res.work["winner"] in rows
    for label, attack, params in AutoAttack(model, members=members, chain=False, **kw).portfolio:
        alone = create_attack(attack, model, budget_edge_fraction=0.1, **params)(graph, seed=2)
        member_acc = 1 - independent_misclassified(model, graph, alone.edge_index) / n_test
        assert auto_acc <= member_acc + 1e-9, label
        assert rows[label]["accuracy"] == pytest.approx(member_acc)  # the same member, the same seed


def test_auto_stops_once_the_best_member_reaches_stop_accuracy(defended):
    graph, models = defended
    model = models["gcn_svd"]
    n_test = graph.idx_test.numel()
    kw = {"budget_edge_fraction": 0.1, "steps": 4, "refine_steps": 2}
    res = AutoAttack(model, members="degree_collapse,pgd/drop,prbcd", stop_accuracy=1.0, **kw)(graph, seed=0)
    rows = res.work["members"]
    assert [r["member"] for r in rows] == ["degree_collapse", "pgd/drop", "prbcd", "pgd/init=best"]
    assert "accuracy" in rows[0] and all("skipped" in r and "stop_accuracy" in r["skipped"] for r in rows[1:])
    alone = create_attack("degree_collapse", model, budget_edge_fraction=0.1)(graph, seed=0)
    first = 1 - independent_misclassified(model, graph, alone.edge_index) / n_test
    clean = 1 - independent_misclassified(model, graph, graph.edge_index) / n_test
    assert rows[0]["accuracy"] == pytest.approx(first) and res.work["accuracy"] == pytest.approx(min(first, clean))
    for bad in (1.5, -0.1, "sometimes", True):
        with pytest.raises(ValueError, match="stop_accuracy: expected 'chance', 'never' or a fraction"):
            AutoAttack(model, stop_accuracy=bad)


def _decisions(rows, clean: float) -> list[tuple[float, bool]]:
    """(best accuracy so far, clean included, whether the member ran) for every member after the first that ran."""
    best, out, seen = clean, [], False
    for r in rows:
        if seen:
            out.append((best, "accuracy" in r))
        seen = seen or "accuracy" in r
        best = min(best, r.get("accuracy", best))
    return out


def test_auto_stops_exactly_at_a_fractional_stop_accuracy(defended):
    graph, models = defended
    kw = {"budget_edge_fraction": 0.1, "steps": 4, "refine_steps": 2, "members": "degree_collapse,pgd/drop"}
    full = AutoAttack(models["gcn_svd"], stop_accuracy="never", **kw)(graph, seed=0).work["members"]
    first = full[0]["accuracy"]
    assert all("accuracy" in r for r in full) and 0 < first < 1
    at = AutoAttack(models["gcn_svd"], stop_accuracy=first, **kw)(graph, seed=0).work["members"]
    assert "accuracy" in at[0] and all("skipped" in r for r in at[1:])  # at or below the threshold: stop
    above = AutoAttack(models["gcn_svd"], stop_accuracy=first - 1e-6, **kw)(graph, seed=0).work["members"]
    assert "accuracy" in above[1]  # just above: go on
    assert all(ran == (best > first - 1e-6) for best, ran in _decisions(above, 1.0))  # later members: the same rule
    ran = [r["accuracy"] for r in above if "accuracy" in r]
    assert ran == pytest.approx([r["accuracy"] for r in full][:len(ran)])


def test_auto_chance_level_is_the_majority_share_of_the_test_nodes(defended):
    graph, models = defended
    # a test set with 10, 4 and 2 nodes of classes 0, 1, 2: chance is 10 / 16 (not 1/3, the share over all nodes
    # or over the classes)
    by_class = [graph.idx_test[graph.y[graph.idx_test] == c] for c in range(3)]
    test = torch.cat([by_class[0][:10], by_class[1][:4], by_class[2][:2]])
    skewed = GraphDataset(graph.name, "skewed", graph.x, graph.edge_index, graph.y, graph.idx_train, graph.idx_val,
                          test, {})
    kw = {"budget_edge_fraction": 0.1, "steps": 4, "refine_steps": 2}
    res = AutoAttack(models["gcn_svd"], members="degree_collapse,pgd/drop", **kw)(skewed, seed=0)
    assert res.work["stop_accuracy"] == 10 / 16
    clean = 1 - independent_misclassified(models["gcn_svd"], skewed, skewed.edge_index) / 16
    decisions = _decisions(res.work["members"], clean)
    assert len(decisions) == 2  # pgd/drop and the chained pgd/init=best
    for best_before, ran in decisions:
        assert ran == (best_before > 10 / 16)  # every member runs while the best is above chance, none after
    assert all(ran for _, ran in decisions)  # this model stays above 10 / 16
    # test nodes of one class only: chance is 1, so every member after the first is skipped
    one = GraphDataset(graph.name, "one-class", graph.x, graph.edge_index, graph.y, graph.idx_train, graph.idx_val,
                       by_class[0], {})
    res = AutoAttack(models["gcn_svd"], members="degree_collapse,pgd/drop", **kw)(one, seed=0)
    assert res.work["stop_accuracy"] == 1.0
    assert "accuracy" in res.work["members"][0] and all("skipped" in r for r in res.work["members"][1:])

def test_unknown_names_list_valid_ones(defended):
    model = defended[1]["gcn_svd"]
    with pytest.raises(KeyError, match="Valid surrogate.*drop, freeze, model"):
        create_attack("pgd", model, surrogate="dropp")
    with pytest.raises(KeyError, match="eigenspace"):
        create_attack("pgd", model, mask="eigen")
    with pytest.raises(KeyError, match="Valid lr_schedule.*constant, cosine, sqrt"):
        create_attack("pgd", model, lr_schedule="step")
    with pytest.raises(KeyError, match="Valid surrogate.*drop, model"):
        create_attack("prbcd", model, surrogate="freeze")
    with pytest.raises(KeyError, match="Valid labels"):
        create_attack("pgd", model, labels="gold")
    with pytest.raises(ValueError, match="expected labels among degree_collapse, pgd/prob_margin"):
        AutoAttack(model, members="pgd/nope")
    with pytest.raises(ValueError, match="needs a rank"):
        create_attack("pgd", defended[1]["gcn_jaccard"], mask="eigenspace")(defended[0])


def test_prbcd_block_merge_matches_pyg():
    """The sort-free merge gives PyG's perturbed graph: the same weight on every directed pair, same gradient."""
    from torch_geometric.contrib.nn import PRBCDAttack

    from robustbench_geo.attacks.graph.rbcd import _FastPRBCD

    graph = sbm_graph(seed=2)
    n, ei = graph.num_nodes, graph.edge_index
    g = torch.Generator().manual_seed(0)
    lin = torch.unique(torch.randint(n * (n - 1) // 2, (300,), generator=g))
    block = PRBCDAttack._linear_to_triu_idx(n, lin)
    weights = []
    for cls in (PRBCDAttack, _FastPRBCD):
        att = cls(torch.nn.Linear(1, 1), block_size=400, is_undirected=True)
        att.num_nodes, att.device = n, torch.device("cpu")
        w = torch.rand(lin.numel(), generator=torch.Generator().manual_seed(1)).requires_grad_(True)
        out_ei, out_w = att._get_modified_adj(ei, torch.ones(ei.shape[1]), block, w)
        dense = torch.zeros(n, n).index_put((out_ei[0], out_ei[1]), out_w, accumulate=True)
        (grad,) = torch.autograd.grad((dense * torch.arange(n * n).view(n, n).float().sin()).sum(), w)
        weights.append((dense.detach(), grad))
    assert torch.allclose(weights[0][0], weights[1][0]) and torch.allclose(weights[0][1], weights[1][1], atol=1e-6)


def test_degree_collapse_reports_the_real_accuracy_and_is_valid(defended):
    graph, models = defended
    for fraction in (0.0, 0.2):
        res = create_attack("degree_collapse", models["gcn_svd"], budget_edge_fraction=fraction, candidates=3)(graph, seed=0)
        reference_check(graph, res, edge_budget(graph, fraction))
        if fraction:
            acc = 1 - independent_misclassified(models["gcn_svd"], graph, res.edge_index) / graph.idx_test.numel()
            assert acc == pytest.approx(res.work["accuracy"])
    with pytest.raises(ValueError, match="expected a model with dense_preprocess"):
        create_attack("degree_collapse", _train("gcn", graph))


def test_prbcd_projection_matches_pyg():
    from torch_geometric.contrib.nn import PRBCDAttack

    from robustbench_geo.attacks.graph.rbcd import _FastPRBCD

    g = torch.Generator().manual_seed(0)
    for budget, scale in ((10, 0.5), (50, 2.0), (400, 0.3)):
        v = torch.randn(2000, generator=g) * scale
        ours, theirs = _FastPRBCD._project(budget, v), PRBCDAttack._project(budget, v)
        assert float(ours.sum()) <= budget + 1e-3
        assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
