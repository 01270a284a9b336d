"""The study preset: nine models (three architectures x plain / augmented / worst-of-10) under six threat models."""

from __future__ import annotations

from collections import Counter

from robustbench_geo.sweep import expand, load_config
from robustbench_geo.sweep.driver import unique_cells
from robustbench_geo.train_defenses import get_defense

ARCHS = ("cnn", "deform_cnn", "p4cnn")


def test_study_preset_parses_to_nine_models_trained_alike(tmp_path):
    cfg = load_config("study", output=tmp_path)
    assert cfg.name == "study" and cfg.jobs == 2 and cfg.seeds == [0]
    trained = {(m.model, get_defense(m.train.get("defense")).label) for m in cfg.models.values()}
    assert trained == {(a, t) for a in ARCHS for t in ("", "aug", "wo10")}
    recipes = {tuple(sorted((k, v) for k, v in m.train.items() if k != "defense")) for m in cfg.models.values()}
    assert len(recipes) == 1  # one recipe for all nine: only the defense differs
    boxes = {tuple(sorted(get_defense(m.train["defense"]).box().items())) for m in cfg.models.values() if "defense" in m.train}
    assert boxes == {(("angle_deg", (-30.0, 30.0)), ("tx_px", (-3.0, 3.0)), ("ty_px", (-3.0, 3.0)))}  # augmentation and worst-of-10 share Engstrom et al.'s box
    assert {m.dataset for m in cfg.models.values()} == {"mnist"}
    assert {d.spec for d in cfg.datasets.values()} == {"mnist", "mnist-scaled"}


def test_study_cells_cover_every_model_under_every_threat_model(tmp_path):
    cfg = load_config("study", output=tmp_path)
    cells = expand(cfg)
    assert len(unique_cells(cells)) == len(cells) == 9 * 10
    per_model = Counter(c.model_label for c in cells)
    assert set(per_model.values()) == {10}
    names = {(c.config["attack"]["name"], c.config["dataset"]["spec"]) for c in cells}
    assert names == {("none", "mnist"), ("none", "mnist-scaled"), ("grid", "mnist"), ("worst_of_k", "mnist"),
                     ("worst_of_k", "mnist-scaled"), ("scale", "mnist"), ("scale", "mnist-scaled"),
                     ("affine_pgd", "mnist"), ("stadv", "mnist"), ("manifool", "mnist")}
    grid = next(c for c in cells if c.config["attack"]["name"] == "grid").config["attack"]["params"]
    assert grid["angle_steps"] * grid["shift_steps"] ** 2 == 775 and grid["max_angle_deg"] == 30
    n = {c.config["attack"]["name"]: c.config["attack"]["runner"]["n"] for c in cells}
    assert n["grid"] == n["affine_pgd"] == 200 and n["stadv"] == n["manifool"] == 100
    # each of the nine models is trained once, shared by its ten cells
    assert len({c.train_hash for c in cells}) == 9
