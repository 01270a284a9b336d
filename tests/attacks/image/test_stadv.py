import pytest
import torch

from robustbench_geo.attacks.image import StAdv
from robustbench_geo.attacks.image.lbfgs import batched_lbfgs
from robustbench_geo.attacks.image.stadv import flow_smoothness
from robustbench_geo.geometry import flow_warp


def _loop_smoothness(flow):
    """Slow reference: sum over pixels of sqrt(|du|^2 + |dv|^2 + eps) over the 4-neighbours inside the image."""
    b, _, h, w = flow.shape
    out = torch.zeros(b, dtype=flow.dtype)
    for i in range(h):
        for j in range(w):
            for di, dj in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                if 0 <= i + di < h and 0 <= j + dj < w:
                    d = flow[:, :, i, j] - flow[:, :, i + di, j + dj]
                    out += (d.pow(2).sum(1) + 1e-8).sqrt()
    return out


def test_flow_smoothness_matches_loop_reference():
    flow = torch.randn(3, 2, 5, 6, dtype=torch.float64)
    assert torch.allclose(flow_smoothness(flow), _loop_smoothness(flow))


def test_flow_warp_convention_and_gradients():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 3] = 1.0
    flow = torch.zeros(1, 2, 5, 5)
    flow[:, 0] = 1.0  # sample one pixel to the right: content moves left
    assert flow_warp(x, flow)[0, 0, 2, 2] == 1.0 and torch.equal(flow_warp(x, torch.zeros_like(flow)), x)
    f = (torch.rand(2, 2, 4, 4, dtype=torch.float64) * 0.6 + 0.2).requires_grad_(True)  # away from integer kinks
    img = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda fl: flow_warp(img, fl), (f,))


def test_batched_lbfgs_keeps_samples_independent():
    """Each sample's iterates must not depend on the other samples in the batch."""
    torch.manual_seed(0)
    a = torch.tensor([1.0, 1000.0], dtype=torch.float64)  # very different curvatures

    def fn(z, rows):
        return 0.5 * a[rows] * (z - 3).pow(2).sum(1), a[rows, None] * (z - 3)

    z0 = torch.zeros(2, 4, dtype=torch.float64)
    both, _ = batched_lbfgs(fn, z0, steps=5)
    alone, _ = batched_lbfgs(lambda z, r: fn(z, r + 1), z0[1:], steps=5)
    assert torch.allclose(both[1:], alone) and torch.allclose(both, torch.full_like(both, 3.0), atol=1e-6)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_stadv_properties(optimizer, tiny_model, mnist_small):
    x, y = mnist_small.images[:12], mnist_small.labels[:12]
    atk = StAdv(tiny_model, steps=15, search_steps=2, optimizer=optimizer, lr=0.05)
    res = atk(x, y)
    with torch.no_grad():
        assert torch.equal(res.success, tiny_model(res.adversarial.clone()).argmax(1) != y)
    assert torch.allclose(res.replay(x).clamp(0, 1), res.adversarial, atol=1e-6)
    assert res.params["flow"].shape == (12, 2, 28, 28) and res.kind == "flow"
    assert res.info["flow_px"].shape == (12,) and (res.info["flow_px"] >= 0).all()
    assert res.backward_passes > 0 and res.adversarial.min() >= 0 and res.adversarial.max() <= 1
    again = StAdv(tiny_model, steps=15, search_steps=2, optimizer=optimizer, lr=0.05)(x, y)
    assert torch.equal(again.adversarial, res.adversarial)


def test_stadv_tau_search_finds_more_than_fixed_tau(tiny_model, mnist_small):
    x, y = mnist_small.images[:24], mnist_small.labels[:24]
    correct = tiny_model(x).argmax(1) == y
    fixed = StAdv(tiny_model, steps=20, search_steps=1)(x, y)
    searched = StAdv(tiny_model, steps=20, search_steps=4)(x, y)
    assert (searched.success & correct).sum() >= (fixed.success & correct).sum()
    assert (searched.success & correct).float().sum() >= 0.9 * correct.sum()
