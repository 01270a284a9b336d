"""ManiFool's invariance score of trained checkpoints side by side, with 95 % intervals.

For each checkpoint, ``manifool`` runs on the same seeded MNIST test images; the script prints per
model the clean accuracy, the share of correctly classified images ManiFool fools, the invariance
score (mean normalised geodesic distance of the fooling transforms, Kanbak et al. 2018) with a 95 %
normal interval over images, its median, and the accuracy at three normalised budgets read off the
one-pass budget curve (95 % Wilson intervals). The last line compares the first two models' scores
(difference and its 95 % interval, Welch).

Usage (checkpoints of ``rbgeo train``, e.g. the quick preset's recipe)::

    python benchmarks/manifool_invariance.py CKPT_CNN CKPT_DEFORM --n 500 --results benchmarks/results/image-attacks/manifool-invariance.json
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import torch

from results_file import print_table, write_results
from robustbench_geo.checkpoint import load_checkpoint
from robustbench_geo.data import load_dataset
from robustbench_geo.evaluation import evaluate_attack
from robustbench_geo.evaluation.image import budget_curve
from robustbench_geo.stats import wilson_interval

BUDGETS = (0.25, 0.5, 1.0)


def pct(k: int, n: int) -> str:
    lo, hi = wilson_interval(k, n)
    return f"{100 * k / n:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--n", type=int, default=500, help="seeded MNIST test subset (seed 0)")
    ap.add_argument("--group", default="similarity")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--results", default=None)
    args = ap.parse_args()
    ds = load_dataset("mnist", split="test", subset=args.n, seed=0)
    rows, data, scores = [], [], []
    for path in args.checkpoints:
        model, meta = load_checkpoint(path)
        t0 = time.perf_counter()
        out = evaluate_attack(model, ds, "manifool", {"group": args.group, "steps": args.steps}, progress=False)
        seconds = time.perf_counter() - t0
        n = len(ds)
        correct = [r["clean_pred"] == r["label"] for r in out.rows]
        dist = [r["normalised_distance"] for r, c in zip(out.rows, correct) if c and r["success"]]
        n_correct = sum(correct)
        mean = statistics.fmean(dist)
        half = 1.96 * statistics.stdev(dist) / math.sqrt(len(dist))
        scores.append((mean, statistics.variance(dist) / len(dist)))
        curve = out.artefacts["budget_curve"]
        budgets, acc = budget_curve(curve["correct"], curve["min_fooling_budget"])
        at = [int(round(float(acc[torch.searchsorted(budgets, torch.tensor([b], dtype=torch.float64), right=True) - 1]) * n))
              for b in BUDGETS]
        name = meta.get("model", path)
        rows.append([f"`{name}`", pct(n_correct, n), pct(len(dist), n_correct), f"{mean:.3f} [{mean - half:.3f}, {mean + half:.3f}]",
                     f"{statistics.median(dist):.3f}", *(pct(k, n) for k in at), f"{seconds:.0f}"])
        data.append({"checkpoint": str(path), "model": name, "n": n, "correct": n_correct, "fooled": len(dist),
                     "normalised_distances": dist, "seconds": seconds, "metrics": out.metrics,
                     "accuracy_at": dict(zip(map(str, BUDGETS), at))})
    columns = ["model", "clean accuracy", "fooled (of correct)", "invariance score [95 % CI]", "median",
               *(f"accuracy at {b:g}" for b in BUDGETS), "seconds"]
    print(f"manifool (group={args.group}, steps={args.steps}) on {args.n} seeded MNIST test images; torch threads "
          f"{torch.get_num_threads()}; {platform.processor() or platform.machine()}; load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print_table(columns, rows)
    notes = None
    if len(scores) >= 2:
        (m0, v0), (m1, v1) = scores[:2]
        half = 1.96 * math.sqrt(v0 + v1)
        notes = (f"score difference {data[1]['model']} - {data[0]['model']}: {m1 - m0:+.3f} "
                 f"[{m1 - m0 - half:+.3f}, {m1 - m0 + half:+.3f}] (95 %, Welch normal)")
        print(notes)
    if args.results:
        write_results(args.results, f"ManiFool ({args.group}) on {args.n} seeded MNIST test images: clean accuracy and "
                      "accuracy at normalised geodesic budgets with 95 % Wilson intervals; invariance score = mean "
                      "normalised distance over the fooled, correctly classified images with a 95 % normal interval",
                      columns, rows, data=data, notes=notes)


if __name__ == "__main__":
    main()
