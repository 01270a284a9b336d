import pytest
import torch

from robustbench_geo.data import load_dataset, load_prognn_perturbed


def _check_valid(g):
    ei = g.edge_index
    assert (ei[0] != ei[1]).all(), "self-loops"
    fwd = set(map(tuple, ei.t().tolist()))
    assert all((j, i) in fwd for i, j in fwd), "not symmetric"
    assert len(fwd) == ei.shape[1], "duplicate edges"


def test_cora_literature_lcc(cora):
    assert (cora.num_nodes, cora.num_edges, cora.num_features, cora.num_classes) == (2485, 5069, 1433, 7)
    assert (len(cora.idx_train), len(cora.idx_val), len(cora.idx_test)) == (247, 249, 1988)
    assert set(cora.x.unique().tolist()) <= {0.0, 1.0}
    _check_valid(cora)
    assert cora.split == "prognn" and len(cora.split_hash) == 12


def test_prognn_perturbed_graphs_differ_by_published_flips(cora, cora_root):
    clean = set(map(tuple, cora.edge_index.t().tolist()))
    for rate, flips in [(0.05, 253), (0.2, 1013)]:
        p = load_prognn_perturbed("cora", "meta", rate, root=cora_root)
        pert = set(map(tuple, p.edge_index.t().tolist()))
        assert len(clean ^ pert) // 2 == flips  # exact match: our LCC ordering is the benchmark's
        _check_valid(p)
    n = load_prognn_perturbed("cora", "nettack", 1.0, root=cora_root)
    assert len(n.meta["targets"]) > 0


def test_prognn_bad_rate(cora_root):
    with pytest.raises(ValueError, match="exist for"):
        load_prognn_perturbed("cora", "meta", 0.07, root=cora_root)


def test_nettack_split_is_stratified_and_seeded(cora_root):
    a = load_dataset("cora:nettack", root=cora_root, seed=1)
    b = load_dataset("cora", split="nettack", root=cora_root, seed=1)
    c = load_dataset("cora:nettack", root=cora_root, seed=2)
    assert torch.equal(a.idx_train, b.idx_train) and not torch.equal(a.idx_train, c.idx_train)
    n = a.num_nodes
    assert abs(len(a.idx_train) - 0.1 * n) < 10 and abs(len(a.idx_test) - 0.8 * n) < 10
    assert len(set(a.idx_train.tolist()) & set(a.idx_test.tolist())) == 0


def test_planetoid_public_split(cora_root):
    g = load_dataset("cora:public", root=cora_root)
    assert (g.num_nodes, len(g.idx_train), len(g.idx_val), len(g.idx_test)) == (2708, 140, 500, 1000)
    _check_valid(g)


def test_graph_errors(cora_root):
    with pytest.raises(KeyError, match="Valid graph splits"):
        load_dataset("cora:foo", root=cora_root)
    with pytest.raises(ValueError, match="split 'public' exists only"):
        load_dataset("polblogs:public", root=cora_root)
