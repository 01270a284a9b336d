"""Sweep models that are evaluated as given: ``checkpoint = ...`` and ``factory = ...`` with ``pretrained = true``.

One small CNN is trained here (300 MNIST images, 1 epoch) and enters the sweep three ways: its
checkpoint, the registered architecture plus its weights file, and a plug-in factory that returns
it loaded. The sweep must never train, all three must give the same numbers, and the cell key must
follow the weights' SHA-256 (not the weights file's path).
"""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from robustbench_geo.sweep import SweepConfigError, expand, parse_config, run_sweep
from robustbench_geo.sweep.runner import run_cell

PLUGIN = '''
from safetensors.torch import load_file
from robustbench_geo.models import create_model


def trained(in_channels, num_classes, image_size):
    net = create_model("cnn", in_channels=in_channels, num_classes=num_classes, image_size=image_size)
    net.load_state_dict(load_file({weights!r}))
    return net
'''


def sweep_toml(tmp, ck, *, extra_models="", attacks=None):
    return f"""
[sweep]
name = "evaluated"
output = "{tmp / 'out'}"

[datasets.mnist]
spec = "mnist"
test_subset = 40

[models.ck]
checkpoint = "{ck}"
dataset = "mnist"

[models.arch]
factory = "cnn"
pretrained = true
weights = "{ck}.safetensors"
dataset = "mnist"

[models.plugin]
factory = "{tmp / 'plug.py'}:trained"
pretrained = true
dataset = "mnist"
{extra_models}
""" + (attacks if attacks is not None else """
[attacks.clean]
attack = "none"

[attacks.rotation]
attack = "grid"
params = { angle_steps = 3, shift_steps = 1, max_angle_deg = 20 }
""")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_root):
    from robustbench_geo.training import fit

    tmp = tmp_path_factory.mktemp("evaluated")
    fit("cnn", "mnist", epochs=1, subset=300, test_subset=100, seed=0, out=tmp / "cnn", data_root=mnist_root,
        batch_size=32, lr=3e-3)
    (tmp / "plug.py").write_text(PLUGIN.format(weights=str(tmp / "cnn.safetensors")))
    return tmp


def test_evaluated_models_are_never_trained(trained, mnist_root, monkeypatch):
    import robustbench_geo.sweep.runner as runner
    import robustbench_geo.training as training

    def no_training(*args, **kwargs):
        raise AssertionError("an evaluated model was trained")

    monkeypatch.setattr(runner, "trained_model", no_training)
    monkeypatch.setattr(runner, "fit", no_training)
    monkeypatch.setattr(training, "fit", no_training)
    cfg = parse_config(sweep_toml(trained, trained / "cnn"))
    assert [m.source for m in cfg.models.values()] == ["checkpoint", "pretrained", "pretrained"]
    summary = run_sweep(cfg, data_root=mnist_root, progress=False)
    assert not summary.failed, summary.failed[0]["error"] if summary.failed else ""
    assert len(summary.ran) == 3 * 2
    by = {(r["cell"].model_label, r["cell"].attack_label): r["metrics"] for r in summary.ran}
    for attack in ("clean", "rotation"):  # one set of weights, three ways in: the same numbers
        assert by[("ck", attack)] == by[("arch", attack)] == by[("plugin", attack)]
    assert by[("ck", "rotation")]["robust_accuracy"] <= by[("ck", "rotation")]["clean_accuracy"]
    cell = summary.ran[0]["cell"]
    assert cell.config["training"] is None and cell.config["model"]["source"] == "checkpoint"


def test_cell_key_follows_the_weights(trained, tmp_path):
    base = {c.model_label: c.hash for c in expand(parse_config(sweep_toml(trained, trained / "cnn")))}
    # the same files elsewhere: the same cells
    for suffix in (".json", ".safetensors"):
        shutil.copy(trained / f"cnn{suffix}", tmp_path / f"moved{suffix}")
    (tmp_path / "plug.py").write_text((trained / "plug.py").read_text())
    moved = {c.model_label: c.hash for c in expand(parse_config(sweep_toml(tmp_path, tmp_path / "moved")))}
    assert moved["ck"] == base["ck"] and moved["arch"] == base["arch"]
    assert moved["plugin"] != base["plugin"]  # a plug-in is code: its file path is part of its identity
    # changed weights (a re-saved checkpoint, as after more training): new cells for every model using them
    state = load_file(str(tmp_path / "moved.safetensors"))
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    from robustbench_geo.checkpoint import read_metadata, save_checkpoint
    from robustbench_geo.models import create_model

    meta = read_metadata(tmp_path / "moved")
    net = create_model("cnn", **{k: tuple(v) if isinstance(v, list) else v for k, v in meta["model_kwargs"].items()})
    net.load_state_dict(state)
    save_checkpoint(tmp_path / "moved", net, {k: meta[k] for k in ("model", "model_kwargs", "task", "dataset")})
    (tmp_path / "plug.py").write_text(PLUGIN.format(weights=str(tmp_path / "moved.safetensors")))
    changed = {c.model_label: c.hash for c in expand(parse_config(sweep_toml(tmp_path, tmp_path / "moved")))}
    assert all(changed[k] != moved[k] for k in moved)


def test_weights_changed_after_expansion_fail_the_cell(trained, tmp_path, mnist_root):
    for suffix in (".json", ".safetensors"):
        shutil.copy(trained / f"cnn{suffix}", tmp_path / f"ck{suffix}")
    (tmp_path / "plug.py").write_text((trained / "plug.py").read_text())
    cell = expand(parse_config(sweep_toml(tmp_path, tmp_path / "ck")))[2]  # models.arch x clean
    assert cell.model_label == "arch"
    state = load_file(str(tmp_path / "ck.safetensors"))
    save_file({k: torch.zeros_like(v) for k, v in state.items()}, str(tmp_path / "ck.safetensors"))
    res = run_cell(cell.config, cell.train_hash, cache_dir=tmp_path / "cache", data_root=mnist_root)
    assert not res["ok"] and "weights changed since the sweep was expanded" in res["error"]


def test_checkpoint_naming_a_plugin_is_not_imported(trained, tmp_path):
    from robustbench_geo.checkpoint import read_metadata, save_checkpoint
    from robustbench_geo.models import create_model

    marker = tmp_path / "IMPORTED"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\n" + PLUGIN.format(weights=str(trained / "cnn.safetensors")))
    meta = read_metadata(trained / "cnn")
    net = create_model("cnn", in_channels=1, num_classes=10, image_size=(28, 28))
    save_checkpoint(tmp_path / "evil", net, {"model": f"{evil}:trained", "model_kwargs": meta["model_kwargs"],
                                              "task": "image"})
    text = sweep_toml(trained, trained / "cnn", extra_models=f'\n[models.evil]\ncheckpoint = "{tmp_path / "evil"}"\n'
                                                              f'dataset = "mnist"\n')
    with pytest.raises(SweepConfigError, match=r"models\.evil\.checkpoint \(line \d+\).*plug-in model.*model = "):
        parse_config(text)
    assert not marker.exists()
    allowed = text.replace(f'checkpoint = "{tmp_path / "evil"}"', f'checkpoint = "{tmp_path / "evil"}"\nmodel = "{evil}:trained"')
    assert parse_config(allowed).models["evil"].plugin == f"{evil}:trained"  # named in the sweep file: allowed


@pytest.mark.parametrize("model, match", [
    ('factory = "cnn"\nweights = "{ck}.safetensors"', r"models\.x \(line \d+\): factory = \.\.\. models .*pretrained = true"),
    ('factory = "cnn"\npretrained = true\nweights = "{ck}.json"', r"models\.x\.weights.*cannot be read"),
    ('factory = "cnn"\npretrained = true', r"models\.x\.factory.*would be untrained"),
    ('checkpoint = "{ck}"\nepochs = 3', r"models\.x\.epochs.*evaluated, never trained"),
    ('checkpoint = "{ck}"\nfactory = "cnn"', r"models\.x\.factory.*got both"),
    ('checkpoint = "{ck}-missing"', r"models\.x\.checkpoint.*not found"),
    ('factory = "cnn"\npretrained = true\nweights = "{ck}.safetensors"\npreprocessing = "mean=1"',
     r"models\.x\.preprocessing.*mean and std"),
    ('model = "cnn"\nweights = "{ck}.safetensors"', r"models\.x\.weights.*does not apply"),
])
def test_bad_evaluated_models(trained, model, match):
    text = sweep_toml(trained, trained / "cnn", extra_models="\n[models.x]\ndataset = \"mnist\"\n"
                      + model.format(ck=trained / "cnn") + "\n")
    with pytest.raises(SweepConfigError, match=match):
        parse_config(text, "test.toml")
