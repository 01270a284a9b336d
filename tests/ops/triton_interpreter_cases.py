"""The ``triton`` deformable-convolution backend in Triton's CPU interpreter, against torchvision and native.

Run by ``tests/ops/test_deform_triton.py`` in a subprocess with ``TRITON_INTERPRET=1`` (Triton
decides at import, and ``import torch`` imports it, whether kernels are compiled or interpreted),
or directly: ``TRITON_INTERPRET=1 python -m pytest tests/ops/triton_interpreter_cases.py``.
The kernels that run here are the ones compiled on a GPU (``tests/test_cuda.py`` runs them
there); the interpreter executes them program by program with NumPy, including the atomic adds
and Triton's int32 overflow checks. It costs per operation, so the shapes are tiny and each case
combines several features.
"""

from __future__ import annotations

import pytest
import torch

from robustbench_geo.ops import deform_conv2d
from robustbench_geo.ops._deform_triton import Tiles, deform_conv2d_triton, interpreter_enabled
from tests.ops.test_deform_conv import CASES, _assert_same, _inputs, _run

pytestmark = pytest.mark.skipif(not interpreter_enabled(), reason="needs TRITON_INTERPRET=1 before torch is imported "
                                                                  "(tests/ops/test_deform_triton.py sets it)")

# (B, C_in, H, W, C_out, kernel, stride, padding, dilation, groups, offset_groups, offset scale in pixels)
EXTRA = {
    # offset groups straddle convolution groups: cpg = 3, Cg = 2
    "groups2_og3_straddle": (1, 6, 4, 4, 4, (2, 2), (1, 1), (1, 1), (1, 1), 2, 3, 1.5),
    # with 16-wide tiles: 3 channel slices (one partial, one across the offset-group border at 18), 2 output-channel
    # tiles, 2 row tiles, and weight-gradient rows split over 2 programs that meet by atomic adds
    "many_tiles": (1, 36, 5, 6, 20, (1, 2), (1, 1), (0, 1), (1, 2), 1, 2, 1.0),
    "partial": (1, 4, 4, 4, 3, (2, 2), (1, 1), (1, 1), (1, 1), 1, 2, 1.0),
}
SMALL_TILES = {"many_tiles": Tiles(16, 16, 16, weight_rows=16)}

# (case, modulated): every feature of the op at least once, each case compared in float64
FLOAT64 = [("plain3x3", True), ("stride2", False), ("dilation2", True), ("groups2_og2_nonsquare", True),
           ("groups2_og3_straddle", False), ("far_outside", True), ("kernel1x5", False), ("batch0", True),
           ("many_tiles", True)]


def _case(name):
    return CASES.get(name) or EXTRA[name]


def _run_triton(args, name, grad_seed=1, needs=None):
    """Output and gradients of the triton backend (``needs``: names of the leaves that require grad)."""
    leaves = {k: v.detach().clone().requires_grad_(needs is None or k in needs)
              for k, v in args.items() if isinstance(v, torch.Tensor)}
    out = deform_conv2d_triton(**{**args, **leaves}, tiles=SMALL_TILES.get(name))
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=out.dtype)
    if out.requires_grad:
        out.backward(g)
    return {"out": out.detach(), **{k: v.grad for k, v in leaves.items() if v.requires_grad}}


@pytest.mark.parametrize("name, modulated", FLOAT64, ids=[f"{n}-{'v2' if m else 'v1'}" for n, m in FLOAT64])
def test_matches_torchvision_and_native_float64(name, modulated):
    args = _inputs(_case(name), torch.float64, modulated)
    ours = _run_triton(args, name)
    _assert_same(ours, _run(args, "torchvision"), 1e-10)
    _assert_same(ours, _run(args, "native"), 1e-10)


@pytest.mark.parametrize("name", ["plain3x3", "groups2_og2_nonsquare"])
def test_matches_torchvision_float32(name):
    args = _inputs(_case(name), torch.float32)
    _assert_same(_run_triton(args, name), _run(args, "torchvision"), 1e-5)


def test_only_some_gradients_and_non_contiguous_inputs():
    args = _inputs(EXTRA["partial"], torch.float64)
    args["input"] = args["input"].contiguous(memory_format=torch.channels_last)
    args["offset"] = args["offset"].transpose(2, 3).contiguous().transpose(2, 3)
    assert not args["offset"].is_contiguous()
    ref = _run(args, "torchvision")
    for needs in (("offset", "mask"), ("input", "weight")):
        ours = _run_triton(args, "partial", needs=needs)
        _assert_same(ours, {k: ref[k] for k in ("out", *needs)}, 1e-10)


def test_dispatcher_and_dtype_check():
    args = _inputs(CASES["plain3x3"], torch.float64)
    ref = deform_conv2d(**args, backend="torchvision")
    torch.testing.assert_close(deform_conv2d(**args, backend="triton"), ref, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="expected float32 or float64 for backend='triton', got torch.float16"):
        deform_conv2d(**{k: v.half() if isinstance(v, torch.Tensor) else v for k, v in args.items()}, backend="triton")
