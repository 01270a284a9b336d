"""The graph runner: evasion/poisoning protocols, targeted selection and the outcome contract."""

from __future__ import annotations

import pytest
import torch

from robustbench_geo.evaluation import evaluate_attack
from robustbench_geo.evaluation.graph import select_targets
from robustbench_geo.report.run_files import perturbation_files as write_artefacts
from robustbench_geo.evaluation import graph_accuracy

METRICS = {"clean_accuracy", "robust_accuracy", "success_rate", "flips", "insertions", "deletions", "budget"}


def test_evasion_outcome_contract_and_independent_recheck(small_graph, small_gcn, tmp_path):
    model, meta = small_gcn
    o = evaluate_attack(model, small_graph, "pgd", {"steps": 20}, seed=1, budget=0.2, progress=False)
    assert METRICS <= set(o.metrics) and all(isinstance(v, (int, float)) for v in o.metrics.values())
    assert o.params["budget_edge_fraction"] == 0.2 and o.params["loss"] == "prob_margin"
    assert o.metrics["flips"] == o.metrics["insertions"] + o.metrics["deletions"] <= o.metrics["budget"]
    assert len(o.rows) == len(small_graph.idx_test)
    a = o.artefacts
    assert a["insertions"].dtype == torch.long and a["insertions"].shape == (2, o.metrics["insertions"])
    assert (a["insertions"][0] < a["insertions"][1]).all() and a["degree_after"].shape == (small_graph.num_nodes,)
    assert (a["degree_after"] - a["degree_before"]).sum() == 2 * (o.metrics["insertions"] - o.metrics["deletions"])
    # re-evaluate from the artefacts alone: rebuild the graph and run the model's sparse forward
    from robustbench_geo.attacks.graph.base import apply_flips

    flips = torch.cat([a["insertions"], a["deletions"]], 1)
    ei = apply_flips(small_graph.edge_index, flips, small_graph.num_nodes)
    assert graph_accuracy(model, small_graph, edge_index=ei) == pytest.approx(o.metrics["robust_accuracy"])
    assert o.metrics["robust_accuracy"] < o.metrics["clean_accuracy"]  # PGD with 20 % of edges does hurt
    c = o.config
    assert c["seed"] == 1 and c["mode"] == "evasion" and c["split_hash"] == small_graph.split_hash and "torch" in c["versions"]
    written = write_artefacts(o, tmp_path)
    assert (tmp_path / "flips.csv").read_text().count("\n") == o.metrics["flips"] + 1 and len(written) == 3


def test_poisoning_retrains_and_is_seeded(small_graph, small_gcn):
    model, meta = small_gcn
    o1 = evaluate_attack(model, small_graph, "dice", {}, seed=0, mode="poisoning", budget=0.3, checkpoint_meta=meta,
                         progress=False)
    o2 = evaluate_attack(model, small_graph, "dice", {}, seed=0, mode="poisoning", budget=0.3, checkpoint_meta=meta,
                         progress=False)
    assert o1.metrics == o2.metrics and o1.config["mode"] == "poisoning"
    with pytest.raises(ValueError, match="expected checkpoint_meta"):
        evaluate_attack(model, small_graph, "dice", {}, mode="poisoning", progress=False)
    with pytest.raises(ValueError, match="mode: expected one of evasion, poisoning"):
        evaluate_attack(model, small_graph, "dice", {}, mode="poison", progress=False)


def test_forty_target_selection():
    margins = torch.linspace(-1, 1, 200)
    correct = margins > -0.5
    cand = torch.arange(200)
    t = select_targets(margins, correct, cand, seed=0)
    assert len(t) == len(set(t)) == 40 and all(correct[i] for i in t)
    assert t[:10] == list(range(199, 189, -1))  # highest margins first
    ok = cand[correct]
    assert sorted(t[10:20]) == ok[:10].tolist()  # lowest-margin correctly classified nodes
    assert select_targets(margins, correct, cand, seed=0) == t and select_targets(margins, correct, cand, seed=1) != t
    assert len(select_targets(margins, margins > 0.9, cand, seed=0)) == int((margins > 0.9).sum())


def test_targeted_protocol_rows_and_poisoning(small_graph, small_gcn):
    model, meta = small_gcn
    from robustbench_geo.evaluation import graph_logits

    ok = small_graph.idx_test[graph_logits(model, small_graph).argmax(1)[small_graph.idx_test] == small_graph.y[small_graph.idx_test]]
    poisoned_meta = {**meta, "train": {**meta["train"], "epochs": 60, "patience": 60}}
    o = evaluate_attack(model, small_graph, "nettack", {"features": True}, seed=0, mode="poisoning",
                        checkpoint_meta=poisoned_meta, targets=ok[:8].tolist(), progress=False)
    n_t = int(o.metrics["targets"])
    assert n_t == 8 and len(o.rows) == n_t
    assert all(r["clean_prediction"] == r["label"] for r in o.rows)  # targets are correctly classified
    assert o.metrics["success_rate"] == pytest.approx(sum(r["misclassified"] for r in o.rows) / n_t)
    assert o.metrics["robust_accuracy"] == pytest.approx(1 - o.metrics["success_rate"])
    assert o.metrics["success_rate"] > 0.3  # Nettack with degree + 2 flips fools many retrained models
    a = o.artefacts
    assert a["insertion_targets"].shape[0] == a["insertions"].shape[1]
    assert o.metrics["budget"] == sum(r["budget"] for r in o.rows)
    o2 = evaluate_attack(model, small_graph, "gradargmax", {}, seed=0, budget=1, targets=[int(small_graph.idx_test[0])],
                         progress=False)
    assert len(o2.rows) == 1 and o2.rows[0]["budget"] == 1 and o2.metrics["flips"] <= 1
    with pytest.raises(ValueError, match="non-negative integer count of flips per target"):
        evaluate_attack(model, small_graph, "nettack", {}, budget=1.5, progress=False)


def test_prognn_track(cora):
    from robustbench_geo.attacks import create_attack

    res = create_attack("prognn_perturbed", None, rate=0.05)(cora)
    assert res.flips == res.budget == 253 and res.insertions.shape[1] == 253
    with pytest.raises(ValueError, match="exist for"):
        create_attack("prognn_perturbed", None, rate=0.07)


class _StaleModel(torch.nn.Module):
    """A model with a bad cache: the first logits it computes are returned for every later graph."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.stale = inner, None

    def forward(self, x, edge_index, edge_weight=None):
        if self.stale is None:
            self.stale = self.inner(x, edge_index, edge_weight)
        return self.stale


def test_re_measure_runs_on_a_fresh_copy_and_reads_no_state_the_run_left(small_graph, small_gcn):
    from robustbench_geo.attacks.graph.base import apply_flips

    inner, _ = small_gcn
    stale = _StaleModel(inner).eval()
    o = evaluate_attack(stale, small_graph, "random_edges", {"kind": "flip"}, seed=0, budget=0.5, progress=False)
    a = o.artefacts
    ei = apply_flips(small_graph.edge_index, torch.cat([a["insertions"], a["deletions"]], 1), small_graph.num_nodes)
    truth = graph_accuracy(inner, small_graph, edge_index=ei)
    assert truth != pytest.approx(graph_accuracy(inner, small_graph))  # the flips change the test accuracy
    assert o.metrics["robust_accuracy"] == pytest.approx(truth)
    assert o.metrics["clean_accuracy"] == pytest.approx(graph_accuracy(inner, small_graph))
