"""Certification by smoothing: statistics against scipy, the interpolation bound against dense sampling,
and properties that fail if the certificate or the attack is wrong."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from scipy.stats import binom

from robustbench_geo.smoothing import (
    Rotation, Scaling, SmoothingConfig, Translation, certify, clopper_pearson_lower, grid_attack,
)
from robustbench_geo.smoothing.families import interpolation_bound
from robustbench_geo.smoothing.binomial import ABSTAIN, predict_top, proportion_interval

SIZE = 28
CENTRE = (SIZE - 1) / 2


def blob_image(angle_deg: float = 0.0, radius_px: float = 8.0, width_px: float = 2.0) -> torch.Tensor:
    """A Gaussian blob ``(1, H, W)`` at ``angle_deg`` (counter-clockwise as displayed) from the centre."""
    a = math.radians(angle_deg)
    bx, by = CENTRE + radius_px * math.cos(a), CENTRE - radius_px * math.sin(a)
    ys, xs = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij")
    return torch.exp(-((xs - bx) ** 2 + (ys - by) ** 2) / (2 * width_px ** 2))[None]


class HalfPlane(nn.Module):
    """Class 1 when the image mass lies counter-clockwise of a line through the centre at ``line_deg``.

    A blob at angle ``b`` is class 1 for ``b`` in ``(line_deg, line_deg + 180)``: rotating the blob
    image by ``alpha`` flips the class exactly when ``b + alpha`` crosses ``line_deg`` (mod 180).
    """

    def __init__(self, line_deg: float):
        super().__init__()
        a = math.radians(line_deg)
        ys, xs = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij")
        dx, dy = xs - CENTRE, -(ys - CENTRE)  # y up
        cross = math.cos(a) * dy - math.sin(a) * dx
        self.register_buffer("w", torch.sign(cross)[None])

    def forward(self, x):
        s = (x * self.w).sum(dim=(1, 2, 3))
        return torch.stack([-s, s], 1)


class Constant(nn.Module):
    def __init__(self, cls: int = 3, classes: int = 10):
        super().__init__()
        self.register_buffer("bias", torch.nn.functional.one_hot(torch.tensor(cls), classes).float())

    def forward(self, x):
        return self.bias.expand(x.shape[0], -1).clone()


CFG = SmoothingConfig(sigma=0.25, n0=100, n=500, alpha=0.001, cells=40, substeps=100, batch_size=4000, seed=0)


# -- statistics ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 10, 1000])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_lower_solves_the_binomial_tail(n, alpha):
    k = torch.tensor(sorted({0, 1, n // 2, n - 1, n}))
    p = clopper_pearson_lower(k, n, alpha)
    for ki, pi in zip(k.tolist(), p.tolist()):
        if ki == 0:
            assert pi == 0.0
        else:  # P(Bin(n, p) >= k) = alpha at the bound (the definition, not the beta formula)
            assert binom.sf(ki - 1, n, pi) == pytest.approx(alpha, rel=1e-6)
    assert p[-1].item() == pytest.approx(alpha ** (1 / n), rel=1e-9)  # k = n closed form
    assert torch.all(p[1:] >= p[:-1])


def test_clopper_pearson_rejects_bad_input():
    with pytest.raises(ValueError, match="alpha: expected"):
        clopper_pearson_lower(torch.tensor([1]), 10, 1.5)
    with pytest.raises(ValueError, match="successes: expected counts in"):
        clopper_pearson_lower(torch.tensor([11]), 10, 0.01)
    lo, hi = proportion_interval(5, 10)
    assert lo < 0.5 < hi


def test_predict_abstains_on_ties():
    assert predict_top(torch.tensor([50, 50, 0]), 0.001) == ABSTAIN
    assert predict_top(torch.tensor([0, 100, 0]), 0.001) == 1


# -- the interpolation bound ---------------------------------------------------------------------
@pytest.mark.parametrize("family, cells, substeps", [(Rotation(30.0), 6, 20), (Scaling(0.8, 1.2), 4, 20),
                                                     (Translation(1.0), 2, 6)])
def test_interpolation_bound_holds_on_a_dense_sample(family, cells, substeps):
    torch.manual_seed(0)
    image = (blob_image(30.0) + 0.5 * blob_image(200.0, 5.0, 1.0)).clamp(0, 1)
    lower, m, width = interpolation_bound(family, image, cells, substeps)
    dense = 50 if family.dims == 1 else 12
    for j in range(lower.shape[0]):
        offs = torch.linspace(0, width, dense, dtype=torch.float64)
        grid = torch.stack(torch.meshgrid(*([offs] * family.dims), indexing="ij"), -1).reshape(-1, family.dims)
        pts = lower[j] + grid
        err = (family.warp(image[None], pts) - family.warp(image[None], lower[j:j + 1])).double().pow(2).sum((1, 2, 3)).sqrt()
        assert err.max() <= m[j] + 1e-5
        # not vacuous, on every cell: the bound is within a factor 2.25 of the largest error found by dense
        # sampling (about 1.7-2.0 for these images, the factor of TSS's sampling-based bound)
        assert m[j] <= 2.25 * err.max(), j


@pytest.mark.parametrize("family", [Rotation(30.0), Scaling(0.8, 1.2), Translation(2.0)])
def test_fast_warp_is_the_attacks_warp(family):
    image = (blob_image(30.0) + blob_image(200.0, 5.0, 1.0)).clamp(0, 1)[None]
    lo, hi = family.box()[0]
    t = lo + (hi - lo) * torch.rand(64, family.dims, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    diff = family.fast_warp(image, t) - family.warp(image, t)
    from robustbench_geo.smoothing.families import WARP_SLACK

    assert diff.pow(2).sum((1, 2, 3)).sqrt().max() < WARP_SLACK / 2


# -- certificate properties ----------------------------------------------------------------------
def test_constant_classifier_is_certified_everywhere():
    images = torch.stack([blob_image(a) for a in (0.0, 90.0, 250.0)])
    labels = torch.full((3,), 3)
    cfg = SmoothingConfig(sigma=0.5, n0=50, n=200, cells=30, substeps=100, batch_size=4000)
    wide = SmoothingConfig(sigma=1.0, n0=50, n=200, cells=4, substeps=8, batch_size=4000)
    for family, c in ((Rotation(30.0), cfg), (Scaling(0.8, 1.2), cfg), (Translation(0.5), wide)):
        cert = certify(Constant(), images, labels, family, config=c)
        assert cert.certified.all() and cert.correct.all()
        assert torch.allclose(cert.radius, torch.full((3,), family.full_radius(), dtype=torch.float64))


@pytest.mark.parametrize("cells", [1, 5, 30])
def test_alpha_is_shared_between_the_cells(cells):
    """A constant classifier counts n of n at every node; the one-sided Clopper-Pearson bound of n of n at level
    a is a ** (1 / n) (the a-quantile of Beta(n, 1)), so each node must be tested at alpha / cells."""
    cfg = SmoothingConfig(sigma=0.5, n0=50, n=200, alpha=0.01, cells=cells, substeps=4, batch_size=4000)
    cert = certify(Constant(), blob_image(0.0)[None], torch.full((1,), 3), Rotation(30.0), config=cfg)
    assert cert.prediction.item() == 3  # (certified or not, every node evaluated has the same bound)
    assert cert.p_lower.item() == pytest.approx((0.01 / cells) ** (1 / 200), rel=1e-9)


def test_classifier_flipping_inside_the_interval_is_never_certified():
    image = blob_image(0.0)[None]
    for line in (15.0, -10.0, 29.0):  # the prediction flips at rotation = line (degrees)
        model = HalfPlane(line)
        label = model(image).argmax(1)
        cert = certify(model, image, label, "rotation", max_angle_deg=30.0, config=CFG)
        assert not cert.certified.any()
        assert cert.radius.item() <= abs(line) + 1e-9  # the certified radius stops before the flip
        attack = grid_attack(model, image, label, "rotation", max_angle_deg=30.0, points=121, sigma=0.25, n=200)
        assert not attack.robust.any()
        assert abs(attack.worst.item() - line) < 4.0


def test_certified_accuracy_never_exceeds_grid_attack_on_the_same_smoothed_classifier():
    lines = [-150.0, -40.0, -20.0, 10.0, 45.0, 60.0, 100.0, 170.0, 5.0, -60.0]
    images = torch.stack([blob_image(0.0)] * len(lines))
    certified, robust = [], []
    for i, line in enumerate(lines):
        model = HalfPlane(line)
        x, y = images[i:i + 1], model(images[i:i + 1]).argmax(1)
        cert = certify(model, x, y, "rotation", max_angle_deg=30.0, config=CFG)
        att = grid_attack(model, x, y, "rotation", max_angle_deg=30.0, points=121, sigma=CFG.sigma, n=200)
        certified.append(bool(cert.correct))
        robust.append(bool(att.robust))
        assert not (certified[-1] and not robust[-1]), f"certified but attacked at line {line}"
    assert sum(certified) <= sum(robust)
    assert 0 < sum(certified) and sum(robust) < len(lines)  # both outcomes occur: the test is not vacuous


def test_certificate_is_reproducible_for_a_seed():
    images = torch.stack([blob_image(0.0), blob_image(40.0)])
    model = HalfPlane(60.0)
    labels = model(images).argmax(1)
    cfg = SmoothingConfig(sigma=1.0, n0=50, n=100, cells=8, substeps=20, batch_size=512, seed=0)
    a = certify(model, images, labels, "scaling", min_scale=0.8, max_scale=1.2, config=cfg)
    b = certify(model, images, labels, "scaling", min_scale=0.8, max_scale=1.2, config=cfg)
    c = certify(model, images, labels, "scaling", min_scale=0.8, max_scale=1.2,
                config=SmoothingConfig(**{**cfg.__dict__, "seed": 1}))
    assert 0 < a.p_lower.min() < 0.99  # noisy enough that the counts depend on the seed
    assert torch.equal(a.p_lower, b.p_lower) and torch.equal(a.prediction, b.prediction)
    assert not torch.equal(a.p_lower, c.p_lower)


def test_bad_input_is_rejected():
    with pytest.raises(KeyError, match="Valid transformations"):
        certify(Constant(), torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long), "shear")
    with pytest.raises(ValueError, match="sigma: expected a number > 0.0, got 0"):
        SmoothingConfig(sigma=0)
    with pytest.raises(ValueError, match="expected 0 < min_scale"):
        Scaling(1.2, 0.8)
    with pytest.raises(ValueError, match=r"images .*expected values in \[0.0, 1.0\], got \[-1, -1\]"):
        certify(Constant(), -torch.ones(1, 1, 28, 28), torch.zeros(1, dtype=torch.long), "rotation",
                config=SmoothingConfig(cells=2, substeps=2, n=10, n0=10))
    with pytest.raises(ValueError, match="non-negative pixel values"):
        interpolation_bound(Rotation(), -torch.ones(1, 28, 28), 2, 2)


# -- the fast path -------------------------------------------------------------------------------
class Unscriptable(nn.Module):
    def forward(self, x):
        return torch.stack([x.flatten(1).sum(1), -x.flatten(1).sum(1)], 1) if not hasattr(x, "no_such") else x


def test_inference_model_scripts_cnns_and_keeps_their_counts():
    from robustbench_geo.models import create_model
    from robustbench_geo.smoothing.tss import image_generator, inference_model, probe_batch, sample_counts

    torch.manual_seed(0)
    model = create_model("small_cnn").eval()
    images = torch.rand(3, 1, SIZE, SIZE)
    fast = inference_model(model, probe_batch(images, 0.5, torch.device("cpu")))
    assert isinstance(fast, torch.jit.ScriptModule)
    gen = lambda: image_generator(torch.device("cpu"), 0, 0)  # noqa: E731
    eager = sample_counts(model, images, 300, 0.5, gen(), 128)
    assert torch.equal(sample_counts(fast, images, 300, 0.5, gen(), 1000), eager)
    assert type(inference_model(Unscriptable(), images)) is Unscriptable  # hasattr: no TorchScript, falls back
