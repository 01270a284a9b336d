import pytest
import torch

from robustbench_geo.attacks import create_attack, get_attack, list_attacks
from robustbench_geo.evaluation import evaluate_attack
from robustbench_geo.attacks.image import GridAttack, WorstOfK
from robustbench_geo.attacks.image.search import FIELDS, params_in_box
from robustbench_geo.geometry import affine_matrix, warp

from .conftest import DiskVsRing

# small settings so that every attack runs in about a second on the tiny model
SMALL = {
    "grid": {"angle_steps": 7, "shift_steps": 3},
    "worst_of_k": {"k": 5},
    "random": {},
    "affine_pgd": {"steps": 5, "restarts": 2, "scale_range": (0.9, 1.1), "max_shear_deg": 5.0},
    "scale": {"steps": 5, "refine_steps": 3, "scale_range": (0.7, 1.3)},
    "scale_aniso": {"steps": 4, "refine_steps": 3, "anisotropic": True},
    "stadv": {"steps": 10},
}
BUDGET = {  # name -> parameter box implied by SMALL and the defaults
    "grid": {"angle_deg": (-30, 30), "tx_px": (-3, 3), "ty_px": (-3, 3), "scale_x": (1, 1), "shear_deg": (0, 0)},
    "worst_of_k": {"angle_deg": (-30, 30), "tx_px": (-3, 3), "ty_px": (-3, 3), "scale_x": (1, 1)},
    "random": {"angle_deg": (-30, 30), "tx_px": (-3, 3), "ty_px": (-3, 3), "scale_x": (1, 1)},
    "affine_pgd": {"angle_deg": (-30, 30), "tx_px": (-3, 3), "ty_px": (-3, 3), "scale_x": (0.9, 1.1),
                   "scale_y": (0.9, 1.1), "shear_deg": (-5, 5)},
    "scale": {"angle_deg": (0, 0), "scale_x": (0.7, 1.3), "scale_y": (0.7, 1.3)},
    "scale_aniso": {"scale_x": (0.4, 1.0), "scale_y": (0.4, 1.0)},
}


def _make(name, model, **extra):
    base = "scale" if name == "scale_aniso" else name
    return create_attack(base, model, **{**SMALL[name], **extra})


@pytest.mark.parametrize("name", [n for n in SMALL if n != "stadv"])
def test_affine_attack_properties(name, tiny_model, mnist_small):
    x, y = mnist_small.images[:32], mnist_small.labels[:32]
    res = _make(name, tiny_model)(x, y)
    # success re-verified by an independent forward pass of exactly the returned images
    with torch.no_grad():
        pred = tiny_model(res.adversarial.clone()).argmax(1)
    assert torch.equal(res.success, pred != y)
    assert res.adversarial.min() >= 0 and res.adversarial.max() <= 1 and res.adversarial.shape == x.shape
    # the stored parameters replay the images and lie inside the budget
    assert torch.allclose(res.replay(x).clamp(0, 1), res.adversarial, atol=1e-6)
    assert params_in_box(res.params, BUDGET[name])
    assert res.forward_passes >= x.shape[0] and res.loss.shape == (32,)
    # deterministic for a seed
    again = _make(name, tiny_model)(x, y)
    assert torch.equal(again.adversarial, res.adversarial) and torch.equal(again.success, res.success)
    # the attack never does worse than the clean image
    clean_wrong = tiny_model(x).argmax(1) != y
    assert bool((res.success | ~clean_wrong).all())


def test_grid_contains_identity_and_every_grid_point_success(tiny_model, mnist_small):
    x, y = mnist_small.images, mnist_small.labels
    atk = GridAttack(tiny_model, angle_steps=6, shift_steps=2)  # even step counts: 0 must be added
    grid = atk.grid()
    assert {"angle_deg", "tx_px", "ty_px"} <= set(grid) and grid["angle_deg"].shape[0] == 7 * 3 * 3
    assert all(grid[k][0].item() == v for k, v in {"angle_deg": 0, "tx_px": 0, "ty_px": 0, "scale_x": 1}.items())
    res = atk(x, y)
    fooled_by_any = torch.zeros_like(y, dtype=torch.bool)
    with torch.no_grad():
        for t in range(grid["angle_deg"].shape[0]):
            m = affine_matrix((28, 28), *(grid[k][t] for k in FIELDS))
            fooled_by_any |= tiny_model(warp(x, m)).argmax(1) != y
    assert torch.equal(res.success, fooled_by_any)


def test_grid_orders_visit_the_same_points_and_fool_the_same_samples(tiny_model, mnist_small):
    x, y = mnist_small.images, mnist_small.labels
    box = {"angle_steps": 7, "shift_steps": 3, "max_angle_deg": 10, "max_shift_px": 1}  # some samples survive
    small, large = GridAttack(tiny_model, **box), GridAttack(tiny_model, **box, order="largest")
    gs, gl = small.grid(), large.grid()
    pts = lambda g: sorted(zip(*(g[k].tolist() for k in FIELDS)))  # noqa: E731
    assert pts(gs) == pts(gl) and gl["angle_deg"][0] == 0 and gl["tx_px"][0] == 0  # identity first in both
    size = lambda g, t: max(abs(g["angle_deg"][t]) / 10, abs(g["tx_px"][t]), abs(g["ty_px"][t]))  # noqa: E731
    assert [size(gl, t) for t in range(1, 4)] == [1.0, 1.0, 1.0] and size(gs, 1) < 1.0
    rs, rl = small(x, y), large(x, y)
    assert torch.equal(rs.success, rl.success) and rs.success.any() and not rs.success.all()
    # each kept fooling transform really fools, and the outside-in order needs fewer model calls
    with torch.no_grad():
        assert torch.equal(tiny_model(rl.replay(x).clamp(0, 1)).argmax(1) != y, rl.success)
    assert rl.forward_passes < rs.forward_passes
    with pytest.raises(KeyError, match="smallest"):
        GridAttack(tiny_model, order="random")


def test_grid_robust_accuracy_at_most_clean(tiny_model, mnist_small):
    out = evaluate_attack(tiny_model, mnist_small, "grid", {"angle_steps": 5, "shift_steps": 3}, progress=False,
                          batch_size=20)
    m = out.metrics
    assert m["robust_accuracy"] <= m["clean_accuracy"] and m["verification_mismatches"] == 0
    assert len(out.rows) == 64 and {"angle_deg", "tx_px", "ty_px", "success", "loss", "clean_pred"} <= set(out.rows[0])
    n_correct = sum(r["clean_pred"] == r["label"] for r in out.rows)
    assert m["success_rate"] == pytest.approx(sum(r["success"] for r in out.rows) / n_correct)
    ex = out.artefacts["examples"]
    assert ex["clean"].shape == ex["adversarial"].shape and 0 < ex["clean"].shape[0] <= 16
    assert len(ex["params"]) == len(ex["label"]) == ex["clean"].shape[0]
    assert out.config["warp"]["align_corners"] is True and out.config["params"]["max_angle_deg"] == 30.0


def test_worst_of_k_is_reproducible_by_seed(tiny_model, mnist_small):
    x, y = mnist_small.images[:16], mnist_small.labels[:16]
    a, b = WorstOfK(tiny_model, k=4, seed=3)(x, y), WorstOfK(tiny_model, k=4, seed=3)(x, y)
    c = WorstOfK(tiny_model, k=4, seed=4)(x, y)
    assert all(torch.equal(a.params[k], b.params[k]) for k in FIELDS)
    assert not torch.equal(a.params["angle_deg"], c.params["angle_deg"])
    assert torch.equal(WorstOfK(tiny_model, k=4, seed=3).sample(16)["angle_deg"], WorstOfK(tiny_model, k=4, seed=3).sample(16)["angle_deg"])


def test_rotation_invariant_model_is_not_fooled_by_rotations(mnist_small):
    model = DiskVsRing().eval()
    x = mnist_small.images
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    margin = (logits[:, 0] - logits[:, 1]).abs() / logits.sum(1)
    keep = margin > 0.15
    x, y = x[keep], y[keep]
    assert x.shape[0] >= 20
    rot = GridAttack(model, max_angle_deg=180, angle_steps=37, max_shift_px=0, shift_steps=1)(x, y)
    assert not rot.success.any()
    # the same model is fooled once the threat model moves ink between disk and ring
    shifted = GridAttack(model, max_angle_deg=0, angle_steps=1, max_shift_px=8, shift_steps=5)(x, y)
    assert shifted.success.any()


def test_empty_batch_and_bad_input(tiny_model):
    res = GridAttack(tiny_model, angle_steps=3, shift_steps=1)(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long))
    assert res.adversarial.shape == (0, 1, 28, 28) and res.success.shape == (0,)
    with pytest.raises(ValueError, match=r"expected values in \[0, 1\]"):
        GridAttack(tiny_model)(torch.full((2, 1, 28, 28), 2.0), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"max_angle_deg: expected a number in \[0.0, 180.0\], got -1"):
        GridAttack(tiny_model, max_angle_deg=-1)
    for bad in (float("inf"), float("nan"), True, "abc"):  # one shared check: finite numbers of the right type
        with pytest.raises(ValueError, match="max_angle_deg: expected a"):
            GridAttack(tiny_model, max_angle_deg=bad)
    with pytest.raises(ValueError, match="min <= max"):
        create_attack("scale", tiny_model, scale_range=(1.2, 0.8))
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['max_angle'\]"):
        evaluate_attack(tiny_model, None, "grid", {"max_angle": 3})
    with pytest.raises(KeyError, match="Valid losss|Valid loss"):
        GridAttack(tiny_model, loss="hinge")


def test_max_batch_defaults_per_device_and_never_changes_results(tiny_model, mnist_small):
    from robustbench_geo.attacks.image.core import DEFAULT_MAX_BATCH

    x, y = mnist_small.images[:20], mnist_small.labels[:20]
    default = GridAttack(tiny_model, angle_steps=5, shift_steps=3)
    assert default.max_batch == DEFAULT_MAX_BATCH["cpu"]
    small = GridAttack(tiny_model, angle_steps=5, shift_steps=3, max_batch=7)
    assert small.max_batch == 7
    a, b = default(x, y), small(x, y)
    assert torch.equal(a.success, b.success) and torch.allclose(a.adversarial, b.adversarial)
    with pytest.raises(ValueError, match="max_batch: expected an integer >= 1, got 0"):
        GridAttack(tiny_model, max_batch=0)


def test_every_image_attack_documents_its_parameters():
    names = list_attacks("image")
    assert {"grid", "worst_of_k", "random", "affine_pgd", "scale"} <= set(names)
    for name in names:
        e = get_attack(name)
        missing = [p for p in e.params if p not in e.param_docs]
        assert not missing, (name, missing)
