"""Deformable RoI pooling against a loop-based reference, torchvision at zero offset, and gradcheck."""

import math

import pytest
import torch
import torchvision.ops as tvops

from robustbench_geo.ops import DeformRoIPool2d, PSDeformRoIPool2d, deform_roi_pool, ps_deform_roi_pool


def _bilinear(fmap, y, x):
    """Value of ``fmap`` (H, W) at (y, x): 0 outside [-1, H] x [-1, W], clamped to the border inside."""
    h, w = fmap.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * fmap[y0, x0] + (1 - ly) * lx * fmap[y0, x1]
            + ly * (1 - lx) * fmap[y1, x0] + ly * lx * fmap[y1, x1])


def reference(input, rois, offset, kh, kw, scale, s, gamma, ps):
    """Loops over RoIs, channels, bins and samples."""
    c_out = input.shape[1] // (kh * kw) if ps else input.shape[1]
    out = torch.zeros(rois.shape[0], c_out, kh, kw, dtype=torch.float64)
    for r, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        sx, sy = x1 * scale - 0.5, y1 * scale - 0.5
        rw, rh = x2 * scale - 0.5 - sx, y2 * scale - 0.5 - sy
        for c in range(c_out):
            for i in range(kh):
                for j in range(kw):
                    cin = (c * kh + i) * kw + j if ps else c
                    fmap = input[int(b), cin].double()
                    dy = 0.0 if offset is None else gamma * rh * float(offset[r, 0, i, j])
                    dx = 0.0 if offset is None else gamma * rw * float(offset[r, 1, i, j])
                    acc = 0.0
                    for iy in range(s):
                        for ix in range(s):
                            y = sy + i * rh / kh + dy + (iy + 0.5) * rh / kh / s
                            x = sx + j * rw / kw + dx + (ix + 0.5) * rw / kw / s
                            acc += float(_bilinear(fmap, y, x))
                    out[r, c, i, j] = acc / (s * s)
    return out


def _rois(n, h, w, scale, gen, batch=2):
    b = torch.randint(0, batch, (n,), generator=gen).double()
    p1 = torch.rand(n, 2, generator=gen, dtype=torch.float64) * torch.tensor([w, h]) / scale * 0.7 - 2
    size = 1 + torch.rand(n, 2, generator=gen, dtype=torch.float64) * torch.tensor([w, h]) / scale * 0.6
    return torch.cat([b[:, None], p1, p1 + size], dim=1)


@pytest.mark.parametrize("ps", [False, True])
@pytest.mark.parametrize("kh,kw,s", [(3, 3, 2), (2, 3, 1)])
def test_matches_loop_reference(ps, kh, kw, s):
    gen = torch.Generator().manual_seed(0)
    c = 2 * kh * kw if ps else 3
    x = torch.randn(2, c, 7, 9, generator=gen, dtype=torch.float64)
    rois = _rois(5, 7, 9, 0.5, gen)
    off = torch.randn(5, 2, kh, kw, generator=gen, dtype=torch.float64) * 3  # large: bins leave the map too
    fn = ps_deform_roi_pool if ps else deform_roi_pool
    got = fn(x, rois, off, (kh, kw), spatial_scale=0.5, sampling_ratio=s, gamma=0.1)
    want = reference(x, rois, off, kh, kw, 0.5, s, 0.1, ps)
    torch.testing.assert_close(got, want)
    # float32 input, non-contiguous input
    got32 = fn(x.float().transpose(2, 3).contiguous().transpose(2, 3), rois.float(), off.float(), (kh, kw),
               spatial_scale=0.5, sampling_ratio=s)
    torch.testing.assert_close(got32.double(), want, atol=1e-5, rtol=1e-4)


def test_zero_offset_equals_torchvision():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 18, 10, 12, generator=gen)
    rois = _rois(6, 10, 12, 0.25, gen).float()
    plain = deform_roi_pool(x, rois, torch.zeros(6, 2, 3, 3), 3, spatial_scale=0.25, sampling_ratio=2)
    torch.testing.assert_close(plain, tvops.roi_align(x, rois, 3, 0.25, 2, aligned=True), atol=1e-5, rtol=1e-5)
    ps = ps_deform_roi_pool(x, rois, None, 3, spatial_scale=0.25, sampling_ratio=2)
    torch.testing.assert_close(ps, tvops.ps_roi_align(x, rois, 3, 0.25, 2), atol=1e-5, rtol=1e-5)


def test_offsets_are_normalised_by_roi_size():
    """The same normalised offset moves a bin by the same fraction of a small and a large RoI."""
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(1, 1, 1, 1)  # value = 8 y + x: linear, so pooling is exact
    rois = torch.tensor([[0, 1.0, 1.0, 3.0, 3.0], [0, 1.0, 1.0, 5.0, 5.0]])
    off = torch.zeros(2, 2, 1, 1)
    off[:, 1] = 1.0  # dx = gamma * roi_w
    base = deform_roi_pool(x, rois, None, 1, sampling_ratio=2, gamma=0.5)
    moved = deform_roi_pool(x, rois, off, 1, sampling_ratio=2, gamma=0.5)
    assert torch.allclose(moved - base, torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))  # 0.5 * width 2 and 4


@pytest.mark.parametrize("ps", [False, True])
def test_gradcheck_float64(ps):
    gen = torch.Generator().manual_seed(2)
    c = 2 * 4 if ps else 2
    x = torch.randn(2, c, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = _rois(3, 5, 6, 1.0, gen)
    off = (torch.randn(3, 2, 2, 2, generator=gen, dtype=torch.float64) * 0.7).requires_grad_()
    fn = ps_deform_roi_pool if ps else deform_roi_pool
    assert torch.autograd.gradcheck(lambda a, o: fn(a, rois, o, 2, 1.0, 2, 0.1), (x, off))


def test_empty_rois_and_bad_input():
    x = torch.rand(1, 4, 5, 5)
    assert deform_roi_pool(x, torch.zeros(0, 5), None, 2).shape == (0, 4, 2, 2)
    assert ps_deform_roi_pool(x, torch.zeros(0, 5), None, 2).shape == (0, 1, 2, 2)
    with pytest.raises(ValueError, match=r"rois: expected shape \(R, 5\)"):
        deform_roi_pool(x, torch.zeros(3, 4), None, 2)
    with pytest.raises(ValueError, match=r"offset: expected shape \(1, 2, 2, 2\)"):
        deform_roi_pool(x, torch.tensor([[0, 0, 0, 3.0, 3.0]]), torch.zeros(1, 2, 3, 3), 2)
    with pytest.raises(ValueError, match="expected channels divisible by kh\\*kw = 9"):
        ps_deform_roi_pool(x, torch.zeros(1, 5), None, 3)
    with pytest.raises(ValueError, match="sampling_ratio: expected a positive"):
        deform_roi_pool(x, torch.zeros(1, 5), None, 2, sampling_ratio=0)


def test_modules_start_as_roi_align_and_learn_offsets():
    torch.manual_seed(0)
    x = torch.rand(2, 8, 9, 9)
    rois = torch.tensor([[0, 0.0, 0.0, 12.0, 12.0], [1, 4.0, 2.0, 16.0, 17.0]])
    pool = DeformRoIPool2d(8, 2, spatial_scale=0.5)
    torch.testing.assert_close(pool(x, rois), tvops.roi_align(x, rois, 2, 0.5, 2, aligned=True))
    pool(x, rois).square().sum().backward()
    assert pool.offset_fc[-1].weight.grad.abs().sum() > 0  # the offset predictor receives a gradient
    ps = PSDeformRoIPool2d(8, 2, spatial_scale=0.5)
    torch.testing.assert_close(ps(x, rois), tvops.ps_roi_align(x, rois, 2, 0.5, 2))
    ps(x, rois).square().sum().backward()
    assert ps.offset_conv.weight.grad.abs().sum() > 0
