"""A checkpoint with and without Engstrom et al.'s test-time majority vote, under the grid and worst-of-10.

The vote (``robustbench_geo.models.vote.MajorityVote``: ``--votes`` random rotations in +-30 deg and
shifts in +-3 px per input, new draws on every call, as deployed) is attacked by the same attacks as
the plain model; the runner re-classifies the clean and the returned images with the deployed vote,
and those passes give the accuracies (95 % Wilson intervals).

Usage::

    python benchmarks/vote_defense.py CHECKPOINT --votes 10 --n-grid 100 --n-wok 500 --results benchmarks/results/image-attacks/vote-defense.json
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from results_file import print_table, write_results
from robustbench_geo.checkpoint import load_checkpoint
from robustbench_geo.data import load_dataset
from robustbench_geo.evaluation import evaluate_attack
from robustbench_geo.models.vote import MajorityVote
from robustbench_geo.stats import wilson_interval

ATTACKS = {"worst-of-10": ("worst_of_k", {"k": 10}), "grid (775 points)": ("grid", {"order": "largest"})}


def pct(acc: float, n: int) -> str:
    lo, hi = wilson_interval(round(acc * n), n)
    return f"{100 * acc:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--votes", type=int, default=10)
    ap.add_argument("--n-grid", type=int, default=100, help="seeded MNIST test images for the grid")
    ap.add_argument("--n-wok", type=int, default=500, help="seeded MNIST test images for worst-of-10")
    ap.add_argument("--results", default=None)
    args = ap.parse_args()
    base, meta = load_checkpoint(args.checkpoint)
    name = meta.get("model", args.checkpoint)
    rows, data = [], []
    for label, (attack, params) in ATTACKS.items():
        n = args.n_grid if attack == "grid" else args.n_wok
        ds = load_dataset("mnist", split="test", subset=n, seed=0)
        for defended in (False, True):
            model = MajorityVote(base, votes=args.votes, seed=0) if defended else base
            t0 = time.perf_counter()
            out = evaluate_attack(model, ds, attack, params, progress=False)
            seconds = time.perf_counter() - t0
            m = out.metrics
            who = f"`{name}` + vote of {args.votes}" if defended else f"`{name}`"
            rows.append([who, label, str(n), pct(m["clean_accuracy"], n), pct(m["robust_accuracy"], n),
                         f"{int(m['verification_mismatches'])}", f"{seconds:.0f}"])
            data.append({"model": who, "attack": attack, "params": out.params, "n": n, "metrics": m, "seconds": seconds})
    columns = ["model", "attack", "n", "clean accuracy", "robust accuracy", "verification mismatches", "seconds"]
    print(f"{args.checkpoint}: vote of {args.votes} (+-30 deg, +-3 px, fresh draws per call); torch threads "
          f"{torch.get_num_threads()}; {platform.processor() or platform.machine()}; load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print_table(columns, rows)
    if args.results:
        write_results(args.results, f"{name} with and without a test-time majority vote of {args.votes} random "
                      "rotations + shifts, under worst-of-10 and the 775-point grid; accuracies re-measured on the "
                      "deployed vote (fresh draws), 95 % Wilson intervals", columns, rows, data=data)


if __name__ == "__main__":
    main()
