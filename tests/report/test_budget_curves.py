"""The report draws accuracy at every budget for attacks that record per-image smallest fooling budgets."""

from __future__ import annotations

import re

import pytest
import torch

from robustbench_geo.evaluation.image import budget_curve
from robustbench_geo.report import write_report
from robustbench_geo.sweep import ResultStore, load_config, run_sweep
from robustbench_geo.sweep.runner import read_artefacts
from tests.sweep.conftest import tiny_toml

ATTACKS = """
[attacks.clean]
attack = "none"

[attacks.manifool]
attack = "manifool"
params = { steps = 10 }

[attacks.grid_angle]
attack = "grid"
params = { order = "angle", angle_steps = 7, shift_steps = 3 }

[attacks.grid_largest]
attack = "grid"
params = { order = "largest", angle_steps = 7, shift_steps = 3 }
"""


def test_report_has_one_curve_per_attack_that_records_budgets(tmp_path, mnist_root):
    path = tmp_path / "curves.toml"
    path.write_text(tiny_toml(tmp_path / "curves", name="curves", cache=tmp_path / "ckpt", attacks=ATTACKS))
    cfg = load_config(path)
    summary = run_sweep(cfg, progress=False, threads=1, report=write_report)
    assert not summary.failed
    html = (cfg.output / "report.html").read_text()
    section = html.split('id="budget-curves"', 1)[1].split("<h2", 1)[0]
    captions = re.findall(r'alt="budget curve: ([^"]+)"', section)
    assert sorted(captions) == ["grid_angle on mnist", "manifool on mnist"]  # grid_largest records nothing
    assert "normalised geodesic distance" in section and "max angle (deg)" in section
    # the stored budgets give the cell's own robust accuracy at the largest budget
    with ResultStore(cfg.output, create=False) as store:
        cells = [c for c in store.cells() if c["attack"] in ("manifool", "grid_angle")]
    assert len(cells) == 2
    for c in cells:
        bc = read_artefacts(cfg.output / c["artefact_dir"])["budget_curve"]
        budgets, acc = budget_curve(bc["correct"], bc["min_fooling_budget"])
        assert float(acc[-1]) == pytest.approx(c["metrics"]["robust_accuracy"])
        assert float(acc[0]) == pytest.approx(c["metrics"]["clean_accuracy"])
        assert bc["correct"].dtype == torch.bool and bc["min_fooling_budget"].shape == (60,)
