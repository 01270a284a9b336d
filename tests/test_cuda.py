"""The same attacks, models and operators on a CUDA device: invariants hold and results match the CPU.

Skipped where no CUDA device is present (CI has none); run on a GPU machine with
``python -m pytest -q tests/test_cuda.py``. Random draws happen on the CPU, so seeded attacks
pick the same parameters on both devices; only floating-point rounding may differ.
"""

from __future__ import annotations

import copy

import pytest
import torch

from robustbench_geo.attacks import create_attack
from robustbench_geo.evaluation import evaluate_attack
from robustbench_geo.attacks.image.search import params_in_box
from tests.attacks.graph.conftest import sbm_graph, train_small
from tests.attacks.graph.test_invariants import reference_check
from tests.attacks.image.conftest import mnist_small, tiny_model  # noqa: F401  (fixtures of the image-attack tests)
from tests.attacks.image.test_affine import BUDGET, SMALL, _make

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = "cuda"


@pytest.fixture(scope="module")
def cuda_model(tiny_model):
    return copy.deepcopy(tiny_model).to(CUDA).eval()


@pytest.mark.parametrize("name", list(SMALL))
def test_image_attacks_on_cuda_verify_and_match_cpu(name, tiny_model, cuda_model, mnist_small):
    x, y = mnist_small.images[:32], mnist_small.labels[:32]
    res = _make(name, cuda_model)(x.to(CUDA), y.to(CUDA))
    assert res.adversarial.device.type == "cuda" and res.success.device.type == "cuda"
    with torch.no_grad():
        pred = cuda_model(res.adversarial.clone()).argmax(1)
    assert torch.equal(res.success, pred != y.to(CUDA))
    assert res.adversarial.min() >= 0 and res.adversarial.max() <= 1
    if name != "stadv":
        assert params_in_box({k: v.cpu() for k, v in res.params.items()}, BUDGET[name])
        assert torch.allclose(res.replay(x.to(CUDA)).clamp(0, 1), res.adversarial, atol=1e-5)
    ref = _make(name, tiny_model)(x, y)
    # the same seeded search on both devices: success agrees except where rounding flips a near-tie
    assert int((res.success.cpu() != ref.success).sum()) <= 2
    if name in ("worst_of_k", "random"):  # draws come from a CPU generator: identical parameters
        for k, v in ref.params.items():
            assert torch.allclose(res.params[k].cpu(), v, atol=1e-5), k


def test_image_runner_on_cuda(tiny_model, mnist_small):
    cpu = evaluate_attack(tiny_model, mnist_small, "worst_of_k", {"k": 5}, seed=1, progress=False)
    gpu = evaluate_attack(copy.deepcopy(tiny_model), mnist_small, "worst_of_k", {"k": 5}, seed=1, device=CUDA,
                          progress=False)
    assert gpu.metrics["verification_mismatches"] == 0
    assert abs(gpu.metrics["robust_accuracy"] - cpu.metrics["robust_accuracy"]) <= 2 / len(mnist_small)


@pytest.mark.parametrize("mask", [False, True])
def test_deform_conv_cuda_matches_native_cpu(mask):
    from robustbench_geo.ops import deform_conv2d

    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 8, 11, 10, generator=g, dtype=torch.float64)
    off = torch.randn(4, 2 * 9, 11, 10, generator=g, dtype=torch.float64) * 2
    w = torch.randn(6, 8, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    m = torch.rand(4, 9, 11, 10, generator=g, dtype=torch.float64) if mask else None
    outs = {}
    for dev, backend in (("cpu", "native"), (CUDA, "auto")):
        leaves = [t.detach().clone().to(dev).requires_grad_(True) for t in (x, off, w, b)]
        mm = None if m is None else m.clone().to(dev).requires_grad_(True)
        out = deform_conv2d(leaves[0], leaves[1], leaves[2], leaves[3], padding=(1, 1), mask=mm, backend=backend)
        out.backward(torch.ones_like(out))
        outs[dev] = [out.detach().cpu()] + [t.grad.cpu() for t in leaves] + ([mm.grad.cpu()] if mm is not None else [])
    for a, c in zip(outs["cpu"], outs[CUDA]):
        assert torch.allclose(a, c, atol=1e-8, rtol=1e-8)


def test_deform_cnn_trains_and_records_backend_on_cuda(mnist_root, tmp_path):
    from robustbench_geo.checkpoint import load_checkpoint
    from robustbench_geo.training import fit

    res = fit("deform_cnn", "mnist", epochs=1, subset=512, test_subset=256, device=CUDA, out=tmp_path / "m",
              data_root=mnist_root, progress=False)
    assert res.meta["deform_backend"] == "torchvision" and res.meta["device"].startswith("cuda")
    model, meta = load_checkpoint(tmp_path / "m", device=CUDA)
    assert next(model.parameters()).device.type == "cuda"


GRAPH = [("pgd", {"steps": 5, "samples": 3}), ("prbcd", {"block_size": 500, "epochs": 8, "epochs_resampling": 4}),
         ("metattack", {"train_iters": 10}), ("dice", {})]


@pytest.mark.parametrize("name,params", GRAPH, ids=[g[0] for g in GRAPH])
def test_graph_attacks_on_cuda_respect_invariants(name, params):
    graph = sbm_graph(seed=0)
    model, _ = train_small("gcn", graph)
    model = model.to(CUDA)
    res = create_attack(name, model, budget_edge_fraction=0.1, **params)(graph, seed=0)
    reference_check(graph, res, res.budget)
    assert res.insertions.shape[1] + res.deletions.shape[1] > 0


def test_targeted_attacks_on_cuda_respect_invariants():
    graph = sbm_graph(seed=1)
    model, _ = train_small("gcn", graph)
    target = int(graph.idx_test[0])
    for att in (create_attack("nettack", None, features=True), create_attack("gradargmax", model.to(CUDA))):
        res = att(graph, target, seed=0)
        reference_check(graph, res, res.budget)
        assert (torch.cat([res.insertions, res.deletions], 1) == target).any(0).all()
