import pytest
import torch

from robustbench_geo.geometry import AUGMENTATIONS, AffineParams, affine_matrix, warp


def _point_image(y, x, size=9):
    img = torch.zeros(1, 1, size, size)
    img[0, 0, y, x] = 1.0
    return img


def test_identity_warp_is_exact():
    x = torch.rand(3, 2, 11, 13)
    assert torch.allclose(warp(x, affine_matrix((11, 13), torch.zeros(3))), x, atol=1e-6)


def test_rotation_is_counter_clockwise_about_centre():
    img = _point_image(4, 8)  # right of the centre (4, 4)
    out = warp(img, affine_matrix((9, 9), 90.0))
    assert out[0, 0].argmax().item() == 0 * 9 + 4  # moved to the top: (y=0, x=4)


def test_shift_and_scale_conventions():
    img = _point_image(4, 4)
    out = warp(img, affine_matrix((9, 9), tx_px=2.0, ty_px=-1.0))
    assert out[0, 0].argmax().item() == 3 * 9 + 6
    img = _point_image(4, 6)
    out = warp(img, affine_matrix((9, 9), scale_x=2.0))  # content twice as large: 2 px from centre -> 4 px
    assert out[0, 0].argmax().item() == 4 * 9 + 8


def test_matrix_is_differentiable_and_params_replay():
    angle = torch.tensor([10.0, -20.0], requires_grad=True)
    x = torch.rand(2, 1, 8, 8)
    warp(x, affine_matrix((8, 8), angle)).sum().backward()
    assert angle.grad is not None and angle.grad.abs().sum() > 0
    p = AFFINE = AUGMENTATIONS["affine"].sample(2, (8, 8), torch.Generator().manual_seed(0))
    assert torch.equal(p.apply(x), AffineParams(**AFFINE.as_dict()).apply(x))


def test_sampler_is_seeded_and_output_in_range():
    s = AUGMENTATIONS["scale"]
    x = torch.rand(5, 1, 28, 28)
    a = s(x, torch.Generator().manual_seed(0))
    b = s(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 + 1e-6


def test_warp_shape_errors():
    with pytest.raises(ValueError, match=r"images: expected shape \(B, C, H, W\)"):
        warp(torch.rand(3, 8, 8), torch.eye(3)[None])
    with pytest.raises(ValueError, match="one per image"):
        warp(torch.rand(3, 1, 8, 8), torch.eye(3).repeat(2, 1, 1))
