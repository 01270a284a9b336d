"""The files of one command-line run (``rbgeo attack --out``, ``rbgeo certify --out``): rows, ``outcome.json``
(:mod:`robustbench_geo.results_schema`), and the attack's figures and artefact files.

The evaluation layer returns data only (an :class:`~robustbench_geo.evaluation.outcome.AttackOutcome` with its
``artefacts``); everything drawn or written from it is here.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import torch

from robustbench_geo.report.plots import budget_curve_png, params_text
from robustbench_geo.results_schema import certificate_record, dumps, stamped, write_json

#: what ``outcome.json`` records of the model's metadata
MODEL_KEYS = ("model", "source", "weights_file", "weights_sha256", "preprocessing", "defense")


def write_attack_files(out: Path, evaluation, *, attack: str, dataset: str, checkpoint=None,
                       label: str = "model") -> list[Path]:
    """``rows.csv`` (every seed), ``outcome.json`` (one ``attack`` record per seed), the first seed's artefacts
    (``examples.png`` for images; flips and degrees for graphs) and ``budget_curve.png`` when the attack
    measured one. Returns the paths written, the budget curve last."""
    out.mkdir(parents=True, exist_ok=True)
    outcomes, meta = evaluation.outcomes, evaluation.meta
    pd.DataFrame([{"seed": o.seed, **r} for o in outcomes for r in o.rows]).to_csv(out / "rows.csv", index=False)
    records = [stamped("attack", {"attack": o.attack, "params": o.params, "seed": o.seed, "metrics": o.metrics,
                                  "seconds": o.seconds, "config": o.config,
                                  "checkpoint": None if checkpoint is None else str(checkpoint),
                                  "model": {k: meta.get(k) for k in MODEL_KEYS if k in meta}, "dataset": dataset,
                                  "defense": evaluation.defense})
               for o in outcomes]
    write_json(out / "outcome.json", records)
    written = [out / "rows.csv", out / "outcome.json"]
    image = not hasattr(evaluation.data, "idx_test")
    written += (examples_png if image else perturbation_files)(outcomes[0], out)
    curves = [o.artefacts["budget_curve"] for o in outcomes if "budget_curve" in o.artefacts]
    if curves:
        budget_curve_png(out / "budget_curve.png", f"{attack} on {dataset}", curves, label)
        written.append(out / "budget_curve.png")
    return written


def write_certificate_files(out: Path, outcome, *, checkpoint, dataset: str) -> list[Path]:
    """``rows.csv`` (one row per image) and ``outcome.json`` (one ``certificate`` record, its intervals paired)."""
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(outcome.rows).to_csv(out / "rows.csv", index=False)
    write_json(out / "outcome.json", certificate_record(
        transform=outcome.config["transform"], config=outcome.config["smoothing"], params=outcome.params,
        metrics=outcome.metrics, seconds=outcome.seconds, checkpoint=str(checkpoint), dataset=dataset,
        seed=outcome.seed))
    return [out / "rows.csv", out / "outcome.json"]


def examples_png(outcome, out_dir) -> list[Path]:
    """Write ``examples.png``: clean (top row) vs adversarial (bottom row) with labels, predictions and parameters.

    Returns:
        The paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ex = outcome.artefacts.get("examples")
    if not ex or ex["clean"].shape[0] == 0:
        return []
    k = ex["clean"].shape[0]
    fig, axes = plt.subplots(2, k, figsize=(1.5 * k, 3.6), squeeze=False)
    for j in range(k):
        for r, (key, pred) in enumerate((("clean", ex["clean_pred"][j]), ("adversarial", ex["adv_pred"][j]))):
            img = ex[key][j].permute(1, 2, 0).numpy()
            ax = axes[r][j]
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            title = f"y={ex['label'][j]} p={pred}" if r == 0 else f"p={pred}\n{params_text(ex['params'][j], sep=' ', limit=3, short=True)}"
            ax.set_title(title, fontsize=6, color="red" if pred != ex["label"][j] else "black")
    fig.suptitle(f"{outcome.attack}: clean (top) vs adversarial (bottom); "
                 f"robust acc {100 * outcome.metrics['robust_accuracy']:.1f} %", fontsize=8)
    fig.tight_layout()
    path = out_dir / "examples.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def perturbation_files(outcome, out_dir) -> list[Path]:
    """Write ``flips.csv`` (one flip per line: i, j, kind, target) and ``degrees.csv`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a = outcome.artefacts
    lines = ["i,j,kind,target"]
    for kind in ("insertions", "deletions"):
        pairs = a.get(kind, torch.zeros(2, 0, dtype=torch.long))
        tgt = a.get(f"{kind[:-1]}_targets")
        for k in range(pairs.shape[1]):
            t = "" if tgt is None else int(tgt[k])
            lines.append(f"{int(pairs[0, k])},{int(pairs[1, k])},{kind[:-1]},{t}")
    paths = [out / "flips.csv", out / "degrees.csv", out / "perturbation.json"]
    paths[0].write_text("\n".join(lines) + "\n")
    before, after = a.get("degree_before"), a.get("degree_after")
    if before is not None:
        rows = ["node,degree_before,degree_after"] + [f"{i},{int(b)},{int(c)}" for i, (b, c) in
                                                      enumerate(zip(before.tolist(), after.tolist()))]
        paths[1].write_text("\n".join(rows) + "\n")
    paths[2].write_text(dumps({"attack": outcome.attack, "seed": outcome.seed, "metrics": outcome.metrics,
                               "config": outcome.config}))
    return [p for p in paths if p.exists()]
