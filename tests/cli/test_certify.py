"""``rbgeo certify``, ``--augment ...-noise`` and the sweep's ``[certify.LABEL]`` table end to end (tiny sizes)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from click.testing import CliRunner

from robustbench_geo.cli import main
from robustbench_geo.geometry import NoisyAugmentation, get_augmentation
from robustbench_geo.sweep.config import SweepConfigError, parse_config


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def checkpoint(mnist_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "small"
    r = run("train", "small_cnn", "mnist", "--epochs", 1, "--subset", 256, "--test-subset", 64, "--batch-size", 64,
            "--augment", "rotate-noise:angle_deg=30,sigma=0.4", "--out", out, "--quiet", "--data-root", mnist_root)
    assert r.exit_code == 0, r.output
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["train"]["augment"] == "rotate-noise:angle_deg=30,sigma=0.4"
    return out


def test_noisy_augmentation_rotates_then_adds_unclamped_noise():
    aug = get_augmentation("rotate-noise:angle_deg=35,sigma=0.5")
    assert isinstance(aug, NoisyAugmentation) and aug.noise_sd == 0.5 and aug.sampler.angle_deg == (-35.0, 35.0)
    x = torch.zeros(64, 1, 28, 28)
    y = aug(x, torch.Generator().manual_seed(0))
    assert y.min() < 0 and abs(y.std().item() - 0.5) < 0.01  # zero image: only noise, not clamped
    assert get_augmentation("scale-noise:min=0.75,max=1.25").sampler.keras_zoom == (0.8, 1 / 0.75)
    with pytest.raises(ValueError, match="unknown parameter"):
        get_augmentation("rotate-noise:angle=3")
    with pytest.raises(KeyError, match="rotate-noise"):
        get_augmentation("rotate-nois")


def test_certify_cli_writes_rows_and_outcome(checkpoint, mnist_root, tmp_path):
    out = tmp_path / "cert"
    r = run("certify", checkpoint, "mnist", "--transform", "rotation", "--max-angle-deg", 10, "--n", 3, "--samples", 20,
            "--n0", 20, "--cells", 4, "--substeps", 4, "--attack-points", 5, "--out", out, "--quiet", "--data-root", mnist_root)
    assert r.exit_code == 0, r.output
    assert "certified accuracy" in r.output and "sigma=0.4" in r.output  # sigma read from the checkpoint
    o = json.loads((out / "outcome.json").read_text())
    m = o["metrics"]
    assert m["n"] == 3
    rows = list(csv.DictReader((out / "rows.csv").open()))
    assert len(rows) == 3
    for row in rows:  # the options reach the certificate, and each row is consistent with itself
        certified, abstained = row["certified"] == "True", row["abstained"] == "True"
        assert int(row["forward_passes"]) == (20 if abstained else 20 + 4 * 20)  # n0, then samples per cell
        assert certified == (not abstained and float(row["l2_margin"]) > 0)
        assert row["correct"] == str(certified and row["prediction"] == row["label"])
        assert not certified or row["smoothed_attack_robust"] == "True"
    assert m["certified_accuracy"] == sum(r["correct"] == "True" for r in rows) / 3
    dry = run("certify", checkpoint, "mnist", "--transform", "scaling", "--n", 5, "--samples", 10, "--cells", 3,
              "--substeps", 3, "--dry-run", "--data-root", mnist_root)
    assert dry.exit_code == 0 and "dry run: 5 images" in dry.output
    bad = CliRunner().invoke(main, ["certify", str(checkpoint), "mnist", "--n", "0", "--data-root", str(mnist_root)])
    assert bad.exit_code == 2 and "expected a positive number of images" in bad.output



def test_certify_outcome_follows_the_results_schema(checkpoint, mnist_root, tmp_path):
    from robustbench_geo.results_schema import read_results, validate

    out = tmp_path / "cert"
    r = run("certify", checkpoint, "mnist", "--max-angle-deg", 5, "--n", 2, "--samples", 10, "--n0", 10, "--cells", 2,
            "--substeps", 2, "--no-attack", "--out", out, "--quiet", "--data-root", mnist_root)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "outcome.json").read_text())
    validate(doc)
    assert doc["kind"] == "certificate" and doc["metrics"]["n"] == 2 and read_results(out / "outcome.json") == doc
    lo, hi = doc["metrics"]["certified_accuracy_ci"]  # an interval is one [low, high], as in every kind
    assert 0 <= lo <= doc["metrics"]["certified_accuracy"] <= hi <= 1

SWEEP = """
[sweep]
name = "cert"
[datasets.mnist]
spec = "mnist"
train_subset = 128
test_subset = 2
[models.small]
model = "small_cnn"
dataset = "mnist"
epochs = 1
augment = "scale-noise:min=0.8,max=1.2,sigma=0.3"
[certify.scale]
transform = "scaling"
params = { min_scale = 0.9, max_scale = 1.1 }
samples = 20
n0 = 20
cells = 3
substeps = 3
attack_points = 3
attack_samples = 5
"""


def test_sweep_certify_table_runs_and_reports(mnist_root, tmp_path):
    from robustbench_geo.report import write_report
    from robustbench_geo.results_schema import CERTIFICATE_RATES, ci_bounds
    from robustbench_geo.sweep import run_sweep
    from robustbench_geo.sweep.store import ResultStore
    from robustbench_geo.sweep.cells import expand

    cfg = parse_config(SWEEP, output=tmp_path / "out")
    cells = expand(cfg)
    assert [c.config["attack"]["name"] for c in cells] == ["certify"]
    summary = run_sweep(cfg, data_root=mnist_root, progress=False, report=write_report)
    assert all(r["ok"] for r in summary.ran), summary.ran
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "Certified robustness" in md and "scaling" in md
    assert 'id="certification"' in (tmp_path / "out" / "report.html").read_text()
    with ResultStore(tmp_path / "out", create=False) as store:  # the cell stores its intervals under the current names
        names = {name for (name,) in store.conn.execute("SELECT name FROM metrics")}
    assert {b for rate in CERTIFICATE_RATES for b in ci_bounds(rate)} <= names and not [k for k in names if "ci95" in k]
    with pytest.raises(SweepConfigError, match=r"certify.scale.sampels"):
        parse_config(SWEEP.replace("samples = 20", "sampels = 20"))
    with pytest.raises(SweepConfigError, match=r"certify.scale.attack_points.*non-negative integer"):
        parse_config(SWEEP.replace("attack_points = 3", 'attack_points = "3"'))
    with pytest.raises(SweepConfigError, match="unknown transformation"):
        parse_config(SWEEP.replace('transform = "scaling"', 'transform = "shear"'))
