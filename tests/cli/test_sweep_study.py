"""``rbgeo sweep --preset study --dry-run``: the study's cells and its cost line, which must fit 2 hours on two workers."""

from __future__ import annotations

import re

from click.testing import CliRunner

from robustbench_geo.cli import main


def test_study_dry_run_prints_every_cell_and_a_cost_within_two_hours(tmp_path, monkeypatch):
    monkeypatch.setenv("RBGEO_CACHE", str(tmp_path / "cache"))  # nothing cached: every model is counted as trained
    res = CliRunner().invoke(main, ["sweep", "--preset", "study", "--dry-run", "--output", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("sweep 'study' (preset 'study'") and "90 cells" in lines[0]
    cells = [ln for ln in lines[1:-1] if ln.startswith("  ")]
    assert len(cells) == 90 and all(" new " in ln and re.search(r"~\d+ s \(calibrated\)$", ln) for ln in cells)
    for label in ("cnn", "cnn_aug", "cnn_wo10", "deform_cnn", "deform_cnn_aug", "deform_cnn_wo10", "p4cnn", "p4cnn_aug",
                  "p4cnn_wo10"):
        assert sum(f"  {label} x " in ln for ln in cells) == 10
    cost = re.fullmatch(r"90 cells to run, estimated ([\d.]+) min with 2 job\(s\) on this machine \(rough: .*\)", lines[-1])
    assert cost, lines[-1]
    per_cell = sum(float(re.search(r"~(\d+) s", ln).group(1)) for ln in cells)
    assert abs(float(cost.group(1)) - per_cell / 2 / 60) <= 1  # the total is the cells' sum over two workers
    assert float(cost.group(1)) <= 120  # the preset is sized to finish within 2 hours on a 2-core machine
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
