"""Spatial training defenses in sweep files: parsed, hashed, trained, recorded and labelled in reports."""

from __future__ import annotations

import json

import pytest

from robustbench_geo.report import write_report
from robustbench_geo.sweep import SweepConfigError, expand, parse_config, run_sweep
from robustbench_geo.train_defenses import get_defense
from tests.sweep.conftest import tiny_toml

DEFENDED = """
[models.robust]
model = "cnn"
dataset = "mnist"
epochs = 1
batch_size = 100
defense = "worst_of_k:k=2,max_angle_deg=20"
"""


def test_no_defense_keeps_the_cell_hash_and_a_defense_changes_it(tmp_path):
    base = expand(parse_config(tiny_toml(tmp_path)))[0]
    assert "defense" not in base.config["training"]["train"]
    explicit = expand(parse_config(tiny_toml(tmp_path).replace("epochs = 1", 'epochs = 1\ndefense = "none"')))[0]
    assert (explicit.hash, explicit.train_hash) == (base.hash, base.train_hash)
    wo = expand(parse_config(tiny_toml(tmp_path).replace("epochs = 1", 'epochs = 1\ndefense = "worst_of_k"')))[0]
    assert wo.hash != base.hash and wo.train_hash != base.train_hash
    assert wo.config["training"]["train"]["defense"] == get_defense("worst_of_k").spec
    same = expand(parse_config(tiny_toml(tmp_path).replace("epochs = 1", 'epochs = 1\ndefense = "worst_of_k:k=10"')))[0]
    assert same.hash == wo.hash  # a default written out is the same cell


@pytest.mark.parametrize("value, match", [
    ('"worst_of_10"', r"models\.cnn\.defense \(line \d+\): unknown defense 'worst_of_10'.*Valid defenses: affine_pgd, "
                      r"augment, none, worst_of_k"),
    ('"augment:angle=3"', r"models\.cnn\.defense \(line \d+\): defense 'augment': unknown parameter 'angle'"),
    ("10", r"models\.cnn\.defense \(line \d+\): expected a defense spec"),
])
def test_bad_defenses_name_the_key(tmp_path, value, match):
    with pytest.raises(SweepConfigError, match=match):
        parse_config(tiny_toml(tmp_path).replace("epochs = 1", f"epochs = 1\ndefense = {value}"), "test.toml")


def test_graph_models_take_no_defense(tmp_path):
    text = tiny_toml(tmp_path, graph=True).replace("epochs = 30", 'epochs = 30\ndefense = "augment"')
    with pytest.raises(SweepConfigError, match=r"models\.gcn\.defense.*spatial defenses apply to image datasets only"):
        parse_config(text)


def test_defended_model_is_trained_recorded_and_labelled(tmp_path, mnist_root):
    cfg = parse_config(tiny_toml(tmp_path / "out", cache=str(tmp_path / "ckpt")) + DEFENDED)
    run_sweep(cfg, data_root=mnist_root, progress=False, threads=1, report=write_report)
    metas = {json.loads(p.read_text())["train"].get("defense"): json.loads(p.read_text())
             for p in (tmp_path / "ckpt").glob("*.json")}
    assert set(metas) == {None, get_defense("worst_of_k:k=2,max_angle_deg=20").spec}
    defended = metas[get_defense("worst_of_k:k=2,max_angle_deg=20").spec]
    assert defended["defense"]["label"] == "wo2"
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| robust (cnn+wo2) |" in summary and "| cnn |" in summary
    html = (tmp_path / "out" / "report.html").read_text()
    assert "robust (cnn+wo2)" in html and "<small>(cnn+wo2)</small>" in html
    model_json = json.loads((tmp_path / "out" / "json" / "robust.json").read_text())
    assert model_json["trained_as"] == "cnn+wo2" and model_json["model"] == "cnn"
    assert json.loads((tmp_path / "out" / "json" / "cnn.json").read_text())["trained_as"] == "cnn"
