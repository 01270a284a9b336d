"""Spatial training defenses: the batch each one trains on, checked against loops and the checkpoint."""

import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from robustbench_geo.check import UnknownNameError
from robustbench_geo.checkpoint import load_checkpoint, read_metadata
from robustbench_geo.cli import main
from robustbench_geo.geometry import affine_matrix, warp
from robustbench_geo.train_defenses import (
    DEFENSES, apply_params, first_order_search, get_defense, sample_box, worst_of_k_search,
)
from robustbench_geo.training import TrainConfig, fit

BOX = ("angle_deg", "tx_px", "ty_px", "scale")


@pytest.fixture(scope="module")
def net_and_batch(mnist_root, mnist_test):
    """A cnn trained briefly (its loss depends on the transform, unlike an untrained one's), in train mode:
    the searches must run in eval mode and restore it."""
    net = fit("cnn", "mnist", epochs=1, subset=640, test_subset=32, batch_size=64, progress=False,
              data_root=mnist_root).model.train()
    return net, mnist_test.images[:24], mnist_test.labels[:24]


def _in_box(params: dict, spec, tol=1e-5) -> bool:
    o = get_defense(spec).options
    lims = {"angle_deg": (-o["max_angle_deg"], o["max_angle_deg"]), "tx_px": (-o["max_shift_px"], o["max_shift_px"]),
            "ty_px": (-o["max_shift_px"], o["max_shift_px"]), "scale": (o["min_scale"], o["max_scale"])}
    return all(bool(((params[k] >= lo - tol) & (params[k] <= hi + tol)).all()) for k, (lo, hi) in lims.items())


@pytest.mark.parametrize("k", [1, 3, 10])
def test_worst_of_k_picks_the_highest_loss_draw_of_a_loop(net_and_batch, k):
    net, x, y = net_and_batch
    spec = f"worst_of_k:k={k},max_angle_deg=40,max_shift_px=4,min_scale=0.8,max_scale=1.2"
    d = get_defense(spec)
    adv, chosen = d.transform(net, x, y, torch.Generator().manual_seed(7))
    assert net.training  # the model's mode is restored
    draws = sample_box(d.box(), k, len(x), torch.Generator().manual_seed(7))  # the same draws again
    net.eval()
    try:
        for i in range(len(x)):  # one image and one draw at a time
            losses = []
            for j in range(k):
                m = affine_matrix((28, 28), draws["angle_deg"][j, i], draws["tx_px"][j, i], draws["ty_px"][j, i],
                                  draws["scale"][j, i])
                with torch.no_grad():
                    losses.append(F.cross_entropy(net(warp(x[i:i + 1], m).clamp(0, 1)), y[i:i + 1]).item())
            best = max(range(k), key=lambda j: losses[j])
            for key in BOX:
                assert chosen[key][i].item() == pytest.approx(draws[key][best, i].item(), abs=1e-6), (i, key, losses)
            with torch.no_grad():
                got = F.cross_entropy(net(adv[i:i + 1]), y[i:i + 1]).item()
            assert got == pytest.approx(losses[best], rel=1e-4, abs=1e-5)
    finally:
        net.train()
    assert _in_box(chosen, spec)


def test_worst_of_k_search_returns_every_loss_and_the_argmax(net_and_batch):
    net, x, y = net_and_batch
    net.eval()
    draws = sample_box({"angle_deg": (-30, 30)}, 5, len(x), torch.Generator().manual_seed(1))
    params, losses, pick = worst_of_k_search(net, x, y, draws)
    net.train()
    assert losses.shape == (5, len(x)) and torch.equal(pick, losses.argmax(0))
    assert torch.equal(params["angle_deg"], draws["angle_deg"].gather(0, pick[None])[0])
    assert (params["tx_px"] == 0).all() and (params["scale"] == 1).all()  # not in the box: the identity


@pytest.mark.parametrize("spec", ["augment", "augment:max_angle_deg=10,max_shift_px=0,min_scale=0.5,max_scale=2",
                                  "worst_of_k:k=4,max_angle_deg=5", "affine_pgd:steps=3,min_scale=0.9,max_scale=1.1"])
def test_every_defense_stays_in_its_box_and_replays(net_and_batch, spec):
    net, x, y = net_and_batch
    d = get_defense(spec)
    adv, params = d.transform(net, x, y, torch.Generator().manual_seed(3))
    assert _in_box(params, spec)
    assert torch.allclose(adv, apply_params(x, params), atol=1e-6)  # the batch is the recorded transforms
    assert adv.min() >= 0 and adv.max() <= 1 and net.training
    again, _ = d.transform(net, x, y, torch.Generator().manual_seed(3))
    assert torch.equal(adv, again)  # deterministic for the generator's seed
    moved = {k: (params[k] - (1.0 if k == "scale" else 0.0)).abs().max().item() for k in BOX}
    box = d.box()
    for k in BOX:  # a parameter moves iff its range is open
        assert (moved[k] > 0) == (k in box), (k, moved)


def test_augment_spans_the_box():
    d = get_defense("augment:max_angle_deg=20,max_shift_px=2,min_scale=0.5,max_scale=2")
    draws = sample_box(d.box(), 1, 20000, torch.Generator().manual_seed(0))
    assert -20 <= draws["angle_deg"].min() < -19.9 and 19.9 < draws["angle_deg"].max() <= 20
    assert -2 <= draws["tx_px"].min() < -1.99 and 1.99 < draws["ty_px"].max() <= 2
    assert 0.5 <= draws["scale"].min() < 0.51 and 1.98 < draws["scale"].max() <= 2
    assert abs(draws["scale"].log().mean().item()) < 0.02  # log-uniform: as many shrunk as enlarged


def test_first_order_ascent_never_ends_below_its_start(net_and_batch):
    net, x, y = net_and_batch
    net.eval()
    for p in net.parameters():
        p.grad = None  # training left its last gradients
    box = {"angle_deg": (-30.0, 30.0), "tx_px": (-3.0, 3.0), "ty_px": (-3.0, 3.0)}
    start = {k: v[0] for k, v in sample_box(box, 1, len(x), torch.Generator().manual_seed(5)).items()}
    zero_steps = first_order_search(net, x, y, box, 0, 0.25, torch.Generator().manual_seed(5))
    for k in BOX:
        assert torch.equal(zero_steps[k], start[k])  # 0 steps: the random start itself
    found = first_order_search(net, x, y, box, 5, 0.25, torch.Generator().manual_seed(5))
    with torch.no_grad():
        l0 = F.cross_entropy(net(apply_params(x, start)), y, reduction="none")
        l1 = F.cross_entropy(net(apply_params(x, found)), y, reduction="none")
    net.train()
    assert (l1 >= l0 - 1e-5).all()  # the highest-loss iterate is kept, the start is one of them
    assert l1.mean() > l0.mean() + 1e-3  # and the ascent does climb
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("spec, error, match", [
    ("worst_of_10", UnknownNameError, "unknown defense 'worst_of_10'.*Valid defenses: affine_pgd, augment, none, worst_of_k"),
    ("worst_of_k:kk=3", ValueError, "unknown parameter 'kk'; valid parameters: k, max_angle_deg"),
    ("worst_of_k:k=2.5", ValueError, "k: expected an integer"),
    ("augment:min_scale=1.2,max_scale=1.1", ValueError, r"max_scale: expected a number in \[1.2, 100.0\]"),
    ("augment:max_angle_deg=big", ValueError, "expected key=number items"),
    ("augment:max_angle_deg=200", ValueError, "max_angle_deg: expected a number in"),
    ("affine_pgd:step_frac=0", ValueError, "step_frac"),
])
def test_bad_defense_specs_fail_with_the_valid_names(spec, error, match):
    with pytest.raises(error, match=match):
        get_defense(spec)
    with pytest.raises(error, match=match):
        TrainConfig(defense=spec)


def test_the_defense_names():
    assert set(DEFENSES) == {"none", "augment", "worst_of_k", "affine_pgd"}


def test_specs_are_canonical_and_labelled():
    assert get_defense("worst_of_k").spec == get_defense("worst_of_k:k=10.0,max_shift_px=3").spec
    assert [get_defense(s).label for s in ("none", "augment", "worst_of_k", "worst_of_k:k=4", "affine_pgd:steps=7")] == \
        ["", "aug", "wo10", "wo4", "pgd7"]
    assert TrainConfig(defense="worst_of_k").defense == get_defense("worst_of_k").spec
    assert [get_defense(s).cost for s in ("none", "augment", "worst_of_k", "affine_pgd:steps=2")] == \
        pytest.approx([1, 1, 1 + 10 / 3, 3 + 1 / 3])  # plain training steps per batch, for --dry-run
    assert "defense" not in TrainConfig().record()  # no defense: the settings hash as before defenses existed
    assert TrainConfig(defense="augment").record()["defense"].startswith("augment:max_angle_deg=30.0")


def test_checkpoint_round_trips_the_defense(mnist_root, tmp_path):
    spec = "worst_of_k:k=3,max_angle_deg=20"
    kw = dict(epochs=1, subset=192, test_subset=64, batch_size=64, seed=1, progress=False, data_root=mnist_root)
    r = fit("cnn", "mnist", defense=spec, out=tmp_path / "wo3", **kw)
    meta = read_metadata(tmp_path / "wo3")  # hash-checked JSON
    assert get_defense(meta["train"]["defense"]) == get_defense(spec)
    assert meta["defense"] == {"name": "worst_of_k", "label": "wo3", "params": {
        "k": 3, "max_angle_deg": 20.0, "max_shift_px": 3.0, "min_scale": 1.0, "max_scale": 1.0}}
    model, loaded = load_checkpoint(tmp_path / "wo3")
    assert loaded["defense"] == meta["defense"]
    for a, b in zip(model.state_dict().values(), r.model.state_dict().values()):
        assert torch.equal(a, b)
    plain = fit("cnn", "mnist", **kw)
    assert "defense" not in plain.meta and "defense" not in plain.meta["train"]
    changed = [k for k, v in plain.model.state_dict().items() if not torch.equal(v, r.model.state_dict()[k])]
    assert changed  # the defended batches trained another model from the same seed
    assert not math.isnan(r.history[0]["loss"])


def test_cli_train_with_a_defense_and_a_bad_one(mnist_root, tmp_path):
    runner = CliRunner()
    out = tmp_path / "ck"
    res = runner.invoke(main, ["train", "cnn", "mnist", "--epochs", "1", "--subset", "64", "--test-subset", "32",
                               "--defense", "augment:max_angle_deg=15", "--out", str(out), "--quiet",
                               "--data-root", str(mnist_root)])
    assert res.exit_code == 0, res.output
    assert "cnn+aug on mnist: clean accuracy" in res.output
    assert read_metadata(out)["train"]["defense"] == get_defense("augment:max_angle_deg=15").spec
    bad = tmp_path / "bad"
    res = runner.invoke(main, ["train", "cnn", "mnist", "--defense", "worst-of-k", "--out", str(bad),
                               "--data-root", str(mnist_root)])
    assert res.exit_code != 0
    assert "unknown defense 'worst-of-k'" in res.output and "Valid defenses: affine_pgd, augment, none, worst_of_k" \
        in res.output
    assert len(res.output.strip().splitlines()) == 1 and not list(tmp_path.glob("bad*"))
    res = runner.invoke(main, ["train", "gcn", "cora", "--defense", "augment"])
    assert res.exit_code != 0 and "spatial defenses apply to image datasets only" in res.output
