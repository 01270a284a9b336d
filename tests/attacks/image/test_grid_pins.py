"""The 775-point grid attack's results, pinned on a deterministic scene: per image whether it is fooled and
the transform kept (a smallest fooling one for ``order="smallest"``), robust accuracy, the model calls and
the grid's points in their visit order, for each order. Computed before the grid search was shared with
the certificate's attack bracket; a change of any of them is a change of the attack's results."""

from __future__ import annotations

import pytest
import torch

from robustbench_geo.attacks import create_attack

from .grid_scene import digest, scene

INF = float("inf")
PINNED = {
    "smallest": {
        "grid": "77e881de232ac7220df07491e26f36ac0b1f6025642b86114703bc2a6f0011c9",
        "success": [False, True, True, True, True, True, False, True],
        "angle_deg": [30.0, 12.0, 14.0, 6.0, -10.0, -14.0, 30.0, 0.0],
        "tx_px": [-3.0, 0.0, 0.0, 0.0, 0.0, 1.5, 3.0, 0.0],
        "ty_px": [-3.0, -1.5, 0.0, 0.0, 0.0, 1.5, 3.0, 0.0],
        "forward_passes": 1826,
        "min_fooling_budget": [INF, 0.5, 0.46666666865348816, 0.20000000298023224, 0.3333333432674408, 0.5, INF, 0.0],
    },
    "angle": {
        "grid": "18b20da873d9c9f7a8efa5f31efa88aa0568a91dceaff1080721756f2c4de6d5",
        "success": [False, True, True, True, True, True, False, True],
        "angle_deg": [30.0, 0.0, 0.0, 0.0, 0.0, 0.0, 30.0, 0.0],
        "tx_px": [-3.0, 0.0, -1.5, 0.0, 0.0, 3.0, 3.0, 0.0],
        "ty_px": [-3.0, -3.0, -1.5, -1.5, 1.5, 3.0, 3.0, 0.0],
        "forward_passes": 1659,
        "min_fooling_budget": [INF, 0.0, 0.0, 0.0, 0.0, 0.0, INF, 0.0],
    },
    "largest": {
        "grid": "03b7340cda2ef1b4b26a47b8f31379a383554fd4c86fe3a5974af1ccee410697",
        "success": [False, True, True, True, True, True, False, True],
        "angle_deg": [30.0, 30.0, 30.0, 30.0, -30.0, -30.0, 30.0, 0.0],
        "tx_px": [-3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 0.0],
        "ty_px": [-3.0, -3.0, -3.0, -3.0, 3.0, 3.0, 3.0, 0.0],
        "forward_passes": 1606,
        "min_fooling_budget": None,
    },
}


@pytest.mark.parametrize("order", sorted(PINNED))
def test_grid_attack_results_are_pinned(order):
    model, images, labels = scene()
    pin = PINNED[order]
    attack = create_attack("grid", model, order=order)
    grid = attack.grid()
    points = torch.stack([grid[k] for k in ("angle_deg", "tx_px", "ty_px", "scale_x", "scale_y", "shear_deg")], 1)
    assert points.shape == (775, 6) and digest(points) == pin["grid"]
    r = attack(images, labels)
    assert r.success.tolist() == pin["success"]
    assert 1 - r.success.float().mean().item() == 0.25  # robust accuracy
    for k in ("angle_deg", "tx_px", "ty_px"):
        assert r.params[k].tolist() == pin[k], k
    assert r.forward_passes == pin["forward_passes"]
    if pin["min_fooling_budget"] is None:
        assert "min_fooling_budget" not in r.info
    else:
        assert r.info["min_fooling_budget"].tolist() == pin["min_fooling_budget"]
