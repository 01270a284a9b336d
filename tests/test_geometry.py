"""The warp conventions of ``geometry.py`` against independent references.

References written here from the conventions in the module docstring, not from the code under
test: hand-placed pixels, ``torch.rot90``/``flip``, a loop-based bilinear sampler, a half-pixel
average, and ``torch.autograd.gradcheck`` in float64 for the derivatives attacks follow.
"""

import math

import pytest
import torch

from robustbench_geo.geometry import AUGMENTATIONS, AffineParams, affine_matrix, flow_warp, warp

F64 = torch.float64


def _point_image(y, x, size=9):
    img = torch.zeros(1, 1, size, size)
    img[0, 0, y, x] = 1.0
    return img


def _reference_matrix(size, angle_deg, tx, ty, sx, sy, shear_deg) -> torch.Tensor:
    """x' = R Sh S (x - c) + c + t with y down, so a counter-clockwise turn as displayed is R = [[c, s], [-s, c]]."""
    h, w = size
    c = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=F64)
    a, k = math.radians(angle_deg), math.tan(math.radians(shear_deg))
    rot = torch.tensor([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]], dtype=F64)
    lin = rot @ torch.tensor([[1.0, k], [0.0, 1.0]], dtype=F64) @ torch.diag(torch.tensor([sx, sy], dtype=F64))
    m = torch.eye(3, dtype=F64)
    m[:2, :2] = lin
    m[:2, 2] = c + torch.tensor([tx, ty], dtype=F64) - lin @ c
    return m


def _reference_warp(img: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Loop-based inverse mapping with bilinear interpolation and zero padding: ``(H, W) -> (H, W)``."""
    h, w = img.shape
    inv = torch.linalg.inv(m)
    out = torch.zeros(h, w, dtype=F64)
    for y in range(h):
        for x in range(w):
            sx, sy, _ = (inv @ torch.tensor([x, y, 1.0], dtype=F64)).tolist()
            x0, y0 = math.floor(sx), math.floor(sy)
            for yy, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                for xx, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                    if 0 <= yy < h and 0 <= xx < w:
                        out[y, x] += wy * wx * img[yy, xx]
    return out


def test_identity_warp_is_exact():
    x = torch.rand(3, 2, 11, 13)
    assert torch.allclose(warp(x, affine_matrix((11, 13), torch.zeros(3))), x, atol=1e-6)


def test_rotation_is_counter_clockwise_about_centre():
    img = _point_image(4, 8)  # right of the centre (4, 4)
    out = warp(img, affine_matrix((9, 9), 90.0))
    assert out[0, 0].argmax().item() == 0 * 9 + 4  # moved to the top: (y=0, x=4)


def test_quarter_and_half_turns_equal_rot90_and_flip():
    x = torch.rand(2, 3, 7, 7, dtype=F64)
    turn = warp(x, affine_matrix((7, 7), torch.full((2,), 90.0, dtype=F64)))
    torch.testing.assert_close(turn, torch.rot90(x, 1, [2, 3]), atol=1e-12, rtol=0)  # rot90 k=1 is counter-clockwise
    half = warp(x, affine_matrix((7, 7), torch.full((2,), 180.0, dtype=F64)))
    torch.testing.assert_close(half, x.flip(2, 3), atol=1e-12, rtol=0)


def test_half_pixel_shift_averages_neighbours():
    x = torch.rand(1, 1, 5, 6, dtype=F64)
    out = warp(x, affine_matrix((5, 6), torch.zeros(1, dtype=F64), tx_px=0.5))
    torch.testing.assert_close(out[..., 1:], 0.5 * (x[..., 1:] + x[..., :-1]), atol=1e-12, rtol=0)
    torch.testing.assert_close(out[..., 0], 0.5 * x[..., 0], atol=1e-12, rtol=0)  # zero padding on the left


def test_shift_and_scale_conventions():
    img = _point_image(4, 4)
    out = warp(img, affine_matrix((9, 9), tx_px=2.0, ty_px=-1.0))
    assert out[0, 0].argmax().item() == 3 * 9 + 6
    img = _point_image(4, 6)
    out = warp(img, affine_matrix((9, 9), scale_x=2.0))  # content twice as large: 2 px from centre -> 4 px
    assert out[0, 0].argmax().item() == 4 * 9 + 8


@pytest.mark.parametrize("params", [
    (23.0, 0.7, -1.3, 1.0, 1.0, 0.0),
    (-41.0, 0.0, 0.0, 0.8, 1.3, 0.0),
    (12.5, -2.2, 0.4, 1.15, 0.9, 17.0),
])
def test_matrix_and_warp_match_the_loop_reference(params):
    size = (8, 9)
    m = affine_matrix(size, *[torch.tensor([p], dtype=F64) for p in params])[0]
    torch.testing.assert_close(m, _reference_matrix(size, *params), atol=1e-12, rtol=0)
    img = torch.rand(*size, dtype=F64)
    out = AffineParams(*[torch.tensor([p], dtype=F64) for p in params]).apply(img[None, None])[0, 0]
    torch.testing.assert_close(out, _reference_warp(img, _reference_matrix(size, *params)), atol=1e-10, rtol=0)


def test_warp_gradients_pass_gradcheck_in_float64():
    """The derivatives affine_pgd and scale follow: image and every parameter (away from interpolation kinks)."""
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 1, 6, 7, dtype=F64, generator=g).requires_grad_()
    params = [torch.tensor(v, dtype=F64).requires_grad_() for v in
              ([13.3, -7.1], [0.31, -0.62], [0.37, 0.11], [1.13, 0.87], [0.93, 1.21], [4.1, -3.3])]

    def fn(x, *p):
        return warp(x, affine_matrix((6, 7), *p))

    assert torch.autograd.gradcheck(fn, (img, *params))


def test_flow_warp_gradients_and_zero_flow():
    g = torch.Generator().manual_seed(1)
    img = torch.rand(1, 2, 5, 6, dtype=F64, generator=g).requires_grad_()
    flow = (0.6 * torch.randn(1, 2, 5, 6, dtype=F64, generator=g)).requires_grad_()
    assert torch.autograd.gradcheck(flow_warp, (img, flow))
    torch.testing.assert_close(flow_warp(img, torch.zeros_like(flow)), img, atol=1e-12, rtol=0)
    right = torch.zeros_like(flow)
    right[:, 0] = 1.0  # sample one pixel to the right: content moves left
    torch.testing.assert_close(flow_warp(img, right)[..., :-1], img[..., 1:], atol=1e-12, rtol=0)


def test_sampler_is_seeded_and_output_in_range():
    s = AUGMENTATIONS["scale"]
    x = torch.rand(5, 1, 28, 28)
    a = s(x, torch.Generator().manual_seed(0))
    b = s(x, torch.Generator().manual_seed(0))
    c = s(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.min() >= 0 and a.max() <= 1 + 1e-6


def test_warp_shape_errors():
    with pytest.raises(ValueError, match=r"images: expected shape \(B, C, H, W\)"):
        warp(torch.rand(3, 8, 8), torch.eye(3)[None])
    with pytest.raises(ValueError, match="one per image"):
        warp(torch.rand(3, 1, 8, 8), torch.eye(3).repeat(2, 1, 1))
