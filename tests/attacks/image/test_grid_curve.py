"""The grid's accuracy at every angle from one pass equals separate grids restricted to each angle."""

import pytest
import torch

from robustbench_geo.attacks.image import GridAttack
from robustbench_geo.attacks.image.search import FIELDS
from robustbench_geo.evaluation import evaluate_attack
from robustbench_geo.evaluation.image import budget_curve
from robustbench_geo.geometry import affine_matrix, warp


def _accuracy_at(curve, r):
    budgets, acc = budget_curve(curve["correct"], curve["min_fooling_budget"])
    return float(acc[torch.searchsorted(budgets, torch.tensor([r], dtype=torch.float64), right=True) - 1])


def test_one_angle_ordered_pass_gives_the_grid_accuracy_at_every_angle(tiny_model, mnist_small):
    ds = mnist_small
    full = evaluate_attack(tiny_model, ds, "grid", {"order": "angle", "angle_steps": 31, "shift_steps": 3,
                                                   "max_shift_px": 1.0},
                           progress=False)
    curve = full.artefacts["budget_curve"]
    assert curve["unit"] == "max angle (deg)"
    assert _accuracy_at(curve, 30.0) == pytest.approx(full.metrics["robust_accuracy"])
    seen = set()
    for angle in (0, 2, 6, 10, 16, 24, 30):  # 2-degree spacing: angle + 1 steps reuse the full grid's angles
        part = evaluate_attack(tiny_model, ds, "grid", {"max_angle_deg": float(angle), "angle_steps": angle + 1,
                                                        "shift_steps": 3, "max_shift_px": 1.0}, progress=False)
        assert _accuracy_at(curve, float(angle)) == pytest.approx(part.metrics["robust_accuracy"]), angle
        seen.add(part.metrics["robust_accuracy"])
    assert len(seen) >= 3  # the restriction changes the accuracy: the comparison is not between constants


def test_smallest_order_records_the_box_size_and_largest_records_nothing(tiny_model, mnist_small):
    x, y = mnist_small.images[:32], mnist_small.labels[:32]
    res = GridAttack(tiny_model, angle_steps=7, shift_steps=3)(x, y)
    b = res.info["min_fooling_budget"]
    assert bool(b[~res.success].isinf().all())
    size = torch.stack([res.params["angle_deg"].abs() / 30, res.params["tx_px"].abs() / 3,
                        res.params["ty_px"].abs() / 3]).amax(0)
    assert torch.equal(b[res.success], size[res.success])
    # no grid point of a smaller box fools the image: every point below the recorded size keeps the label
    att = GridAttack(tiny_model, angle_steps=7, shift_steps=3)
    pts = att.grid()
    sizes = torch.stack([pts["angle_deg"].abs() / 30, pts["tx_px"].abs() / 3, pts["ty_px"].abs() / 3]).amax(0)
    for i in res.success.nonzero().squeeze(1).tolist()[:8]:
        inner = sizes < b[i]
        if inner.any():
            m = affine_matrix((28, 28), *(pts[k][inner] for k in FIELDS))
            with torch.no_grad():
                pred = tiny_model(warp(x[i:i + 1].expand(int(inner.sum()), -1, -1, -1), m)).argmax(1)
            assert bool((pred == y[i]).all())
    assert "min_fooling_budget" not in GridAttack(tiny_model, angle_steps=7, shift_steps=3, order="largest")(x, y).info
