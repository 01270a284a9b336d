import json

import pytest
import torch

from robustbench_geo.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from robustbench_geo.models import create_model


def _save(tmp_path, name="deform_cnn", **kw):
    torch.manual_seed(0)
    model = create_model(name, **kw)
    path = save_checkpoint(tmp_path / "ck", model, {"model": name, "model_kwargs": kw, "seed": 0})
    return model, path


def test_round_trip(tmp_path):
    model, path = _save(tmp_path, num_deform=2, deform="v2")
    loaded, meta = load_checkpoint(tmp_path / "ck")
    x = torch.rand(2, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), loaded(x))
    assert meta["model_kwargs"] == {"num_deform": 2, "deform": "v2"} and "torch" in meta["versions"]
    assert (tmp_path / "ck.safetensors").exists() and path == tmp_path / "ck.json"


def test_truncated_weights(tmp_path):
    _save(tmp_path)
    w = tmp_path / "ck.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated, edited or replaced"):
        load_checkpoint(tmp_path / "ck")


def test_edited_or_broken_metadata(tmp_path):
    _save(tmp_path)
    m = tmp_path / "ck.json"
    meta = json.loads(m.read_text())
    meta["model_kwargs"]["num_deform"] = 4  # does not fit the stored weights
    m.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="edited after it was saved"):
        load_checkpoint(tmp_path / "ck")
    # a checkpoint from before format 2 (no hash of its JSON) still fails on the weights' shapes
    m.write_text(json.dumps({**{k: v for k, v in meta.items() if k != "meta_sha256"}, "format_version": 1}))
    with pytest.raises(CheckpointError, match="does not fit model 'deform_cnn'"):
        load_checkpoint(tmp_path / "ck")
    m.write_text(m.read_text()[:20])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_metadata(tmp_path / "ck")


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    _save(tmp_path)
    before = (tmp_path / "ck.safetensors").read_bytes()
    with pytest.raises(ValueError, match="expected key 'model_kwargs'"):
        save_checkpoint(tmp_path / "ck", create_model("cnn"), {"model": "cnn"})
    assert (tmp_path / "ck.safetensors").read_bytes() == before
    load_checkpoint(tmp_path / "ck")


def test_loading_never_unpickles(tmp_path):
    _save(tmp_path)
    (tmp_path / "ck.safetensors").write_bytes(b"\x80\x04\x95" + b"\x00" * 64)  # a pickle header
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "ck")


def test_json_is_covered_by_the_hash_recorded_in_the_weights(tmp_path):
    """An edited ``model`` with the same parameter shapes (cnn -> atrous_cnn) is refused, not evaluated as
    the wrong model; so is any other edit, and a JSON whose recorded hash was edited along with it."""
    _save(tmp_path, name="cnn")
    cnn_shapes = {k: v.shape for k, v in create_model("cnn").state_dict().items()}
    assert {k: v.shape for k, v in create_model("atrous_cnn").state_dict().items()} == cnn_shapes  # the danger
    m = tmp_path / "ck.json"
    good = m.read_text()
    meta = json.loads(good)
    assert meta["format_version"] == 2 and len(meta["meta_sha256"]) == 64
    for edit in ({"model": "atrous_cnn"}, {"seed": 1}, {"task": "image", "dataset": "fashion-mnist"},
                 {"model": "atrous_cnn", "meta_sha256": "0" * 64}):
        m.write_text(json.dumps({**meta, **edit}))
        with pytest.raises(CheckpointError, match="edited after it was saved"):
            read_metadata(tmp_path / "ck")
        with pytest.raises(CheckpointError, match="edited after it was saved"):
            load_checkpoint(tmp_path / "ck")
    m.write_text(json.dumps(meta, indent=4))  # formatting and key order are not content
    load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck.safetensors").rename(tmp_path / "moved.safetensors")  # renaming both files keeps it valid
    m.rename(tmp_path / "moved.json")
    load_checkpoint(tmp_path / "moved")
