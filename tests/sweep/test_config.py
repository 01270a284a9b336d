"""Sweep files: parsing, validation messages (key and line), cell expansion and hashing."""

from __future__ import annotations

import pytest

from robustbench_geo.sweep import SweepConfigError, expand, list_presets, load_config, parse_config
from tests.sweep.conftest import tiny_toml

GRID_ATTACK = """
[attacks.clean]
attack = "none"
datasets = ["mnist", "scaled"]

[datasets.scaled]
spec = "mnist-scaled"
test_subset = 60
"""


def test_parse_and_expand(tmp_path):
    cfg = parse_config(tiny_toml(tmp_path, seeds=(0, 1, 2), attacks=GRID_ATTACK))
    assert cfg.name == "tiny" and cfg.seeds == [0, 1, 2] and set(cfg.datasets) == {"mnist", "scaled"}
    cells = expand(cfg)
    assert len(cells) == 2 * 3  # two evaluation datasets x three seeds
    assert len({c.hash for c in cells}) == len(cells)
    assert len({c.train_hash for c in cells}) == 3  # one trained model per seed, shared by both datasets
    c = cells[0]
    assert c.config["training"]["train"]["epochs"] == 1 and c.config["training"]["train_subset"] == 300
    assert c.config["attack"]["runner"] == {"n": 60}
    assert c.config["package_version"]


def test_hash_is_stable_and_covers_the_configuration(tmp_path):
    base = expand(parse_config(tiny_toml(tmp_path)))[0]
    # same configuration written differently (another label, another output) -> same hash
    again = expand(parse_config(tiny_toml(tmp_path / "elsewhere", model_label="my cnn")))[0]
    assert again.hash == base.hash and again.train_hash == base.train_hash
    # anything that changes the result changes the hash
    for text in (tiny_toml(tmp_path, seeds=(1,)), tiny_toml(tmp_path).replace("epochs = 1", "epochs = 2"),
                 tiny_toml(tmp_path).replace("test_subset = 60", "test_subset = 61"),
                 tiny_toml(tmp_path).replace('model = "cnn"', 'model = "deform_cnn"')):
        assert expand(parse_config(text))[0].hash != base.hash
    # the evaluation subset is not part of training
    other = expand(parse_config(tiny_toml(tmp_path).replace("test_subset = 60", "test_subset = 61")))[0]
    assert other.train_hash == base.train_hash


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.replace('[sweep]', '[sweep\n'), r"malformed TOML.*line"),
    (lambda t: t.replace('epochs = 1', 'epochs = 1\nepochz = 3'), r"models\.cnn\.epochz \(line 17\): unknown key 'epochz'"),
    (lambda t: t.replace('model = "cnn"', 'model = "cnnn"'), r"models\.cnn\.model \(line 14\): unknown model 'cnnn'.*Did you mean 'cnn'"),
    (lambda t: t.replace('spec = "mnist"', 'spec = "mnits"'), r"datasets\.mnist\.spec \(line 9\): unknown dataset 'mnits'"),
    (lambda t: t.replace('attack = "none"', 'attack = "no_such_attack"'), r"attacks\.clean\.attack \(line \d+\): unknown attack"),
    (lambda t: t + 'params = { angle = 3 }\n', r"attacks\.clean\.params\.angle.*unknown parameter"),
    (lambda t: t.replace('dataset = "mnist"', 'dataset = "cifar"'), r"models\.cnn\.dataset \(line 15\): unknown dataset label 'cifar'"),
    (lambda t: t.replace('seeds = [0]', 'seeds = [0, 0]'), r"sweep\.seeds \(line 5\): expected distinct seeds"),
    (lambda t: t.replace('train_subset = 300', 'train_subset = -3'), r"datasets\.mnist\.train_subset.*positive integer"),
    (lambda t: t + 'budget = [0.1]\n', r"attacks\.clean \(line \d+\): attack .none.*takes no budget"),
    (lambda t: t.replace('name = "tiny"\n', ''), r"sweep.*expected a 'name' key"),
    (lambda t: t.replace('seeds = [0]', 'seeds = [0]\njobs = 0'), r"sweep\.jobs \(line 6\): expected a positive integer.*got 0"),
    (lambda t: t.replace('seeds = [0]', 'seeds = [0]\njobs = true'), r"sweep\.jobs \(line 6\): expected a positive integer.*got True"),
])
def test_errors_name_key_and_line(tmp_path, edit, match):
    with pytest.raises(SweepConfigError, match=match):
        parse_config(edit(tiny_toml(tmp_path)), "test.toml")


def test_jobs_is_a_default_for_the_run_not_part_of_any_cell(tmp_path):
    one = parse_config(tiny_toml(tmp_path))
    two = parse_config(tiny_toml(tmp_path).replace("seeds = [0]", "seeds = [0]\njobs = 2"))
    assert one.jobs == 1 and two.jobs == 2
    assert [c.hash for c in expand(one)] == [c.hash for c in expand(two)]  # how cells run never changes them


def test_line_points_into_the_right_table(tmp_path):
    text = tiny_toml(tmp_path, graph=True).replace("epochs = 30", "epochs = 30\nlr = -1")
    with pytest.raises(SweepConfigError, match=r"models\.gcn\.lr \(line 25\): bad training settings: lr: expected a number in \(0.0, 10.0\], got -1"):
        parse_config(text)


def test_graph_model_on_image_data_is_refused(tmp_path):
    text = tiny_toml(tmp_path).replace('model = "cnn"', 'model = "gcn"')
    with pytest.raises(SweepConfigError, match=r"models\.cnn\.dataset.*'gcn' is for graph data"):
        parse_config(text)


def test_presets_parse():
    assert {"quick", "paper"} <= set(list_presets())
    for name in list_presets():
        cfg = load_config(name)
        assert expand(cfg), name
    with pytest.raises(KeyError, match="unknown preset 'quik'.*Did you mean 'quick'"):
        load_config("quik")
