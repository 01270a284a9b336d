"""Large graphs: the sparse paths never build an N x N matrix; the dense attacks refuse with one line; auto records why.

The no-N x N check watches every tensor that any torch operator returns (a dispatch mode sees the forward,
the backward and PyG's own operators) and every numpy/Python allocation (``tracemalloc``), on a generated
``sbm`` graph of 3000 nodes where the sparse paths' largest tensors stay well below ``N^2 / 2`` entries.
The negative controls show that the same watch does see a dense adjacency.
"""

from __future__ import annotations

import tracemalloc

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import robustbench_geo as rbg
from robustbench_geo.attacks.base import create_attack
from robustbench_geo.attacks.graph.base import SPARSE_ATTACKS, DenseGraphTooLarge, dense_memory_gib
from robustbench_geo.data import load_dataset
from robustbench_geo.models.registry import build_model, create_model
from robustbench_geo.training import TrainConfig, train_graph_model

N_SPARSE = 3000
SPEC = f"sbm:nodes={N_SPARSE}"


class LargestAllocation(TorchDispatchMode):
    """Records the largest tensor (entries) any torch operator returns and any dense ``(N, N)``-shaped one, and
    the peak of numpy/Python allocations (bytes), while active. A sparse tensor counts its stored entries: an
    ``(N, N)`` sparse matrix with ``O(E)`` of them (the GCN's CSR ``A_hat``) is not dense."""

    def __init__(self, n: int):
        super().__init__()
        self.n, self.entries, self.op, self.square, self.python_bytes = n, 0, None, [], 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                dense = t.layout == torch.strided
                stored = t.numel() if dense else t._nnz()
                if stored > self.entries:
                    self.entries, self.op = stored, str(func)
                if dense and t.dim() >= 2 and sum(d >= self.n for d in t.shape) >= 2:
                    self.square.append(str(func))
        return out

    def __enter__(self):
        tracemalloc.start()
        return super().__enter__()

    def __exit__(self, *exc):
        self.python_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return super().__exit__(*exc)

    def assert_sparse(self, what: str) -> None:
        half = self.n * self.n // 2
        assert not self.square, f"{what}: N x N tensors from {self.square[:3]}"
        assert self.entries < half, f"{what}: a tensor of {self.entries} entries ({self.op}), N^2 / 2 = {half}"
        assert self.python_bytes < 4 * half, f"{what}: {self.python_bytes} bytes of numpy/Python memory at once"


@pytest.fixture(scope="module")
def sbm_model():
    warm = load_dataset("sbm:nodes=300")  # first imports and caches happen outside the watch (they are not N x N)
    train_graph_model(build_model("gcn", warm)[0], warm, TrainConfig(epochs=1, seed=0), progress=False)
    watch = LargestAllocation(N_SPARSE)
    with watch:
        graph = load_dataset(SPEC)
        model, _ = build_model("gcn", graph)
        train_graph_model(model, graph, TrainConfig(epochs=60, lr=0.05, patience=60, seed=0), progress=False)
    assert graph.num_nodes > 0.99 * N_SPARSE
    return graph, model.eval(), watch


def test_sbm_training_is_sparse(sbm_model):
    graph, model, watch = sbm_model
    watch.assert_sparse("generate + train")
    assert rbg.evaluate(model, graph).clean_accuracy.value > 0.3  # 10 classes: it learned something


@pytest.mark.parametrize("attack,params", [
    ("none", {}),
    ("dice", {}),
    ("random_edges", {}),
    ("prbcd", {"epochs": 4, "epochs_resampling": 3, "block_size": 20_000}),
    ("grbcd", {"epochs": 3, "block_size": 20_000}),
])
def test_sbm_evaluation_and_sparse_attacks_never_build_n_by_n(sbm_model, attack, params):
    graph, model, _ = sbm_model
    watch = LargestAllocation(graph.num_nodes)
    with watch:
        r = rbg.evaluate(model, graph, attack, **params)
    watch.assert_sparse(attack)
    if attack != "none":
        assert r.metrics["flips"] == int(0.05 * graph.num_edges)
        assert r.robust_accuracy.value <= r.clean_accuracy.value


def test_the_watch_sees_dense_allocations(sbm_model):
    graph, _, _ = sbm_model
    watch = LargestAllocation(graph.num_nodes)
    with watch:
        graph.dense_adjacency()
    with pytest.raises(AssertionError, match="N x N tensors"):
        watch.assert_sparse("dense_adjacency")
    import numpy as np
    watch = LargestAllocation(graph.num_nodes)
    with watch:
        np.zeros(graph.num_nodes ** 2 // 2, dtype=np.float32) + 1
    with pytest.raises(AssertionError, match="numpy/Python memory"):
        watch.assert_sparse("numpy")


# ---------------------------------------------------------------- dense attacks refuse


@pytest.fixture(scope="module")
def large_graph():
    """25k nodes: every dense attack's N x N matrices need more than the default 8 GiB (nettack's four: 9.3 GiB)."""
    return load_dataset("sbm:nodes=25000,avg_degree=4,features=16")


def _dense_attacks(graph):
    gcn = create_model("gcn", in_features=graph.x.shape[1], num_classes=graph.num_classes)
    jaccard = create_model("gcn_jaccard", in_features=graph.x.shape[1], num_classes=graph.num_classes)
    target = int(graph.idx_test[0])
    return [("pgd", lambda: create_attack("pgd", gcn)(graph)),
            ("metattack", lambda: create_attack("metattack", gcn)(graph)),
            ("nettack", lambda: create_attack("nettack", gcn)(graph, target)),
            ("degree_collapse", lambda: create_attack("degree_collapse", jaccard)(graph))]


def test_dense_attacks_refuse_large_graphs_with_one_line(large_graph):
    n = large_graph.num_nodes
    for name, run in _dense_attacks(large_graph):
        watch = LargestAllocation(n)
        with watch, pytest.raises(DenseGraphTooLarge) as err:
            run()
        msg = str(err.value)
        assert "\n" not in msg
        assert msg.startswith(f"attack {name!r} is dense: about ")
        assert f"GiB of N x N matrices for a {n}-node graph, above max_memory_gb=8" in msg
        assert f"use a sparse attack ({', '.join(SPARSE_ATTACKS)})" in msg
        assert SPARSE_ATTACKS == ("prbcd", "grbcd", "dice", "random_edges")
        assert float(msg.split("about ")[1].split(" GiB")[0]) == pytest.approx(err.value.gib, abs=0.05)
        assert err.value.gib > 8
        assert not watch.square, f"{name} allocated N x N before refusing"


def test_refusal_estimate_is_the_dense_matrices(large_graph):
    n = large_graph.num_nodes
    gcn = create_model("gcn", in_features=large_graph.x.shape[1], num_classes=large_graph.num_classes)
    with pytest.raises(DenseGraphTooLarge) as err:
        create_attack("pgd", gcn)(large_graph)
    assert err.value.gib == pytest.approx(17 * n * n * 4 / 2 ** 30)  # 9 of PGD's own + 8 of the model's
    assert dense_memory_gib(n, 17) == pytest.approx(err.value.gib)
    # the limit is the caller's: the same attack with more memory allowed gets past the check (and is stopped here)
    with pytest.raises(DenseGraphTooLarge, match="max_memory_gb=1"):
        create_attack("pgd", gcn, max_memory_gb=1)(large_graph)


def test_cli_reports_the_refusal_as_one_line(large_graph, tmp_path):
    from robustbench_geo.cli.options import UserInputError, as_click_error

    gcn = create_model("gcn", in_features=large_graph.x.shape[1], num_classes=large_graph.num_classes)
    with pytest.raises(DenseGraphTooLarge) as err:
        create_attack("metattack", gcn)(large_graph)
    click_err = as_click_error(err.value)
    assert isinstance(click_err, UserInputError) and click_err.exit_code == 2
    assert click_err.message == str(err.value)


def test_auto_skips_dense_members_and_records_why(large_graph):
    graph = large_graph
    gcn = create_model("gcn", in_features=graph.x.shape[1], num_classes=graph.num_classes).eval()
    auto = create_attack("auto", gcn, stop_accuracy="never", block_size=5_000)
    watch = LargestAllocation(graph.num_nodes)
    with watch:
        est = auto.estimate_seconds(graph)
        res = auto(graph, seed=0)
    assert not watch.square
    members = {m["member"]: m for m in res.work["members"]}
    assert list(members) == ["pgd/prob_margin", "pgd/tanh_margin", "prbcd", "pgd/init=best"]
    for label in ("pgd/prob_margin", "pgd/tanh_margin", "pgd/init=best"):
        assert "accuracy" not in members[label]
        assert members[label]["skipped"].startswith("attack 'pgd' is dense: about ")
        assert "use a sparse attack (prbcd, grbcd, dice, random_edges)" in members[label]["skipped"]
        assert members[label]["estimate_gib"] == pytest.approx(dense_memory_gib(graph.num_nodes, 17), abs=0.01)
    assert est["pgd/prob_margin"] == est["pgd/tanh_margin"] == 0.0 and "chain" not in est
    assert "accuracy" in members["prbcd"] and members["prbcd"]["flips"] > 0
    assert res.work["winner"] in ("prbcd", "clean")


def test_auto_hands_max_memory_gb_to_every_dense_member(small_graph):
    """On a 60-node graph every member fits the default; a tiny limit must reach degree_collapse and pgd alike."""
    jaccard, _ = build_model("gcn_jaccard", small_graph)
    auto = create_attack("auto", jaccard.eval(), max_memory_gb=1e-6, stop_accuracy="never", chain=False,
                         members="degree_collapse,pgd/prob_margin,prbcd")
    members = {m["member"]: m for m in auto(small_graph, seed=0).work["members"]}
    assert members["degree_collapse"]["skipped"].startswith("attack 'degree_collapse' is dense")
    assert members["pgd/prob_margin"]["skipped"].startswith("attack 'pgd' is dense")
    assert "accuracy" in members["prbcd"]
    assert "skipped" not in {m["member"]: m for m in create_attack(
        "auto", jaccard, stop_accuracy="never", chain=False, members="degree_collapse")(small_graph).work["members"]
    }["degree_collapse"]
