"""The certificate's bracketing grid attack (:func:`robustbench_geo.smoothing.grid_attack`), pinned on a
deterministic scene for each transform family, on the base classifier (``sigma = 0``) and on the smoothed
one: per image robust or not and the first fooling parameter, accuracy, the grid's points in their visit
order and the model calls. Computed before the grid search was shared with the ``grid`` attack."""

from __future__ import annotations

import math

import pytest

from robustbench_geo.smoothing import grid_attack
from robustbench_geo.smoothing.attack import grid_points
from robustbench_geo.smoothing.families import make_family
from tests.attacks.image.grid_scene import digest, scene

N = None  # robust: no fooling parameter
CASES = {  # family: (budget, points per axis, (points, digest of the grid))
    "rotation": ({"max_angle_deg": 20.0}, 41, (41, "c4bf22617ac341b9bc017b7219d9013ad24c434adde3c0558a145363f6a5f509")),
    "translation": ({"max_shift_px": 2.0}, 5, (25, "fa3e9cbaa2e7e286d9c8c696375dee217e43fbf4d0928478bd3de8c2169d3fd0")),
    "scaling": ({"min_scale": 0.8, "max_scale": 1.2}, 9, (10, "949fb0d679a6f70509ed544aa87afb9fbfb2883ede5794ed13cbab7914d95793")),
}
PINNED = {  # (family, sigma): (robust, first fooling parameter, accuracy, forward passes)
    ("rotation", 0.0): ([True, True, False, False, False, True, True, False],
                        [[N], [N], [13.0], [6.0], [-9.0], [N], [N], [0.0]], 0.5, 328),
    ("rotation", 0.25): ([True, True, False, False, False, True, True, False],
                         [[N], [N], [13.0], [5.0], [-10.0], [N], [N], [0.0]], 0.5, 13120),
    ("translation", 0.0): ([True, True, False, False, False, True, True, False],
                           [[N, N], [N, N], [-2.0, -2.0], [-1.0, -1.0], [-2.0, 2.0], [N, N], [N, N], [0.0, 0.0]], 0.5, 200),
    ("translation", 0.25): ([True, True, False, False, False, True, True, False],
                            [[N, N], [N, N], [-2.0, -2.0], [-1.0, -1.0], [1.0, 1.0], [N, N], [N, N], [0.0, 0.0]], 0.5, 8000),
    ("scaling", 0.0): ([True] * 7 + [False], [[N]] * 7 + [[1.0]], 0.875, 80),
    ("scaling", 0.25): ([True] * 7 + [False], [[N]] * 7 + [[1.0]], 0.875, 3200),
}


@pytest.mark.parametrize("family", sorted(CASES))
def test_grid_points_are_pinned(family):
    budget, per_axis, (count, pinned) = CASES[family]
    grid = grid_points(make_family(family, **budget), per_axis)
    assert grid.shape[0] == count and digest(grid) == pinned


@pytest.mark.parametrize("family, sigma", sorted(PINNED))
def test_grid_attack_results_are_pinned(family, sigma):
    model, images, labels = scene()
    budget, per_axis, _ = CASES[family]
    r = grid_attack(model, images, labels, family, points=per_axis, sigma=sigma, n=40, seed=3, **budget)
    robust, worst, accuracy, passes = PINNED[(family, sigma)]
    assert r.robust.tolist() == robust
    assert [[None if math.isnan(v) else round(v, 6) for v in w] for w in r.worst.tolist()] == worst
    assert r.accuracy == accuracy and r.forward_passes == passes and r.points == CASES[family][2][0]
