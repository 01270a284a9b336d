"""Backend dispatch of ``deform_conv2d``, and every CPU backend against a loop-based reference.

Dispatch is checked by what actually runs: each backend in ``BACKENDS`` is replaced by a wrapper
that records its name and calls the real backend, so a module or model that ignores its
``backend`` setting, or an ``auto`` that resolves to one name and runs another, fails here.
The reference is written from the definition (DCNv1/v2: per-tap offsets in pixels, bilinear
sampling, zero outside ``(-1, H) x (-1, W)``, optional modulation), independent of torchvision.
"""

from __future__ import annotations

import math

import pytest
import torch

from robustbench_geo.models import create_model, set_deform_backend
from robustbench_geo.ops import DeformConv2d, deform_conv, deform_conv2d, resolve_backend

F64 = torch.float64


def _bilinear(img: torch.Tensor, y: float, x: float) -> float:
    h, w = img.shape
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    val = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                val += wy * wx * float(img[yy, xx])
    return val


def reference_deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask):
    """Loop over output pixels, channels and taps (float64)."""
    b, c, h, w = x.shape
    co, cg, kh, kw = weight.shape
    groups, taps = c // cg, kh * kw
    og = offset.shape[1] // (2 * taps)
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    out = torch.zeros(b, co, ho, wo, dtype=F64)
    for n in range(b):
        for o in range(co):
            g = o // (co // groups)
            for i in range(ho):
                for j in range(wo):
                    acc = float(bias[o]) if bias is not None else 0.0
                    for cl in range(cg):
                        ch = g * cg + cl
                        grp = ch // (c // og)
                        for ki in range(kh):
                            for kj in range(kw):
                                k = ki * kw + kj
                                dy, dx = float(offset[n, 2 * (grp * taps + k), i, j]), float(offset[n, 2 * (grp * taps + k) + 1, i, j])
                                v = _bilinear(x[n, ch], i * stride - padding + ki * dilation + dy,
                                              j * stride - padding + kj * dilation + dx)
                                m = float(mask[n, grp * taps + k, i, j]) if mask is not None else 1.0
                                acc += float(weight[o, cl, ki, kj]) * v * m
                    out[n, o, i, j] = acc
    return out


CASES = {  # name: (C_in, C_out, groups, offset_groups, stride, padding, dilation, H, W, modulated)
    "dcn_v1": (2, 3, 1, 1, 1, 1, 1, 5, 5, False),
    "v2_stride2_groups": (4, 4, 2, 2, 2, 1, 1, 6, 5, True),
    "dilated_no_padding": (2, 2, 1, 2, 1, 0, 2, 7, 6, True),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend", ["native", "torchvision"])
def test_cpu_backends_match_the_loop_reference(case, backend):
    c, co, groups, og, stride, padding, dilation, h, w, modulated = CASES[case]
    g = torch.Generator().manual_seed(sorted(CASES).index(case))
    ho = (h + 2 * padding - dilation * 2 - 1) // stride + 1
    wo = (w + 2 * padding - dilation * 2 - 1) // stride + 1
    x = torch.rand(1, c, h, w, dtype=F64, generator=g)
    offset = 2.5 * torch.randn(1, 2 * og * 9, ho, wo, dtype=F64, generator=g)  # some taps land outside the image
    weight = torch.randn(co, c // groups, 3, 3, dtype=F64, generator=g)
    bias = torch.randn(co, dtype=F64, generator=g)
    mask = torch.rand(1, og * 9, ho, wo, dtype=F64, generator=g) if modulated else None
    ref = reference_deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)
    out = deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask, backend=backend)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


@pytest.fixture
def calls(monkeypatch):
    """Record which backend runs; each recorded call still goes to the real backend."""
    seen: list[str] = []
    for name, fn in list(deform_conv.BACKENDS.items()):
        def wrapped(*args, _name=name, _fn=fn, **kwargs):
            seen.append(_name)
            return _fn(*args, **kwargs)

        monkeypatch.setitem(deform_conv.BACKENDS, name, wrapped)
    return seen


def _args():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(1, 2, 5, 5, generator=g), torch.randn(1, 18, 5, 5, generator=g), torch.randn(3, 2, 3, 3, generator=g))


def test_the_resolved_backend_is_the_one_that_runs(calls):
    x, off, w = _args()
    deform_conv2d(x, off, w, padding=1)  # auto
    assert calls == [resolve_backend("auto", "cpu")]
    for name in ("native", "torchvision", "native"):  # the CPU backends, each call to the one named
        calls.clear()
        deform_conv2d(x, off, w, padding=1, backend=name)
        assert calls == [name]


def test_modules_and_models_run_the_backend_they_were_given(calls):
    x, off, w = _args()
    layer = DeformConv2d(2, 3, 3, padding=1, backend="torchvision")
    layer(x, off)
    layer.backend = "native"
    layer(x, off)
    assert calls == ["torchvision", "native"]
    torch.manual_seed(0)
    model = create_model("deform_cnn", in_channels=1, num_classes=10, image_size=(28, 28)).eval()
    for backend in ("torchvision", "native"):
        calls.clear()
        assert set_deform_backend(model, backend) == backend
        with torch.no_grad():
            model(torch.rand(2, 1, 28, 28))
        assert calls and set(calls) == {backend}  # every deformable layer switched, none left behind


def test_auto_never_resolves_to_a_backend_the_device_cannot_run():
    assert resolve_backend("auto", "cpu") in deform_conv.BACKENDS
    cuda = resolve_backend("auto", "cuda")
    assert cuda in deform_conv.BACKENDS and cuda != "native"  # native is a CPU kernel
    with pytest.raises(KeyError, match="Did you mean 'native'.*Valid deformable-convolution backends: auto"):
        resolve_backend("nativ")
    with pytest.raises(ValueError, match="divisible by groups"):
        DeformConv2d(3, 4, 3, groups=2)
