"""The same attacks, models and operators on a CUDA device: invariants hold and results match the CPU.

Skipped where no CUDA device is present (CI has none); run on a GPU machine with
``python -m pytest -q tests/test_cuda.py``. Random draws happen on the CPU, so seeded attacks
pick the same parameters on both devices; only floating-point rounding may differ.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision

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


# ---------------------------------------------------------------------------------------------------------------------
# the triton deformable-convolution backend, compiled (tests/ops/triton_interpreter_cases.py runs the same kernels in
# Triton's CPU interpreter) against torchvision, with every feature, in float64 and float32

TRITON_CASES = ["plain3x3", "stride2", "dilation2", "groups2", "offset_groups2", "groups2_og2_nonsquare", "far_outside",
                "kernel1x5", "batch0", "plane_144"]
# (case, modulated, dtype): every case in float64 with a mask, some without, a few in float32 (each distinct
# combination of flags and tile sizes compiles the kernels once, which costs seconds)
TRITON_RUNS = ([(n, True, torch.float64) for n in TRITON_CASES]
               + [(n, False, torch.float64) for n in ("stride2", "groups2_og2_nonsquare", "kernel1x5")]
               + [(n, m, torch.float32) for n, m in (("plain3x3", True), ("groups2_og2_nonsquare", True), ("far_outside", False))])


def _deform_run(args, backend, device):
    """Output and the five gradients on ``device`` (grad_output drawn on the CPU with a fixed seed), on the CPU."""
    from robustbench_geo.ops import deform_conv2d

    leaves = {k: v.detach().clone().to(device).requires_grad_(True) for k, v in args.items() if isinstance(v, torch.Tensor)}
    out = deform_conv2d(**{**args, **leaves}, backend=backend)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    out.backward(g.to(device))
    return {"out": out.detach().cpu(), **{k: v.grad.cpu() for k, v in leaves.items()}}


@pytest.mark.parametrize("name, mask, dtype", TRITON_RUNS, ids=[f"{n}-{'v2' if m else 'v1'}-{str(d)[6:]}" for n, m, d in TRITON_RUNS])
def test_triton_deform_conv_matches_torchvision(name, mask, dtype):
    from tests.ops.test_deform_conv import CASES, _assert_same, _inputs

    args = _inputs(CASES[name], dtype, mask)
    ref = _deform_run(args, "torchvision", "cpu")  # TF32 stays off (PyTorch's default), so float32 is IEEE
    _assert_same(_deform_run(args, "triton", CUDA), ref, 1e-10 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 2e-4)], ids=["float64", "float32"])
def test_triton_deform_conv_many_tiles_matches_torchvision_cuda(dtype, tol):
    """A shape with several row, channel and output tiles, offset groups straddling convolution groups,
    and a split weight gradient, against torchvision's CUDA op (both accumulate in their own order)."""
    from tests.ops.test_deform_conv import _assert_same, _inputs

    case = (6, 48, 17, 15, 40, (3, 3), (1, 1), (1, 1), (1, 1), 2, 3, 2.0)
    args = _inputs(case, dtype, True)
    _assert_same(_deform_run(args, "triton", CUDA), _deform_run(args, "torchvision", CUDA), tol)
    # the module path (channels_last input, TF32 off) as a training step would use it
    from robustbench_geo.ops import DeformConv2d

    layer = DeformConv2d(48, 40, 3, padding=1, groups=2, backend="triton").to(CUDA, dtype)
    x = args["input"].to(CUDA).contiguous(memory_format=torch.channels_last)
    out = layer(x, args["offset"].to(CUDA), args["mask"].to(CUDA))
    ref = torchvision.ops.deform_conv2d(x, args["offset"].to(CUDA), layer.weight, layer.bias, padding=1,
                                        mask=args["mask"].to(CUDA))
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)


def test_deform_cnn_trains_with_the_triton_backend(mnist_root, tmp_path):
    from robustbench_geo.data import load_dataset
    from robustbench_geo.models import build_model, set_deform_backend
    from robustbench_geo.training import TrainConfig, seed_everything, train_image_model

    train = load_dataset("mnist", split="train", subset=512, root=mnist_root, seed=0)
    seed_everything(0)
    model, _ = build_model("deform_cnn", train)
    assert set_deform_backend(model, "triton") == "triton"
    hist = train_image_model(model.to(CUDA), train, TrainConfig(epochs=2, seed=0), device=CUDA, progress=False)
    assert hist[-1]["loss"] < hist[0]["loss"] and all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------------------
# a tiny sweep on CUDA with image AND graph cells (graph cells used to fail: inference tensors in the GCN's cache)

def test_tiny_sweep_with_image_and_graph_cells_on_cuda(tmp_path, mnist_root, cora_root):
    import dataclasses

    from robustbench_geo.sweep import expand, load_config, run_sweep
    from tests.sweep.quick_fixture import shrink

    cfg = shrink(load_config("quick", output=tmp_path / "quick"), train_subset=256, test_subset=16)
    keep = {"clean", "worst_of_10", "dice", "dice_poisoning"}
    cfg = dataclasses.replace(cfg, device=CUDA, attacks={k: a for k, a in cfg.attacks.items() if k in keep},
                              checkpoint_cache=str(tmp_path / "ckpt"))
    summary = run_sweep(cfg, progress=False, threads=1, report=False)
    assert not summary.failed, [r["error"] for r in summary.failed]
    kinds = {r["cell"].dataset_label for r in summary.ran}
    assert "cora" in kinds and "mnist" in kinds, kinds
    assert len(summary.ran) == len(expand(cfg)) == summary.total
