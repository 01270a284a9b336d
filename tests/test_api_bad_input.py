"""Bad input to the Python API: one row per case, the same promise as the CLI's table.

Every row calls ``rbg.benchmark``/``rbg.evaluate``/``rbg.certify`` with tensors or graphs passed
directly and checks that it raises (never returns a number), with the error type and the words of
the message, which names the argument. The model maps NaN to 0 on purpose: NaN images must be
refused by the checks, not by the model's output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn as nn

import robustbench_geo as rbg
from robustbench_geo.smoothing import SmoothingConfig


class NanToZero(nn.Module):
    """A linear classifier that turns NaN pixels into 0 (so NaN input would otherwise give a number)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(torch.nan_to_num(x, nan=0.0).flatten(1))


class GraphLinear(nn.Module):
    def __init__(self, features: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(features, classes)

    def forward(self, x, edge_index, edge_weight=None):
        return self.fc(x)


@pytest.fixture(scope="module")
def images(mnist_root):
    from robustbench_geo.data import load_dataset

    ds = load_dataset("mnist", split="test", root=mnist_root, subset=40, seed=0)
    return ds.images, ds.labels


@pytest.fixture(scope="module")
def graph():
    from tests.attacks.graph.conftest import sbm_graph

    return sbm_graph()


class _Pairs(torch.utils.data.Dataset):
    """A plain torch Dataset of (image, label) pairs."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def _nan_pixel(x):
    x = x.clone()
    x[3, 0, 5, 5] = float("nan")
    return x


def _pyg(graph, **changes):
    data = graph.to_pyg()
    for k, v in changes.items():
        setattr(data, k, v(getattr(data, k)))
    return data


@dataclass
class Case:
    id: str
    call: Callable  # (model, (x, y), graph) -> result
    error: type
    words: tuple[str, ...]


M = NanToZero
CASES = [
    Case("nan-images", lambda x, y, g: rbg.benchmark(M(), (x * float("nan"), y), "none"), ValueError,
         ("images", "finite", "NaN")),
    Case("all-nan-evaluate", lambda x, y, g: rbg.evaluate(M(), (torch.full_like(x, float("nan")), y)), ValueError,
         ("images", "31360 NaN")),
    Case("one-nan-pixel", lambda x, y, g: rbg.evaluate(M(), (_nan_pixel(x), y), "grid", angle_steps=3), ValueError,
         ("images", "1 NaN/infinite")),
    Case("inf-pixel", lambda x, y, g: rbg.evaluate(M(), (x + float("inf"), y)), ValueError, ("images", "finite")),
    Case("max-1.0001", lambda x, y, g: rbg.evaluate(M(), (x * 1.0001, y)), ValueError, ("images", "1.0001")),
    Case("uint8-images", lambda x, y, g: rbg.evaluate(M(), ((x * 255).byte(), y)), ValueError, ("images", "uint8", "255")),
    Case("3d-images", lambda x, y, g: rbg.evaluate(M(), (x[:, 0], y)), ValueError, ("images", "(N, C, H, W)", "(40, 28, 28)")),
    Case("list-images", lambda x, y, g: rbg.evaluate(M(), (x.tolist(), y)), TypeError, ("images", "torch.Tensor", "list")),
    Case("list-pair", lambda x, y, g: rbg.evaluate(M(), (x.tolist(), y.tolist())), TypeError,
         ("data", "(list, list)", "torch.tensor")),
    Case("empty-images", lambda x, y, g: rbg.evaluate(M(), (x[:0], y[:0])), ValueError, ("images", "at least one")),
    Case("bool-labels", lambda x, y, g: rbg.evaluate(M(), (x, y > 4)), ValueError, ("labels", "torch.bool")),
    Case("float-labels", lambda x, y, g: rbg.evaluate(M(), (x, y.float())), ValueError, ("labels", "float32")),
    Case("negative-labels", lambda x, y, g: rbg.evaluate(M(), (x, y - 1)), ValueError, ("labels", ">= 0", "-1")),
    Case("short-labels", lambda x, y, g: rbg.benchmark(M(), (x, y[:30]), "none", n_examples=20), ValueError,
         ("labels", "(40,)", "(30,)")),
    Case("labels-beyond-logits", lambda x, y, g: rbg.evaluate(M(), (x, y + 10)), ValueError, ("at least", "classes")),
    Case("n-examples-nan", lambda x, y, g: rbg.benchmark(M(), (x, y), "none", n_examples=float("nan")), ValueError,
         ("n_examples", "finite")),
    Case("n-examples-zero", lambda x, y, g: rbg.benchmark(M(), (x, y), "none", n_examples=0), ValueError, ("n_examples",)),
    Case("n-examples-beyond-tensors", lambda x, y, g: rbg.benchmark(M(), (x, y), "none", n_examples=100), ValueError,
         ("n_examples", "40 given", "[1, 40]", "got 100")),
    Case("n-examples-beyond-dataset", lambda x, y, g: rbg.benchmark(M(), _Pairs(x, y), "none", n_examples=100),
         ValueError, ("n_examples", "40 given", "got 100")),
    Case("meta-device-model", lambda x, y, g: rbg.evaluate(M().to("meta"), (x, y)), ValueError,
         ("model", "meta device", "7850")),
    Case("params-list", lambda x, y, g: rbg.benchmark(M(), (x, y), "grid", params=[1, 2]), TypeError, ("params", "dict")),
    Case("device-typo", lambda x, y, g: rbg.benchmark(M(), (x, y), "none", device="cdua"), ValueError, ("device", "cdua")),
    Case("graph-empty-test-mask", lambda x, y, g: rbg.evaluate(GraphLinear(g.num_features, 3),
                                                               _pyg(g, test_mask=torch.zeros_like)),
         ValueError, ("test node", "test mask")),
    Case("graph-bool-labels", lambda x, y, g: rbg.evaluate(GraphLinear(g.num_features, 3), _pyg(g, y=lambda t: t > 0)),
         ValueError, ("data.y", "torch.bool")),
    Case("graph-float-labels", lambda x, y, g: rbg.evaluate(GraphLinear(g.num_features, 3), _pyg(g, y=lambda t: t.float())),
         ValueError, ("data.y", "float32")),
    Case("graph-nan-features", lambda x, y, g: rbg.evaluate(GraphLinear(g.num_features, 3),
                                                            _pyg(g, x=lambda t: t * float("nan"))),
         ValueError, ("data.x", "finite")),
    # certification goes through the same checks as the attacks
    Case("certify-sigma-inf", lambda x, y, g: rbg.certify(M(), x[:2], y[:2], "rotation", max_angle_deg=10,
                                                          config=SmoothingConfig(sigma=float("inf"))),
         ValueError, ("sigma", "finite")),
    Case("certify-angle-200", lambda x, y, g: rbg.certify(M(), x[:2], y[:2], "rotation", max_angle_deg=200),
         ValueError, ("max_angle_deg", "180", "200")),
    Case("certify-cells-0", lambda x, y, g: rbg.certify(M(), x[:2], y[:2], "rotation",
                                                        config=SmoothingConfig(cells=0)),
         ValueError, ("cells", ">= 1", "got 0")),
    Case("certify-samples-0", lambda x, y, g: rbg.certify(M(), x[:2], y[:2], "rotation", config=SmoothingConfig(n=0)),
         ValueError, ("n", ">= 1", "got 0")),
    Case("certify-nan-images", lambda x, y, g: rbg.certify(M(), _nan_pixel(x)[:4], y[:4], "rotation"), ValueError,
         ("images", "NaN")),
    Case("certify-bool-labels", lambda x, y, g: rbg.certify(M(), x[:2], y[:2] > 4, "rotation"), ValueError,
         ("labels", "torch.bool")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_api_input(case: Case, images, graph):
    x, y = images
    with pytest.raises(case.error) as info:
        case.call(x, y, graph)
    message = str(info.value)
    for word in case.words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "\n" not in message


def test_the_default_n_examples_takes_all_of_fewer_images(images):
    """The default (1000) is "at most": 40 tensors give n=40; only an explicit larger number is an error."""
    x, y = images
    r = rbg.benchmark(M(), (x, y), "none")
    assert r.clean_accuracy.n == 40 and r.config["n_examples"] == 1000


def test_numpy_arrays_are_converted(images):
    x, y = images
    r = rbg.evaluate(M(), (x.numpy(), y.numpy()))
    assert r.clean_accuracy.n == 40


def test_a_model_in_train_mode_is_evaluated_in_eval_mode_and_the_result_says_so(images):
    x, y = images
    m = nn.Sequential(nn.Flatten(), nn.Dropout(0.9), nn.Linear(784, 10)).train()
    r = rbg.evaluate(m, (x, y))
    assert m.training  # put back
    assert r.config["model"]["given_in_train_mode"] is True and r.config["model"]["evaluated_in"] == "eval mode"
    assert "the model came in train mode" in str(r)
    assert rbg.evaluate(m.eval(), (x, y)).clean_accuracy.value == r.clean_accuracy.value  # dropout was off
    assert "train mode" not in str(rbg.evaluate(m.eval(), (x, y)))
