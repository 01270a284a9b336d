import math

import pytest
import torch
import torch.nn as nn

from robustbench_geo.attacks import create_attack
from robustbench_geo.attacks.image.manifool import GROUPS, centred_matrix, fields_of, geodesic_distance
from robustbench_geo.attacks.image.search import FIELDS, full_params
from robustbench_geo.evaluation import evaluate_attack
from robustbench_geo.evaluation.image import budget_curve
from robustbench_geo.models.predict import fresh_copy


class OrientationThreshold(nn.Module):
    """Two classes decided by the orientation of the image's ink alone: class 0 within +-threshold of horizontal.

    The orientation comes from the second central moments, which ignore where the ink is and how large it is
    (while it stays inside the frame), so among rotations, shifts and isotropic scalings only the rotation
    angle decides: the smallest fooling similarity transform of a horizontal bar is a rotation by the threshold.
    """

    def __init__(self, size=28, threshold_deg=20.0):
        super().__init__()
        ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                                indexing="ij")
        self.register_buffer("xs", xs)
        self.register_buffer("ys", ys)
        self.threshold = math.radians(threshold_deg)

    def orientation(self, x):
        m = x.sum(1)
        mass = m.sum((1, 2))
        cx, cy = (m * self.xs).sum((1, 2)) / mass, (m * self.ys).sum((1, 2)) / mass
        dx, dy = self.xs - cx[:, None, None], self.ys - cy[:, None, None]
        mu20, mu02, mu11 = (m * dx * dx).sum((1, 2)), (m * dy * dy).sum((1, 2)), (m * dx * dy).sum((1, 2))
        return 0.5 * torch.atan2(2 * mu11, mu20 - mu02)

    def forward(self, x):
        z = 100 * (self.threshold ** 2 - self.orientation(x) ** 2)
        return torch.stack([z, -z], 1)


def bars(n=4, size=28):
    """Horizontal Gaussian bars of different lengths and positions (all well inside the frame)."""
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    out = []
    for i in range(n):
        cx, cy, sx = 13.5 + (i % 2) - 0.5, 13.5 - (i % 3) + 1, 4.0 + i
        out.append(torch.exp(-((xs - cx) / sx) ** 2 / 2 - ((ys - cy) / 1.5) ** 2 / 2))
    return torch.stack(out)[:, None].clamp(0, 1)


def test_fields_round_trip_through_centred_matrices():
    g = torch.Generator().manual_seed(0)
    p = full_params(16, angle_deg=torch.empty(16).uniform_(-170, 170, generator=g),
                    tx_px=torch.empty(16).uniform_(-5, 5, generator=g), ty_px=torch.empty(16).uniform_(-5, 5, generator=g),
                    scale_x=torch.empty(16).uniform_(0.5, 2, generator=g), scale_y=torch.empty(16).uniform_(0.5, 2, generator=g),
                    shear_deg=torch.empty(16).uniform_(-40, 40, generator=g))
    back = fields_of(centred_matrix(p, (28, 28)))
    for k in FIELDS:
        assert torch.allclose(back[k], p[k], atol=1e-4), k


def test_geodesic_distance_is_zero_for_the_identity_and_grows_with_the_angle(mnist_small):
    x = mnist_small.images[:4]
    d = {a: geodesic_distance(x, full_params(4, angle_deg=torch.full((4,), float(a)))) for a in (0, 5, 10, 20)}
    assert torch.equal(d[0], torch.zeros(4))
    assert bool((d[5] > 0).all() and (d[10] > d[5]).all() and (d[20] > d[10]).all())
    # a path of twice the angle is about twice as long (the path is traced at constant angular speed)
    assert torch.allclose(d[20] / d[10], torch.full((4,), 2.0), rtol=0.15)


@pytest.mark.parametrize("threshold", [12.0, 25.0])
def test_distance_matches_the_known_threshold_of_an_angle_only_model(threshold):
    x = bars()
    y = torch.zeros(4, dtype=torch.long)
    model = OrientationThreshold(threshold_deg=threshold).eval()
    assert bool((model(x).argmax(1) == 0).all())
    res = create_attack("manifool", model, group="similarity")(x, y)
    assert bool(res.success.all())
    # the walk ends at the boundary: a rotation by the threshold, hardly any scaling (interpolation moves the
    # moments a little) or shift
    assert torch.allclose(res.params["angle_deg"].abs(), torch.full((4,), threshold), atol=0.5)
    assert torch.allclose(res.params["scale_x"], torch.ones(4), atol=0.05)
    assert bool((res.params["tx_px"].abs() < 0.5).all() and (res.params["ty_px"].abs() < 0.5).all())
    # its geodesic distance is that of the pure rotation by the threshold, within 5 % (the angle is within 0.5 deg)
    rot = geodesic_distance(x, full_params(4, angle_deg=res.params["angle_deg"].sign() * threshold))
    assert torch.allclose(res.info["geodesic_distance"], rot, rtol=0.05)
    assert torch.allclose(res.info["normalised_distance"], rot / x.flatten(1).norm(dim=1), rtol=0.05)


@pytest.mark.parametrize("group", list(GROUPS))
def test_every_returned_transform_fools_a_fresh_copy(group, tiny_model, mnist_small):
    x, y = mnist_small.images[:24], mnist_small.labels[:24]
    res = create_attack("manifool", tiny_model, group=group, steps=30)(x, y)
    assert res.success.float().mean() > 0.5
    copy = fresh_copy(tiny_model)
    with torch.no_grad():
        pred = copy(res.replay(x).clamp(0, 1)).argmax(1)
    assert torch.equal(pred != y, res.success)
    d = res.info["min_fooling_budget"]
    assert bool(d[res.success].isfinite().all()) and bool(d[~res.success].isinf().all())
    clean_wrong = copy(x).argmax(1) != y
    assert bool((d[clean_wrong] == 0).all())
    if group != "affine":  # groups without stretch or shear return none
        assert torch.allclose(res.params["shear_deg"], torch.zeros(24), atol=1e-3)
        assert torch.allclose(res.params["scale_x"], res.params["scale_y"], atol=1e-5)
    if group in ("rotation", "rotation_translation"):
        assert torch.allclose(res.params["scale_x"], torch.ones(24), atol=1e-5)
    again = create_attack("manifool", tiny_model, group=group, steps=30)(x, y)
    assert torch.equal(again.adversarial, res.adversarial)
    for k in res.info:
        if isinstance(res.info[k], torch.Tensor):
            assert torch.equal(again.info[k], res.info[k]), k


def test_runner_records_distances_the_invariance_score_and_the_budget_curve(tiny_model, mnist_small):
    out = evaluate_attack(tiny_model, mnist_small, "manifool", {"steps": 30}, progress=False)
    assert out.metrics["verification_mismatches"] == 0
    fooled = [r for r in out.rows if r["success"]]
    assert fooled and all(math.isfinite(r["normalised_distance"]) for r in fooled)
    score = sum(r["normalised_distance"] for r in fooled) / len(fooled)
    assert out.metrics["mean_normalised_distance"] == pytest.approx(score, rel=1e-5)
    curve = out.artefacts["budget_curve"]
    budgets, acc = budget_curve(curve["correct"], curve["min_fooling_budget"])
    assert acc[0] == pytest.approx(out.metrics["clean_accuracy"])
    assert acc[-1] == pytest.approx(out.metrics["robust_accuracy"])
    assert bool((acc[1:] <= acc[:-1]).all())


def test_budget_curve_matches_a_loop():
    g = torch.Generator().manual_seed(1)
    correct = torch.rand(200, generator=g) < 0.9
    b = torch.randint(0, 12, (200,), generator=g).double() / 4
    b[torch.rand(200, generator=g) < 0.2] = float("inf")
    budgets, acc = budget_curve(correct, b)
    for r, a in zip(budgets.tolist(), acc.tolist()):
        expected = sum(1 for c, v in zip(correct.tolist(), b.tolist()) if c and v > r) / 200
        assert a == pytest.approx(expected)
    assert budgets[0] == 0 and bool((budgets[1:] > budgets[:-1]).all())
    empty_b, empty_acc = budget_curve(torch.zeros(0, dtype=torch.bool), torch.zeros(0))
    assert empty_b.tolist() == [0.0] and empty_acc.tolist() == [0.0]
    with pytest.raises(ValueError, match="expected two"):
        budget_curve(correct, b[:3])


def test_bad_parameters():
    m = OrientationThreshold()
    with pytest.raises(KeyError, match="Valid transformation groups: affine, rotation, rotation_translation, similarity"):
        create_attack("manifool", m, group="projective")
    with pytest.raises(ValueError, match="max_step"):
        create_attack("manifool", m, max_step=0.0)
