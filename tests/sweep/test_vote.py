"""``vote = K`` in a sweep's model table: the model is attacked as deployed behind a majority vote of K random transforms."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from robustbench_geo.data import load_dataset
from robustbench_geo.loading import load_model
from robustbench_geo.models.vote import MajorityVote
from robustbench_geo.sweep import ResultStore, SweepConfigError, expand, parse_config, run_sweep
from tests.sweep.conftest import tiny_toml

VOTED = """
[models.voted]
model = "cnn"
dataset = "mnist"
epochs = 1
batch_size = 100
vote = 3
"""


def test_a_vote_is_a_new_cell_on_the_same_checkpoint(tmp_path):
    cells = {c.model_label: c for c in expand(parse_config(tiny_toml(tmp_path) + VOTED))}
    plain, voted = cells["cnn"], cells["voted"]
    assert voted.train_hash == plain.train_hash  # trained once, cached once
    assert voted.hash != plain.hash and voted.config["model"]["vote"] == 3
    assert "vote" not in plain.config["model"]  # models without a vote keep their cell hashes


@pytest.mark.parametrize("value, match", [("0", r"models\.voted\.vote \(line \d+\): expected a positive number of votes, got 0"),
                                          ('"10"', r"models\.voted\.vote \(line \d+\): expected a positive number of votes"),
                                          ("2.5", r"models\.voted\.vote \(line \d+\): expected a positive number of votes")])
def test_bad_votes_name_the_key(tmp_path, value, match):
    with pytest.raises(SweepConfigError, match=match):
        parse_config(tiny_toml(tmp_path) + VOTED.replace("vote = 3", f"vote = {value}"), "test.toml")


def test_graph_models_take_no_vote(tmp_path):
    text = tiny_toml(tmp_path, graph=True).replace("epochs = 30", "epochs = 30\nvote = 3")
    with pytest.raises(SweepConfigError, match=r"models\.gcn\.vote.*image models only"):
        parse_config(text)


def test_voted_cell_attacks_the_vote_as_deployed(tmp_path, mnist_root):
    attacks = '\n[attacks.wok]\nattack = "worst_of_k"\nparams = { k = 3 }\n'
    cfg = parse_config(tiny_toml(tmp_path / "out", cache=str(tmp_path / "ckpt"), attacks=attacks) + VOTED)
    summary = run_sweep(cfg, data_root=mnist_root, progress=False, threads=1, report=None)
    assert not summary.failed, [r["error"] for r in summary.failed]
    assert len(list((tmp_path / "ckpt").glob("*.json"))) == 1  # one training for both models
    with ResultStore(tmp_path / "out", create=False) as store:
        rows = {r["model"]: r for r in store.cells()}
    voted = rows["voted"]
    assert voted["info"]["vote"]["votes"] == 3 and voted["info"]["vote"]["randomness"] == "fresh"
    assert rows["cnn"]["info"]["vote"] is None
    # the stored clean predictions are the vote's (first call after the attack's copy, seeded by the cell's
    # seed): recomputed here on an independently loaded checkpoint
    model, _ = load_model(None, checkpoint=voted["checkpoint"], data=load_dataset("mnist", split="test", root=mnist_root))
    ds = load_dataset("mnist", split="test", root=mnist_root, seed=0, subset=60)
    images = ds.images
    vote = MajorityVote(model.eval(), votes=3, seed=0, randomness="fresh")
    with torch.no_grad():
        expected = vote(images).argmax(1)
    per_image = pd.read_csv(tmp_path / "out" / voted["artefact_dir"] / "rows.csv")
    assert torch.equal(torch.tensor(per_image["clean_pred"].values), expected)
    plain = pd.read_csv(tmp_path / "out" / rows["cnn"]["artefact_dir"] / "rows.csv")
    with torch.no_grad():
        assert torch.equal(torch.tensor(plain["clean_pred"].values), model(images).argmax(1))
