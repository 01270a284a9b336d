"""One run of the quick preset on tiny settings, shared by the sweep and report tests (session scope).

The regular CNN's label is replaced by ``<script>alert(1)</script>`` and one dataset label holds
HTML, so the same run also checks that reports escape user strings.
"""

from __future__ import annotations

import dataclasses

import pytest

EVIL = "<script>alert(1)</script>"
EVIL_DATASET = "scaled & <b>bold</b>"


#: cheap settings for the shipped graph attacks (the attacks and modes stay as shipped)
GRAPH_SHRINK = {"pgd": {"steps": 5, "samples": 2, "refine_steps": 0}, "prbcd": {"epochs": 5, "epochs_resampling": 3},
                "metattack": {"train_iters": 5}, "nettack": {}}


def shrink(cfg, *, train_subset=300, test_subset=24, image_epochs=1, graph_epochs=5, graph_budget=0.002,
           image_batch_size=None):
    """The preset with tiny data sizes, epochs and graph budgets (models, attacks and image grids as shipped).

    ``image_batch_size`` (``None``: the preset's) sets the image models' batch: more, smaller steps on the
    same images for the same compute.
    """
    ds = {k: dataclasses.replace(d, train_subset=train_subset if d.train_subset else None,
                                 test_subset=test_subset if d.test_subset else None) for k, d in cfg.datasets.items()}
    def train(m):
        if m.task != "image":
            return {**m.train, "epochs": graph_epochs}
        return {**m.train, "epochs": image_epochs, **({"batch_size": image_batch_size} if image_batch_size else {})}

    ms = {k: dataclasses.replace(m, train=train(m)) for k, m in cfg.models.items()}
    attacks = {}
    for k, a in cfg.attacks.items():
        if a.domain == "graph":
            targeted = a.attack == "nettack"
            a = dataclasses.replace(a, params={**a.params, **GRAPH_SHRINK.get(a.attack, {})},
                                    runner={**a.runner, "budget": [1 if targeted else graph_budget]})
        attacks[k] = a
    return dataclasses.replace(cfg, datasets=ds, models=ms, attacks=attacks, jobs=1)  # one process: fixture runs stay cheap


def _relabel(cfg):
    """Hostile labels: the cnn model and the mnist-scaled dataset."""
    models = {(EVIL if k == "cnn" else k): dataclasses.replace(m, label=EVIL if k == "cnn" else k) for k, m in cfg.models.items()}
    ren = {"mnist-scaled": EVIL_DATASET}
    datasets = {ren.get(k, k): dataclasses.replace(d, label=ren.get(k, k)) for k, d in cfg.datasets.items()}
    attacks = {k: dataclasses.replace(a, datasets=None if a.datasets is None else tuple(ren.get(d, d) for d in a.datasets),
                                      models=None if a.models is None else tuple(EVIL if m == "cnn" else m for m in a.models))
               for k, a in cfg.attacks.items()}
    return dataclasses.replace(cfg, models=models, datasets=datasets, attacks=attacks)


@pytest.fixture(scope="session")
def quick_sweep(tmp_path_factory, mnist_root, cora_root):
    """``(config, summary)`` of the shrunk quick preset, run once with its report."""
    from robustbench_geo.report import write_report
    from robustbench_geo.sweep import load_config, run_sweep

    tmp = tmp_path_factory.mktemp("quick")
    # batches of 8: 38 steps on the 300 images (5 at the preset's 64 gave models that predict one class), so
    # the image models are right and wrong on different images and can be fooled, and the recomputed
    # numbers of test_quick_preset_recomputed.py can disagree with wrong stored ones
    cfg = _relabel(shrink(load_config("quick", output=tmp / "quick"), image_batch_size=8))
    cfg = dataclasses.replace(cfg, checkpoint_cache=str(tmp / "ckpt"))
    summary = run_sweep(cfg, progress=False, threads=1, report=write_report)
    return cfg, summary
