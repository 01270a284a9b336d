"""The native deformable convolution against torchvision's op, finite differences and gradcheck."""

import pytest
import torch
import torchvision
from torch.autograd import gradcheck

from robustbench_geo.ops import DeformConv2d, _deform_kernel, deform_conv2d, get_column_budget, resolve_backend, set_column_budget
from robustbench_geo.ops._deform_native import deform_conv2d_native

# the native backend's two implementations: compiled CPU kernels (where a compiler exists) and pure PyTorch
IMPLS = [pytest.param("kernel", marks=pytest.mark.skipif(not _deform_kernel.available(), reason="no C++ compiler")),
         "torch"]

# (B, C_in, H, W, C_out, kernel, stride, padding, dilation, groups, offset_groups, offset scale in pixels)
CASES = {
    "plain3x3": (2, 4, 7, 7, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, 1.0),
    "stride2": (3, 4, 9, 8, 5, (3, 3), (2, 2), (1, 1), (1, 1), 1, 1, 1.5),
    "dilation2": (2, 3, 8, 9, 4, (3, 3), (1, 1), (2, 2), (2, 2), 1, 1, 1.5),
    "groups2": (2, 4, 6, 6, 6, (3, 3), (1, 1), (1, 1), (1, 1), 2, 1, 1.0),
    "offset_groups2": (2, 6, 6, 7, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, 2, 1.0),
    "groups2_og2_nonsquare": (2, 4, 7, 6, 6, (3, 2), (2, 1), (1, 2), (1, 2), 2, 2, 2.0),
    "far_outside": (2, 3, 5, 5, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, 8.0),
    "kernel1x5": (1, 2, 5, 8, 3, (1, 5), (1, 2), (0, 2), (1, 1), 1, 2, 1.0),
    "batch0": (0, 4, 6, 6, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, 1.0),
    "plane_144": (2, 3, 12, 12, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, 1.0),  # batched-GEMM output path (L >= 128)
}


def _inputs(case, dtype, mask=True, seed=0):
    b, c, h, w, co, (kh, kw), (sh, sw), (ph, pw), (dh, dw), groups, og, scale = case
    g = torch.Generator().manual_seed(seed)
    ho, wo = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    x = torch.rand(b, c, h, w, generator=g, dtype=dtype)
    off = torch.randn(b, 2 * og * kh * kw, ho, wo, generator=g, dtype=dtype) * scale
    weight = torch.randn(co, c // groups, kh, kw, generator=g, dtype=dtype)
    bias = torch.randn(co, generator=g, dtype=dtype)
    m = torch.rand(b, og * kh * kw, ho, wo, generator=g, dtype=dtype) if mask else None
    return dict(input=x, offset=off, weight=weight, bias=bias, mask=m, stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw))


def _run(args, backend, grad_seed=1):
    """Output and gradients w.r.t. input, offset, weight, bias (and mask) for a fixed random grad_output."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in args.items() if isinstance(v, torch.Tensor)}
    if backend in ("kernel", "torch"):  # the native backend with a given implementation
        out = deform_conv2d_native(**{**args, **leaves}, impl=backend)
    else:
        out = deform_conv2d(**{**args, **leaves}, backend=backend)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=out.dtype)
    out.backward(g)
    return {"out": out.detach(), **{k: v.grad for k, v in leaves.items()}}


def _assert_same(ours, ref, tol):
    assert ours.keys() == ref.keys()
    for k in ref:
        assert ours[k].shape == ref[k].shape, k
        torch.testing.assert_close(ours[k], ref[k], rtol=tol, atol=tol, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("mask", [True, False], ids=["v2", "v1"])
def test_matches_torchvision_float64(name, mask, impl):
    args = _inputs(CASES[name], torch.float64, mask)
    _assert_same(_run(args, impl), _run(args, "torchvision"), 1e-10)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", ["plain3x3", "groups2_og2_nonsquare", "far_outside"])
def test_matches_torchvision_float32(name, impl):
    args = _inputs(CASES[name], torch.float32)
    _assert_same(_run(args, impl), _run(args, "torchvision"), 1e-5)


def test_auto_uses_the_compiled_kernel_when_available():
    args = _inputs(CASES["stride2"], torch.float64)
    if _deform_kernel.available():
        _assert_same(_run(args, "native"), _run(args, "kernel"), 0)
    with pytest.raises(ValueError, match="impl: expected 'auto', 'kernel' or 'torch'"):
        deform_conv2d_native(args["input"], args["offset"], args["weight"], impl="cuda")


@pytest.mark.parametrize("impl", IMPLS)
def test_non_contiguous_inputs(impl):
    args = _inputs(CASES["groups2_og2_nonsquare"], torch.float64)
    ref = _run(args, "torchvision")
    nc = dict(args)
    nc["input"] = args["input"].contiguous(memory_format=torch.channels_last)
    nc["offset"] = args["offset"].transpose(2, 3).contiguous().transpose(2, 3)
    nc["mask"] = torch.cat([args["mask"], args["mask"]], 1)[:, ::2]  # strided channel view
    nc["mask"].copy_(args["mask"])
    nc["weight"] = args["weight"].permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert not (nc["input"].is_contiguous() or nc["offset"].is_contiguous() or nc["mask"].is_contiguous())
    _assert_same(_run(nc, impl), ref, 1e-10)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("budget", [200, 5000, 8000])
def test_column_budget_chunks_give_same_result(budget, impl):
    args = _inputs(CASES["groups2_og2_nonsquare"], torch.float64)
    ref = _run(args, impl)
    old = set_column_budget(budget)
    try:
        assert get_column_budget() == budget
        _assert_same(_run(args, impl), ref, 1e-12)
    finally:
        set_column_budget(old)
    with pytest.raises(ValueError, match="expected a positive number of bytes"):
        set_column_budget(0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mask", [True, False], ids=["v2", "v1"])
def test_gradcheck(mask, impl):
    case = (2, 4, 4, 5, 2, (3, 2), (2, 1), (1, 1), (1, 2), 2, 2, 1.2)
    args = _inputs(case, torch.float64, mask, seed=3)
    names = ["input", "offset", "weight", "bias"] + (["mask"] * mask)
    leaves = [args[n].clone().requires_grad_(True) for n in names]

    def fn(*ts):
        return deform_conv2d_native(**{**args, **dict(zip(names, ts))}, impl=impl)

    assert gradcheck(fn, leaves, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("impl", IMPLS)
def test_border_gradient_is_the_derivative_of_the_forward(impl):
    """Sampling rows in (-1, 0) and exactly at -1 (vision issue #6885): compare with finite differences.

    Output pixel (0, 0) of a 1x1 convolution samples the input at (offset_y, offset_x). In (-1, 0)
    the op is smooth and our gradient must equal the central difference; at exactly -1 (a kink:
    the value is 0 below it) it must equal the right-hand difference, the ``floor`` convention used
    at every integer coordinate. torchvision returns the same numbers here (the original DCN code
    returns 0 at -1 instead).
    """
    x = torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    weight = torch.tensor([1.0, -0.5], dtype=torch.float64).view(1, 2, 1, 1)
    mask = torch.full((1, 1, 4, 4), 0.7, dtype=torch.float64)

    def value(off):
        return deform_conv2d_native(x, off, weight, mask=mask, impl=impl)[0, 0, 0, 0]

    eps = 1e-6
    for point, one_sided in [((-0.5, 1.3), False), ((1.3, -0.25), False), ((-0.7, -0.6), False),
                             ((-1.0, 1.3), True), ((2.0, -1.0), True)]:
        off = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
        off[0, :, 0, 0] = torch.tensor(point, dtype=torch.float64)
        leaf = off.clone().requires_grad_(True)
        value(leaf).backward()
        for c in range(2):
            hi, lo = off.clone(), off.clone()
            hi[0, c, 0, 0] += eps
            lo[0, c, 0, 0] -= 0 if one_sided else eps
            fd = (value(hi) - value(lo)) / (eps if one_sided else 2 * eps)
            assert abs(leaf.grad[0, c, 0, 0] - fd) < 1e-6, (point, c, leaf.grad[0, c, 0, 0].item(), fd.item())
        assert leaf.grad[0, :, 0, 0].abs().sum() > 0.01  # the point really is in the image's reach


def test_zero_offsets_equal_regular_convolution():
    torch.manual_seed(0)
    x, w = torch.rand(2, 3, 8, 8, dtype=torch.float64), torch.randn(5, 3, 3, 3, dtype=torch.float64)
    off = torch.zeros(2, 18, 4, 4, dtype=torch.float64)
    ref = torch.nn.functional.conv2d(x, w, stride=2, padding=1)
    torch.testing.assert_close(deform_conv2d(x, off, w, stride=2, padding=1, backend="native"), ref, rtol=1e-12, atol=1e-12)


def test_auto_picks_native_on_cpu_and_module_uses_it():
    # the pure-PyTorch fallback is slower than torchvision, so auto takes native only with its kernel
    assert resolve_backend("auto", "cpu") == ("native" if _deform_kernel.available() else "torchvision")
    assert resolve_backend("auto", "cuda") == "torchvision"
    layer = DeformConv2d(4, 6, 3, padding=1, groups=2)
    args = _inputs(CASES["groups2"], torch.float32)
    out = layer(args["input"], args["offset"], args["mask"])
    ref = torchvision.ops.deform_conv2d(args["input"], args["offset"], layer.weight, layer.bias, padding=1, mask=args["mask"])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change, message", [
    (dict(offset=torch.zeros(2, 17, 7, 7)), r"offset: expected shape \(2, 2 \* offset_groups \* 9, 7, 7\)"),
    (dict(mask=torch.zeros(2, 8, 7, 7)), r"mask: expected shape \(2, 9, 7, 7\)"),
    (dict(weight=torch.zeros(6, 3, 3, 3)), r"weight: expected shape \(C_out, C_in / groups, kh, kw\)"),
    (dict(bias=torch.zeros(5)), r"bias: expected shape \(6,\)"),
    (dict(input=torch.zeros(4, 7, 7)), r"input: expected a 4-D tensor, got \(4, 7, 7\)"),
    (dict(mask=torch.zeros(2, 9, 7, 7, dtype=torch.float64)), "mask: expected dtype torch.float32"),
])
def test_bad_arguments(change, message):
    args = _inputs(CASES["plain3x3"], torch.float32)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        deform_conv2d(**args, backend="native")


def test_checkpoint_records_the_resolved_backend(mnist_root, tmp_path):
    from robustbench_geo.checkpoint import load_checkpoint
    from robustbench_geo.training import fit

    if not _deform_kernel.available():
        pytest.skip("no C++ compiler: auto resolves to torchvision")
    res = fit("deform_cnn", "mnist", epochs=1, subset=32, test_subset=32, batch_size=16, progress=False,
              data_root=mnist_root, out=tmp_path / "d")
    assert res.meta["deform_backend"] == "native"
    _, meta = load_checkpoint(tmp_path / "d")
    assert meta["deform_backend"] == "native"


def test_without_a_compiler_auto_falls_back_to_torchvision(monkeypatch):
    monkeypatch.setitem(_deform_kernel._state, "lib", None)  # as if no C++ compiler were installed
    assert not _deform_kernel.available()
    assert resolve_backend("auto", "cpu") == "torchvision"
    args = _inputs(CASES["stride2"], torch.float64)
    _assert_same(_run(args, "native"), _run(args, "torchvision"), 1e-10)  # explicit native: pure PyTorch
    with pytest.raises(RuntimeError, match="needs a C.. compiler"):
        deform_conv2d_native(args["input"], args["offset"], args["weight"], impl="kernel")

