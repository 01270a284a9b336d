"""The grid attack's two visit orders side by side: same robust accuracy, different cost.

``grid`` (Engstrom et al.'s 775 points by default) is exhaustive, so every order finds the same set of
fooled images; what the order changes is how soon a fooled image leaves the search (early exit) and
which fooling transform is kept. ``order="smallest"`` (the default) keeps a smallest fooling
transform but reaches the large transforms that fool most images last; ``order="largest"`` visits
the same points outside-in. This script runs both on the same trained model and images, in one
process, alternating, and prints robust accuracy, model calls and seconds with their ratios.

Usage (a checkpoint of ``rbgeo train``, e.g. the quick preset's ``cnn``)::

    python benchmarks/grid_order.py CHECKPOINT --n 500 --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from robustbench_geo.attacks.image import GridAttack
from robustbench_geo.checkpoint import load_checkpoint
from robustbench_geo.data import load_dataset
from robustbench_geo.stats import wilson_interval


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--n", type=int, default=500, help="seeded test subset")
    ap.add_argument("--max-angle-deg", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=100, help="images per attack call")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, meta = load_checkpoint(args.checkpoint)
    ds = load_dataset(args.dataset, split="test", subset=args.n, seed=0)
    x, y = ds.images, ds.labels
    rows = {}
    for order in ("smallest", "largest"):
        attack = GridAttack(model, max_angle_deg=args.max_angle_deg, order=order)
        t0, passes, fooled = time.perf_counter(), 0, []
        for s in range(0, len(y), args.batch):
            res = attack(x[s:s + args.batch], y[s:s + args.batch])
            passes += res.forward_passes
            fooled.append(res.success)
        fooled = torch.cat(fooled)
        rows[order] = {"robust": int((~fooled).sum()), "passes": passes, "seconds": time.perf_counter() - t0,
                       "fooled": fooled}
    same = torch.equal(rows["smallest"]["fooled"], rows["largest"]["fooled"])
    n = len(y)
    print(f"{meta.get('model', '?')} ({args.checkpoint}), {args.dataset}, n = {n}, grid +-{args.max_angle_deg:g} deg x "
          f"+-3 px (775 points); torch threads {torch.get_num_threads()}; {platform.processor() or platform.machine()}; "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("| order | robust accuracy (95 % CI) | model calls (images) | seconds | vs smallest |")
    print("| --- | --- | ---: | ---: | ---: |")
    base = rows["smallest"]
    for order, r in rows.items():
        lo, hi = wilson_interval(r["robust"], n)
        print(f"| {order} | {100 * r['robust'] / n:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}] | {r['passes']:,} | "
              f"{r['seconds']:.1f} | {base['passes'] / r['passes']:.2f}x calls, {base['seconds'] / r['seconds']:.2f}x time |")
    print(f"same fooled images in both orders: {same}")
    if not same:
        raise SystemExit("the two orders disagree: the grid search is not exhaustive")


if __name__ == "__main__":
    main()
