"""The quick preset's stored numbers, recomputed without the sweep's code path.

Each check loads the cell's stored checkpoint into a new model, reloads the evaluation data, and
recomputes the cell's accuracies from the model's own forward passes: images warped here from the
per-image parameters the attack recorded (rotation, scale and shift matrices built in this file, not
:func:`robustbench_geo.geometry.affine_matrix`), graphs rebuilt here from the stored inserted and
deleted pairs. A runner that stored the wrong predictions, counted the wrong images or nodes,
recorded parameters that do not produce its adversarial images, or let the attack's state leak
into its re-measure gives numbers that differ from these.
"""

from __future__ import annotations

import json
import math

import kornia.geometry.transform as KT
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from robustbench_geo.checkpoint import load_checkpoint
from robustbench_geo.data import load_dataset
from robustbench_geo.models import create_model
from robustbench_geo.sweep import ResultStore
from robustbench_geo.training import TrainConfig, seed_everything, train_graph_model

AFFINE_ATTACKS = ("none", "grid", "worst_of_k", "scale", "affine_pgd")


def _cells(cfg) -> list[dict]:
    with ResultStore(cfg.output, "quick") as store:
        return [r for r in store.cells() if r["status"] == "done"]


def _model(cell):
    model, meta = load_checkpoint(cell["checkpoint"])
    return model.eval(), meta


def _rotation_scale_shift(rows: pd.DataFrame, size: tuple[int, int]) -> torch.Tensor:
    """``(B, 2, 3)`` matrices: scale the content by ``scale_x``/``scale_y`` and rotate it by ``angle_deg``
    counter-clockwise (as displayed, y down) about the centre, then shift it by ``tx_px``/``ty_px``."""
    assert (rows["shear_deg"] == 0).all()
    h, w = size
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64)
    out = torch.zeros(len(rows), 2, 3, dtype=torch.float64)
    for b, r in enumerate(rows.itertuples()):
        a = math.radians(r.angle_deg)
        rotation = torch.tensor([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]], dtype=torch.float64)
        linear = rotation @ torch.diag(torch.tensor([r.scale_x, r.scale_y], dtype=torch.float64))
        out[b, :, :2] = linear
        out[b, :, 2] = centre - linear @ centre + torch.tensor([r.tx_px, r.ty_px], dtype=torch.float64)
    return out.float()


@torch.no_grad()
def _predictions(logits: torch.Tensor, stored: pd.Series) -> torch.Tensor:
    """The model's predictions, checked against the stored ones. Where the top two logits tie within
    rounding (a float32 warp computed in another order can move an image on the decision boundary)
    the stored prediction is taken; everywhere else they must be equal."""
    stored = torch.tensor(stored.values)
    top2 = logits.topk(2, dim=1).values
    tie = (top2[:, 0] - top2[:, 1]) < 1e-4
    pred = logits.argmax(1)
    assert ((pred == stored) | tie).all(), f"stored predictions differ at {(pred != stored).nonzero().flatten().tolist()}"
    assert tie.sum() <= 1, "more than one tie: the replay is not the attack's transform"
    return torch.where(tie, stored, pred)


@torch.no_grad()
def test_image_cells_recomputed_from_the_checkpoint_and_the_recorded_transforms(quick_sweep):
    cfg, _ = quick_sweep
    cells = [c for c in _cells(cfg) if "n" in c["config"]["attack"]["runner"]]
    checked = set()
    for cell in cells:
        attack, spec = cell["config"]["attack"]["name"], cell["config"]["dataset"]["spec"]
        model, _ = _model(cell)
        n = int(cell["metrics"]["n"])
        data = load_dataset(spec, split="test", seed=cell["seed"], subset=n)
        rows = pd.read_csv(cfg.output / cell["artefact_dir"] / "rows.csv")
        assert len(data) == len(rows) == n == cfg.datasets[cell["config"]["dataset"]["label"]].test_subset
        assert rows["label"].tolist() == data.labels.tolist()
        clean = _predictions(model(data.images), rows["clean_pred"])
        correct = clean == data.labels
        assert cell["metrics"]["clean_accuracy"] == pytest.approx(correct.double().mean().item()), (attack, spec)
        doc = json.loads((cfg.output / cell["artefact_dir"] / "artefacts.json").read_text())
        if attack == "stadv":  # a flow field per image, not stored: the stored examples are re-classified
            adv = load_file(str(cfg.output / cell["artefact_dir"] / "artefacts.safetensors"))["examples.adversarial"]
            _predictions(model(adv), rows["adv_pred"].iloc[doc["artefacts"]["examples"]["index"]])
            checked.add(attack)
            continue
        if attack == "none":  # no attack: robust is clean
            assert cell["metrics"]["robust_accuracy"] == pytest.approx(cell["metrics"]["clean_accuracy"])
            checked.add(attack)
            continue
        assert attack in AFFINE_ATTACKS, f"no replay for {attack!r}: add one"
        warp = doc["attack_config"]["warp"]
        assert warp == {"mode": "bilinear", "padding_mode": "zeros", "align_corners": True}
        adv_images = KT.warp_affine(data.images, _rotation_scale_shift(rows, data.images.shape[-2:]),
                                    dsize=tuple(data.images.shape[-2:]), **warp)
        held = _predictions(model(adv_images), rows["adv_pred"]) == data.labels
        assert cell["metrics"]["robust_accuracy"] == pytest.approx((correct & held).double().mean().item()), (attack, spec)
        checked.add(attack)
    assert checked >= {"none", "grid", "worst_of_k", "scale", "affine_pgd", "stadv"}


def _undirected(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return {(min(i, j), max(i, j)) for i, j in edge_index.t().tolist()}


def _perturbed(clean: set, insertions: torch.Tensor, deletions: torch.Tensor) -> torch.Tensor:
    """The ``(2, 2E')`` edge index of the clean pairs plus the insertions minus the deletions."""
    ins, dels = _undirected(insertions), _undirected(deletions)
    assert len(ins) == insertions.shape[1] and len(dels) == deletions.shape[1]  # no pair twice
    assert not ins & clean and dels <= clean and all(i != j for i, j in ins)
    pairs = sorted((clean | ins) - dels)
    e = torch.tensor(pairs, dtype=torch.long).t()
    return torch.cat([e, e.flip(0)], 1)


@torch.no_grad()
def test_graph_cells_recomputed_from_the_checkpoint_and_the_stored_flips(quick_sweep):
    cfg, _ = quick_sweep
    cells = [c for c in _cells(cfg) if "mode" in c["config"]["attack"]["runner"] or c["config"]["dataset"]["spec"] == "cora"]
    graph = load_dataset("cora", seed=0)
    clean_pairs = _undirected(graph.edge_index)
    test, y = graph.idx_test, graph.y
    checked = set()
    for cell in cells:
        attack, m = cell["config"]["attack"]["name"], cell["metrics"]
        mode = cell["config"]["attack"]["runner"].get("mode", "evasion")
        model, meta = _model(cell)
        folder = cfg.output / cell["artefact_dir"]
        clean_pred = model(graph.x, graph.edge_index).argmax(1)
        if mode == "evasion":
            assert m["clean_accuracy"] == pytest.approx((clean_pred[test] == y[test]).double().mean().item()), attack
        if attack == "none":
            assert m["robust_accuracy"] == pytest.approx(m["clean_accuracy"])
            checked.add(attack)
            continue
        flips = load_file(str(folder / "artefacts.safetensors"))
        rows = pd.read_csv(folder / "rows.csv")
        assert m["flips"] == flips["insertions"].shape[1] + flips["deletions"].shape[1] <= m["budget"]
        if attack == "nettack":  # each target attacked alone: its own flips on the clean graph
            assert m["feature_flips"] == 0
            held = []
            for r in rows.itertuples():
                mine = {k: flips[k][:, flips[f"{k[:-1]}_targets"] == r.target] for k in ("insertions", "deletions")}
                assert mine["insertions"].shape[1] + mine["deletions"].shape[1] == r.flips <= r.budget
                pred = int(model(graph.x, _perturbed(clean_pairs, mine["insertions"], mine["deletions"]))[r.target].argmax())
                assert pred == r.prediction, (attack, r.target)
                held.append(pred == int(y[r.target]))
            assert m["robust_accuracy"] == pytest.approx(sum(held) / len(held))
            checked.add(attack)
            continue
        edges = _perturbed(clean_pairs, flips["insertions"], flips["deletions"])
        assert m["budget"] == math.floor(cell["config"]["attack"]["runner"]["budget"] * len(clean_pairs))
        if mode == "poisoning":  # a new model of the checkpoint's recipe, trained on the perturbed graph with the cell's seed
            def retrained(edge_index):
                seed_everything(cell["seed"])
                net = create_model(meta["model"], **meta["model_kwargs"])
                with torch.enable_grad():  # this test runs under no_grad
                    train_graph_model(net, graph.with_edges(edge_index),
                                      TrainConfig(**{**meta["train"], "seed": cell["seed"]}), progress=False)
                return net.eval()

            clean_pred = retrained(graph.edge_index)(graph.x, graph.edge_index).argmax(1)
            assert m["clean_accuracy"] == pytest.approx((clean_pred[test] == y[test]).double().mean().item())
            model = retrained(edges)
        pred = model(graph.x, edges).argmax(1)
        assert rows["node"].tolist() == test.tolist() and rows["prediction"].tolist() == pred[test].tolist(), attack
        assert m["robust_accuracy"] == pytest.approx((pred[test] == y[test]).double().mean().item()), attack
        checked.add(attack)
    assert checked == {"none", "pgd", "prbcd", "metattack", "nettack"}
