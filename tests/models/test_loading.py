"""``loading.py`` and ``models/preprocessing.py`` without data: weights files, hashes, normalisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from robustbench_geo.checkpoint import PluginNotAllowedError, load_checkpoint, save_checkpoint
from robustbench_geo.loading import WeightsError, load_model, load_state, read_weights, state_sha256
from robustbench_geo.models.preprocessing import parse_preprocessing, with_preprocessing


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(10))


@pytest.mark.parametrize("spec, mean, std", [
    ("mean=0.1307,std=0.3081", (0.1307,), (0.3081,)),
    ("mean=[0.5, 0.4, 0.3], std=[0.2,0.2,0.25]", (0.5, 0.4, 0.3), (0.2, 0.2, 0.25)),
    ({"mean": [0.5, 0.4, 0.3], "std": 0.2}, (0.5, 0.4, 0.3), (0.2,)),
    (((0.1,), (0.3,)), (0.1,), (0.3,)),
])
def test_preprocessing_matches_manual_normalisation(spec, mean, std):
    assert parse_preprocessing(spec) == (mean, std)
    net = nn.Conv2d(3, 2, 1)
    x = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    wrapped = with_preprocessing(net.double(), spec)
    want = net((x - torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)) / torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1))
    torch.testing.assert_close(wrapped(x), want)
    assert wrapped.state_dict().keys() == {f"model.{k}" for k in net.state_dict()}  # no extra persistent entries


@pytest.mark.parametrize("spec, match", [
    ("mean=0.1", "expected keys mean and std"), ("std=1,mean=0,std=2", "expected 'mean=M,std=S'"),
    ("mean=a,std=1", "mean: expected numbers"), ("mean=0,std=-1", "std: expected positive"),
    ("mean=nan,std=1", "expected finite"), ("mean=[0,0],std=[1,1,1]", "as many std as mean"),
])
def test_preprocessing_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_preprocessing(spec)


def test_weights_round_trip_and_hash(tmp_path):
    net = _net()
    net(torch.rand(1, 3, 6, 6))  # materialise the lazy layer
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    for f in ("w.safetensors", "w.pt"):
        state = read_weights(tmp_path / f)
        other = _net()
        other(torch.rand(1, 3, 6, 6))
        load_state(other, state, f, "net")
        assert state_sha256(other) == state_sha256(net)
    with torch.no_grad():
        other[0].bias.add_(1e-6)
    assert state_sha256(other) != state_sha256(net)


def test_mismatched_weights_name_the_entries(tmp_path):
    state = {**nn.Linear(4, 3).state_dict(), "zzz": torch.zeros(1)}
    model = nn.Linear(4, 2)
    model.register_buffer("extra", torch.zeros(1))
    with pytest.raises(WeightsError, match=r"1 missing \(extra\); 1 unexpected \(zzz\); 2 of another shape \(file vs "
                                           r"model\) \(weight \(3, 4\) vs \(2, 4\), bias \(3,\) vs \(2,\)\)"):
        load_state(model, state, "w", "lin")


def test_load_model_refuses_untrained_and_mixed_sources(tmp_path):
    with pytest.raises(ValueError, match="would be untrained"):
        load_model("cnn", data="mnist")
    with pytest.raises(ValueError, match="expected a checkpoint or --weights, got both"):
        load_model(checkpoint=tmp_path / "ck", weights=tmp_path / "w.pt")
    with pytest.raises(ValueError, match="expected a checkpoint, or --model"):
        load_model()


def test_load_checkpoint_plugin_only_when_named(tmp_path):
    marker = tmp_path / "RAN"
    plug = tmp_path / "plug.py"
    plug.write_text(f"import torch.nn as nn\nopen({str(marker)!r}, 'w').close()\n"
                    "def f(in_features=4, num_classes=2):\n    return nn.Linear(in_features, num_classes)\n")
    save_checkpoint(tmp_path / "ck", nn.Linear(4, 2), {"model": f"{plug}:f", "model_kwargs": {}, "task": "graph"})
    for plugin in (None, f"{plug}:g", "other.py:f"):
        with pytest.raises(PluginNotAllowedError, match="never does on its own"):
            load_checkpoint(tmp_path / "ck", plugin=plugin)
    assert not marker.exists()
    model, meta = load_checkpoint(tmp_path / "ck", plugin=f"{plug}:f")
    assert marker.exists() and isinstance(model, nn.Linear)


def test_model_spec_must_match_a_registered_checkpoint(tmp_path):
    from robustbench_geo.models import create_model

    kw = {"in_features": 4, "num_classes": 2}
    save_checkpoint(tmp_path / "g", create_model("gcn", **kw), {"model": "gcn", "model_kwargs": kw, "task": "graph"})
    with pytest.raises(ValueError, match="does not match checkpoint .*a 'gcn'"):
        load_model(str(tmp_path / "nope.py") + ":f", checkpoint=tmp_path / "g")  # never imported: not even looked up
    model, meta = load_model("gcn", checkpoint=tmp_path / "g")
    assert meta["source"] == "checkpoint" and not model.training
