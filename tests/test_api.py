"""The public API on a model trained inside the test: ``rbg.benchmark`` equals the runner it wraps.

Real MNIST (a few hundred images from ``RBGEO_DATA``); the model is an ``nn.Sequential`` the
package has never seen, trained here in about a second.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import robustbench_geo as rbg
from robustbench_geo.data.base import GraphDataset, ImageDataset
from robustbench_geo.evaluation import evaluate_attack
from robustbench_geo.evaluation.threat_models import THREAT_MODELS, get_threat_model
from robustbench_geo.models.predict import accuracy
from robustbench_geo.models.preprocessing import with_preprocessing

MEAN, STD = 0.1307, 0.3081
WORST_OF_10 = {"k": 10, "max_angle_deg": 30.0, "max_shift_px": 3.0}


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 7 * 7, 10))


@pytest.fixture(scope="module")
def mnist_small_split(mnist_root):
    from robustbench_geo.data import load_dataset

    train = load_dataset("mnist", split="train", root=mnist_root, subset=400, seed=0)
    test = load_dataset("mnist", split="test", root=mnist_root, subset=48, seed=1)
    return train, test


@pytest.fixture(scope="module")
def trained(mnist_small_split):
    """A CNN trained on 400 MNIST images (3 epochs); its test accuracy is far above chance."""
    train, _ = mnist_small_split
    torch.manual_seed(0)
    net = small_cnn()
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(3):
        for i in range(0, len(train), 50):
            loss = F.cross_entropy(net(train.images[i:i + 50]), train.labels[i:i + 50])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


class Denormalise(nn.Module):
    """A model that expects normalised inputs ``(x - MEAN) / STD``: ``net`` behind an exact inverse."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, z):
        return self.net(z * STD + MEAN)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _unchanged(model, before, training, device="cpu"):
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert model.training == training and all(p.device.type == device for p in model.parameters())


def test_benchmark_from_tensors_equals_the_runner(trained, mnist_small_split):
    _, test = mnist_small_split
    net = copy.deepcopy(trained).train()  # in train mode on purpose: it must come back in train mode
    before = _state(net)
    r = rbg.benchmark(net, (test.images, test.labels), "worst-of-10", n_examples=40, seed=3)
    _unchanged(net, before, training=True)
    ref = evaluate_attack(copy.deepcopy(trained), ImageDataset("x", test.images[:40], test.labels[:40], [], {}),
                          "worst_of_k", WORST_OF_10, seed=3, progress=False)
    for k in ("clean_accuracy", "robust_accuracy", "success_rate", "forward_passes"):
        assert r.metrics[k] == ref.metrics[k], k
    assert r.clean_accuracy.value == ref.metrics["clean_accuracy"] > 0.5 and r.clean_accuracy.n == 40
    assert r.robust_accuracy.low <= r.robust_accuracy.value <= r.robust_accuracy.high
    assert r.rows["adv_pred"].tolist() == [row["adv_pred"] for row in ref.rows] and len(r.rows) == 40
    assert r.params == {**ref.params} and r.config["versions"]["torch"] == torch.__version__
    doc = __import__("json").loads(r.to_json())
    assert doc["results"][0]["robust_acc"] == r.robust_accuracy.value and doc["results"][0]["n"] == 40
    assert doc["results"][0]["attack"] == "worst-of-10" and doc["results"][0]["attack_name"] == "worst_of_k"


def test_benchmark_from_a_dataset_and_the_none_attack(trained, mnist_small_split):
    _, test = mnist_small_split
    tensors = rbg.benchmark(trained, (test.images, test.labels), "worst-of-10", n_examples=24)
    ds = torch.utils.data.TensorDataset(test.images, test.labels)
    from_ds = rbg.benchmark(trained, ds, "worst-of-10", n_examples=24)
    assert from_ds.metrics == tensors.metrics and from_ds.rows.equals(tensors.rows)
    clean = rbg.evaluate(trained, ds)  # the attack 'none'
    assert clean.attack == "none" and clean.clean_accuracy.n == len(test)
    assert clean.clean_accuracy.value == clean.robust_accuracy.value == pytest.approx(accuracy(trained, test), abs=1e-6)


def test_benchmark_from_a_dataset_name(trained, mnist_root):
    from robustbench_geo.data import load_dataset

    r = rbg.benchmark(trained, "mnist", "random", n_examples=16, seed=5, data_root=mnist_root)
    same = load_dataset("mnist", split="test", root=mnist_root, subset=16, seed=5)  # the CLI's --n subset
    ref = evaluate_attack(trained, same, "random", {}, seed=5, progress=False)
    assert r.metrics == ref.metrics and r.config["data"]["name"] == "mnist" and r.clean_accuracy.n == 16


def test_the_engstrom_grid_is_775_transforms(trained, mnist_small_split):
    _, test = mnist_small_split
    r = rbg.benchmark(trained, (test.images, test.labels), n_examples=4)  # default: rotation-translation
    assert r.attack == "grid" and r.config["threat_model"]["source"].startswith("Engstrom")
    g = rbg.evaluate(trained, (test.images[:4], test.labels[:4]), "grid", max_angle_deg=30, angle_steps=31,
                     max_shift_px=3, shift_steps=5)
    assert g.metrics == r.metrics
    from robustbench_geo.attacks import create_attack

    grid = create_attack("grid", trained, **get_threat_model("rotation-translation").params).grid()
    assert len(next(iter(grid.values()))) == 31 * 5 * 5


@pytest.mark.parametrize("spec", [(MEAN, STD), "mean=0.1307,std=0.3081", lambda x: (x - MEAN) / STD])
def test_preprocessing_keeps_attacks_in_pixel_space(trained, mnist_small_split, spec):
    _, test = mnist_small_split
    normed = Denormalise(copy.deepcopy(trained)).eval()
    before = _state(normed)
    r = rbg.benchmark(normed, (test.images, test.labels), "worst-of-10", n_examples=32, preprocessing=spec)
    _unchanged(normed, before, training=False)
    ref = evaluate_attack(with_preprocessing(normed, spec), ImageDataset("x", test.images[:32], test.labels[:32], [], {}),
                          "worst_of_k", WORST_OF_10, progress=False)
    assert r.metrics == ref.metrics and r.metrics["max_pixel_range_violation"] == 0
    plain = rbg.benchmark(trained, (test.images, test.labels), "worst-of-10", n_examples=32)
    assert r.clean_accuracy.value == plain.clean_accuracy.value  # the wrapper undoes exactly what the model expects
    assert abs(r.robust_accuracy.value - plain.robust_accuracy.value) <= 1 / 32
    assert r.config["preprocessing"] is not None


def test_bad_input_fails_with_the_valid_names(trained, mnist_small_split):
    _, test = mnist_small_split
    data = (test.images, test.labels)
    with pytest.raises(KeyError, match="Did you mean 'rotation-translation'.*Valid threat models: affine"):
        rbg.benchmark(trained, data, "rotation-translaton")
    with pytest.raises(TypeError, match="unknown keyword argument 'n_example'. Did you mean 'n_examples'"):
        rbg.benchmark(trained, data, n_example=5)
    with pytest.raises(ValueError, match="unknown parameter.*'max_angle'.*valid parameters: k = 10"):
        rbg.evaluate(trained, data, "worst_of_k", max_angle=10)
    with pytest.raises(ValueError, match=r"expected logits for at least 10 classes .* got 5 outputs"):
        rbg.benchmark(nn.Sequential(nn.Flatten(), nn.Linear(784, 5)), data, "random")
    with pytest.raises(ValueError, match=r"expected \(B, num_classes\) logits .* got \(2, 10, 1\)"):
        rbg.benchmark(nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Unflatten(1, (10, 1))), data, "random")
    with pytest.raises(ValueError, match=r"expected values in \[0.0, 1.0\]"):
        rbg.benchmark(trained, (test.images * 255, test.labels), "random")
    with pytest.raises(ValueError, match="is for graph data but the data are image data"):
        rbg.benchmark(trained, data, "structure-evasion")
    with pytest.raises(TypeError, match="expected a dataset name, an \\(x, y\\) pair"):
        rbg.benchmark(trained, [1, 2, 3], "random")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['n_exampels'\].*valid options: batch_size, device, n, "):
        evaluate_attack(trained, test, "random", {}, n_exampels=3, progress=False)


def test_a_model_elsewhere_runs_as_a_copy_and_is_never_moved(trained):
    from robustbench_geo.models.predict import on_device

    assert on_device(trained, None) is trained and on_device(trained, "cpu") is trained
    elsewhere = on_device(trained, "meta")  # a device every machine has
    assert elsewhere is not trained and next(elsewhere.parameters()).device.type == "meta"
    assert all(p.device.type == "cpu" for p in trained.parameters())


def test_every_threat_model_names_a_registered_attack_and_a_source():
    for name in THREAT_MODELS:
        tm = get_threat_model(name)
        entry = rbg.list_attacks(tm.domain)
        assert tm.attack in entry and tm.source and tm.description
    assert rbg.list_threat_models("graph") == ["structure-evasion", "structure-poisoning", "targeted"]
    assert get_threat_model("pgd").attack == "pgd"  # any registered attack is a threat model too


class PygGCN(nn.Module):
    """A two-layer GCN written the way a PyG user would."""

    def __init__(self, features: int, classes: int):
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.conv1, self.conv2 = GCNConv(features, 16), GCNConv(16, classes)

    def forward(self, x, edge_index, edge_weight=None):
        return self.conv2(F.relu(self.conv1(x, edge_index, edge_weight)), edge_index, edge_weight)


def test_benchmark_a_pyg_gcn_on_a_pyg_data():
    from tests.attacks.graph.conftest import sbm_graph

    graph = sbm_graph()
    data = graph.to_pyg()
    torch.manual_seed(0)
    gcn = PygGCN(graph.num_features, graph.num_classes)
    opt = torch.optim.Adam(gcn.parameters(), 0.01, weight_decay=5e-4)
    for _ in range(100):
        loss = F.cross_entropy(gcn(data.x, data.edge_index)[data.train_mask], data.y[data.train_mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
    gcn.eval()
    before = _state(gcn)
    small = {"steps": 20, "refine_steps": 10, "members": "pgd/prob_margin", "chain": False}  # a cheap portfolio
    r = rbg.benchmark(gcn, data, "structure-evasion", params=small, seed=1)
    _unchanged(gcn, before, training=False)
    assert GraphDataset.from_pyg(data).edge_index.equal(graph.edge_index)
    assert r.attack == "auto"  # the adaptive portfolio (auto >= each member: tests/attacks/graph/test_adaptive.py)
    ref = evaluate_attack(gcn, graph, "auto", {"budget_edge_fraction": 0.05, **small}, seed=1, progress=False)
    for k in ("clean_accuracy", "robust_accuracy", "success_rate", "flips"):
        assert r.metrics[k] == ref.metrics[k], k
    assert r.clean_accuracy.n == len(graph.idx_test) and r.clean_accuracy.value > 0.5
    assert 0 < r.metrics["flips"] <= r.metrics["budget"] == int(0.05 * graph.num_edges)
    clean = rbg.evaluate(gcn, data)
    assert clean.clean_accuracy.value == clean.robust_accuracy.value == r.clean_accuracy.value


def test_poisoning_retrains_a_fresh_copy_of_an_own_model():
    """``structure-poisoning`` of a model the package cannot rebuild by name: re-initialised copies are trained."""
    from robustbench_geo.api import _reinitialised
    from tests.attacks.graph.conftest import sbm_graph

    graph = sbm_graph()
    torch.manual_seed(0)
    gcn = PygGCN(graph.num_features, graph.num_classes).eval()
    before = _state(gcn)
    fresh = _reinitialised(gcn)
    pairs = list(zip(fresh.parameters(), gcn.parameters()))
    assert all(a.shape == b.shape for a, b in pairs)
    assert all(not torch.equal(a, b) for a, b in pairs if a.dim() == 2)  # weights redrawn (biases start at 0)
    short = {"train": {"epochs": 30, "lr": 0.01, "weight_decay": 5e-4, "patience": 30}}
    runs = [evaluate_attack(gcn, graph, "dice", {}, seed=0, mode="poisoning", budget=0.1, checkpoint_meta=short,
                            fresh_model=lambda: _reinitialised(gcn), progress=False) for _ in range(2)]
    _unchanged(gcn, before, training=False)
    assert runs[0].metrics == runs[1].metrics and runs[0].metrics["clean_accuracy"] > 0.5  # retrained, seeded
    with pytest.raises(ValueError, match="expected submodules with reset_parameters"):
        _reinitialised(nn.Sequential(nn.ReLU()))
