"""Reproduce TSS's MNIST rows (Li et al., CCS 2021, Table: rotation +-30 deg, scaling 0.8-1.2) with our certificate.

TSS reports on 500 MNIST test images (every 20th): rotation +-30 deg, 95.6 % certified (sigma 0.5,
base model trained with rotation +-35 deg and Gaussian noise); scaling 0.8-1.2, 96.8 % certified.
Their sample counts: n0 = 100 (rotation) / 500 (scaling), n = 100,000 per node, 10,000 rotation
slices per 360 deg (1,667 nodes for +-30 deg) and 1,000 scaling slices, alpha = 0.001; a GPU job.
On a CPU this script runs the same procedure with fewer nodes and samples (``--cells``,
``--samples``), which loosens the bound (fewer samples -> smaller certified l2 radius; fewer nodes ->
larger interpolation error), so certified accuracy here is a lower estimate of what the published
counts give.

Usage (checkpoints trained with the commands in docs/certification.md)::

    nice python benchmarks/certify.py --rotation CKPT_ROT --scaling CKPT_SCALE --n 100 --samples 200

Prints a markdown table with the measured numbers beside TSS's, the time and the machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from robustbench_geo.checkpoint import load_checkpoint
from robustbench_geo.data import load_dataset
from robustbench_geo.smoothing import SmoothingConfig, evaluate_certification

TSS = {"rotation": {"certified": 95.6, "clean": 98.8, "sigma": 0.5, "budget": {"max_angle_deg": 30.0}},
       "scaling": {"certified": 96.8, "clean": None, "sigma": None, "budget": {"min_scale": 0.8, "max_scale": 1.2}}}


def _load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rotation", help="checkpoint trained with rotate-noise (certified for +-30 deg)")
    ap.add_argument("--scaling", help="checkpoint trained with scale-noise (certified for 0.8-1.2)")
    ap.add_argument("--n", type=int, default=500, help="test images (TSS: 500, every 20th; here a seeded subset)")
    ap.add_argument("--samples", type=int, default=100_000, help="estimation samples per node (TSS: 100,000)")
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--cells", type=int, default=None, help="nodes per interval (default: 120 rotation, 100 scaling)")
    ap.add_argument("--substeps", type=int, default=None)
    ap.add_argument("--sigma", type=float, default=None, help="default: the checkpoint's training noise")
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--attack-points", type=int, default=61)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="folder for one JSON per transformation")
    args = ap.parse_args()
    from robustbench_geo.cli.certify import _checkpoint_sigma

    lines = ["| transform | images | samples/node | nodes | sigma | certified | TSS certified | smoothed clean | "
             "grid attack smoothed | grid attack base | seconds |", "| --- " * 11 + "|"]
    for name in ("rotation", "scaling"):
        ckpt = getattr(args, name)
        if not ckpt:
            continue
        model, meta = load_checkpoint(ckpt, device=args.device)
        sigma = args.sigma or _checkpoint_sigma(meta) or 0.25
        ds = load_dataset("mnist", split="test", seed=args.seed, subset=args.n)
        cfg = SmoothingConfig(sigma=sigma, n0=args.n0, n=args.samples, cells=args.cells, substeps=args.substeps,
                              batch_size=args.batch_size, seed=args.seed)
        load0, t0 = _load(), time.perf_counter()
        o = evaluate_certification(model, ds, name, config=cfg, attack_points=args.attack_points, progress=True,
                                   **TSS[name]["budget"])
        secs = time.perf_counter() - t0
        m = o.metrics

        def pct(k):
            lo, hi = m[k + "_ci95"]
            return f"{100 * m[k]:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"

        lines.append(f"| {name} {TSS[name]['budget']} | {m['n']} | {cfg.n} | {o.config['cells']} | {sigma} | "
                     f"{pct('certified_accuracy')} | {TSS[name]['certified']} | {pct('smoothed_accuracy')} | "
                     f"{pct('smoothed_attack_accuracy')} | {pct('base_attack_accuracy')} | {secs:.0f} |")
        print(lines[-1], f"(load before {load0}, after {_load()})", flush=True)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / f"{name}.json").write_text(json.dumps(
                {**o.as_dict(), "checkpoint": ckpt, "load_before": load0, "load_after": _load(), "seconds": secs,
                 "machine": platform.platform(), "cpus": os.cpu_count(), "device": args.device,
                 "torch_threads": torch.get_num_threads()}, indent=2, default=str))
            import pandas as pd

            pd.DataFrame(o.rows).to_csv(Path(args.out) / f"{name}_rows.csv", index=False)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
