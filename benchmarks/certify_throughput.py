"""Throughput of the certificate's two inner loops on this machine: noisy forward passes per second of
``sample_counts`` and seconds per interpolation bound (rotation +-30 deg, 120 cells x 400 sub-steps;
scaling 0.8-1.2, 100 x 400), for ``small_cnn`` on MNIST-sized inputs.

Run it from two checkouts to compare code versions side by side (same process load)::

    mkdir -p /tmp/rbgeo_old && git archive <commit> robustbench_geo | tar -x -C /tmp/rbgeo_old
    for i in 1 2; do for tree in /tmp/rbgeo_old $PWD; do
        OMP_NUM_THREADS=1 PYTHONPATH=$tree python benchmarks/certify_throughput.py --label $tree; done; done

Prints one JSON line (best of ``--reps``) with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

import robustbench_geo
from robustbench_geo.models import create_model
from robustbench_geo.smoothing import tss
from robustbench_geo.smoothing.families import interpolation_bound, make_family


def _best(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", default="")
    ap.add_argument("--samples", type=int, default=20_000, help="noisy forward passes per timing")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = create_model("small_cnn").eval()
    image = torch.rand(1, 1, 28, 28)
    cpu = torch.device("cpu")
    out = {"label": args.label, "package": os.path.dirname(robustbench_geo.__file__), "threads": torch.get_num_threads(),
           "load_before": os.getloadavg()[0]}
    net = tss.inference_model(model, tss.probe_batch(image, 0.5, cpu)) if hasattr(tss, "inference_model") else model
    for name, m in (("eager", model), ("sampling_model", net)):
        s = _best(lambda: tss.sample_counts(m, image, args.samples, 0.5, tss.image_generator(cpu, 0, 0), args.batch_size),
                  args.reps)
        out[f"forwards_per_s_{name}"] = round(args.samples / s)
    for fam, kw, cells in (("rotation", {"max_angle_deg": 30}, 120), ("scaling", {"min_scale": 0.8, "max_scale": 1.2}, 100)):
        f = make_family(fam, **kw)
        out[f"bound_s_{fam}"] = round(_best(lambda: interpolation_bound(f, image[0], cells, 400), args.reps), 3)
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
