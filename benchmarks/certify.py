"""Reproduce TSS's MNIST rows (Li et al., CCS 2021, Table: rotation +-30 deg, scaling 0.8-1.2) with our certificate.

TSS reports on 500 MNIST test images (every 20th): rotation +-30 deg, 95.6 % certified (sigma 0.5,
base model trained with rotation +-35 deg and Gaussian noise); scaling 0.8-1.2, 96.8 % certified (sigma
0.10; 95.6 % at sigma 0.25 and 95.8 % at 0.50; trained on scales 0.75-1.25).
Their sample counts: n0 = 100 (rotation) / 500 (scaling), n = 100,000 per node, 10,000 rotation
slices per 360 deg (1,667 nodes for +-30 deg) and 1,000 scaling slices, alpha = 0.001; a GPU job.
On a CPU this script runs the same procedure with fewer nodes and samples (``--cells``,
``--samples``), which loosens the bound (fewer samples -> smaller certified l2 radius; fewer nodes ->
larger interpolation error), so certified accuracy here is a lower estimate of what the published
counts give.

Usage (checkpoints trained with the commands in docs/certification.md)::

    nice python benchmarks/certify.py --rotation CKPT_ROT --scaling CKPT_SCALE --n 500 --samples 1000 --out runs/tss

The images are TSS's (every 20th test image; ``--start`` continues a run). Results are written after
every ``--chunk`` images, so a run stopped early still leaves its summary. Prints a markdown table with
the measured numbers beside TSS's, the time and the machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from robustbench_geo.checkpoint import load_checkpoint
from robustbench_geo.data import load_dataset
from robustbench_geo.data.base import ImageDataset
from robustbench_geo.results_schema import ci_key
from robustbench_geo.smoothing import SmoothingConfig, evaluate_certification
from robustbench_geo.smoothing.certification import checkpoint_sigma
from robustbench_geo.smoothing.binomial import proportion_interval

#: TSS's best MNIST rows (their data/main_results/mnist/convnet/*.report): rotation at sigma 0.5 (trained +-35 deg);
#: scaling 96.8 % at sigma 0.10 (95.6 % at 0.25, 95.8 % at 0.50), trained on scales 0.75-1.25
TSS = {"rotation": {"certified": 95.6, "sigma": 0.5, "budget": {"max_angle_deg": 30.0}},
       "scaling": {"certified": 96.8, "sigma": 0.1, "budget": {"min_scale": 0.8, "max_scale": 1.2}}}


def _load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def _select(args) -> ImageDataset:
    """TSS's test images (every ``--skip``-th: 0, 20, 40, ...) or, with ``--skip 0``, a seeded random subset."""
    if not args.skip:
        return load_dataset("mnist", split="test", seed=args.seed, subset=args.n)
    full = load_dataset("mnist", split="test")
    pos = torch.arange(args.start, args.start + args.n) if not args.indices else \
        torch.tensor([int(i) for i in args.indices.split(",")])
    idx = torch.arange(args.offset, len(full), args.skip)[pos]
    return ImageDataset(full.name, full.images[idx], full.labels[idx], full.classes,
                        {**full.meta, "positions": pos.tolist(), "every": args.skip, "offset": args.offset})


def _summary(rows: list[dict], base_correct: int) -> dict:
    """Certified / smoothed / attacked accuracy with 95 % Clopper-Pearson intervals from per-image rows."""
    n = len(rows)
    out = {"n": n}
    for key, hits in (("certified_accuracy", sum(bool(r["correct"]) for r in rows)),
                      ("smoothed_accuracy", sum(r["prediction"] == r["label"] for r in rows)),
                      ("abstention_rate", sum(bool(r["abstained"]) for r in rows)),
                      ("smoothed_attack_accuracy", sum(bool(r.get("smoothed_attack_robust")) for r in rows)),
                      ("base_attack_accuracy", sum(bool(r.get("base_attack_robust")) for r in rows)),
                      ("base_clean_accuracy", base_correct)):
        out[key] = hits / n if n else float("nan")
        out[ci_key(key)] = list(proportion_interval(hits, n))
    if not any("smoothed_attack_robust" in r for r in rows):  # --attack-points 0: no bracket was measured
        for key in ("smoothed_attack_accuracy", "base_attack_accuracy"):
            out[key], out[ci_key(key)] = float("nan"), [float("nan"), float("nan")]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rotation", help="checkpoint trained with rotate-noise (certified for +-30 deg)")
    ap.add_argument("--scaling", help="checkpoint trained with scale-noise (certified for 0.8-1.2)")
    ap.add_argument("--n", type=int, default=500, help="test images (TSS: 500, every 20th)")
    ap.add_argument("--skip", type=int, default=20, help="every SKIP-th test image, like TSS (0: a seeded random subset)")
    ap.add_argument("--offset", type=int, default=0, help="first test image of the every-SKIP-th selection (TSS: 0; "
                    "e.g. 10 for held-out images disjoint from TSS's)")
    ap.add_argument("--start", type=int, default=0, help="first of the selected images (to continue a run)")
    ap.add_argument("--indices", default=None, help="comma-separated positions in the selection instead of "
                    "--start/--n (a diagnostic re-run of chosen images; not an accuracy estimate)")
    ap.add_argument("--chunk", type=int, default=25, help="images per chunk; results are written after every chunk")
    ap.add_argument("--samples", type=int, default=100_000, help="estimation samples per node (TSS: 100,000)")
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--cells", type=int, default=None, help="nodes per interval (default: 120 rotation, 100 scaling)")
    ap.add_argument("--substeps", type=int, default=None)
    ap.add_argument("--sigma", type=float, default=None, help="default: the checkpoint's training noise")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--attack-points", type=int, default=61, help="grid attack points (0: certify only, no bracket)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="folder for NAME.json (summary) and NAME_rows.csv (per image)")
    args = ap.parse_args()

    lines = ["| transform | images | samples/node | nodes | sigma | certified | TSS certified | smoothed clean | "
             "grid attack smoothed | grid attack base | base clean | seconds |", "| --- " * 12 + "|"]
    for name in ("rotation", "scaling"):
        ckpt = getattr(args, name)
        if not ckpt:
            continue
        model, meta = load_checkpoint(ckpt, device=args.device)
        sigma = args.sigma or checkpoint_sigma(meta) or 0.25
        ds = _select(args)
        rows, base_correct, secs, load0, cfg = [], 0, 0.0, _load(), None
        for s in range(0, len(ds), args.chunk):
            part = ImageDataset(ds.name, ds.images[s:s + args.chunk], ds.labels[s:s + args.chunk], ds.classes, ds.meta)
            # distinct noise streams per chunk: image i of a call uses (seed, i), the attack seed + 1
            cfg = SmoothingConfig(sigma=sigma, n0=args.n0, n=args.samples, cells=args.cells, substeps=args.substeps,
                                  batch_size=args.batch_size, seed=args.seed + 2 * (args.start + s))
            t0 = time.perf_counter()
            o = evaluate_certification(model, part, name, config=cfg, attack=args.attack_points > 0,
                                       attack_points=max(args.attack_points, 1), progress=True,
                                       **TSS[name]["budget"])
            secs += time.perf_counter() - t0
            for r, p in zip(o.rows, ds.meta.get("positions", range(len(ds)))[s:s + args.chunk]):
                r["index"] = p  # position in the selection
            rows += o.rows
            base_correct += round(o.metrics["base_clean_accuracy"] * len(part))
            m = _summary(rows, base_correct)
            if args.out:
                Path(args.out).mkdir(parents=True, exist_ok=True)
                (Path(args.out) / f"{name}.json").write_text(json.dumps(
                    {"transform": o.transform, "config": o.config, "metrics": m, "checkpoint": ckpt,
                     "selection": {"skip": args.skip, "offset": args.offset, "start": args.start, "indices": args.indices, "seed": args.seed}, "load_before": load0,
                     "load_after": _load(), "seconds": secs, "machine": platform.platform(), "cpus": os.cpu_count(),
                     "device": args.device, "torch_threads": torch.get_num_threads()}, indent=2, default=str))
                pd.DataFrame(rows).to_csv(Path(args.out) / f"{name}_rows.csv", index=False)
            print(f"{name}: {m['n']} images, certified {100 * m['certified_accuracy']:.1f} %, {secs:.0f} s, "
                  f"load {_load()}", flush=True)

        def pct(k):
            lo, hi = m[ci_key(k)]
            return "-" if m[k] != m[k] else f"{100 * m[k]:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"

        lines.append(f"| {name} {TSS[name]['budget']} | {m['n']} | {cfg.n} | {o.config['cells']} | {sigma} | "
                     f"{pct('certified_accuracy')} | {TSS[name]['certified']} | {pct('smoothed_accuracy')} | "
                     f"{pct('smoothed_attack_accuracy')} | {pct('base_attack_accuracy')} | {pct('base_clean_accuracy')} "
                     f"| {secs:.0f} |")
        print(lines[-1], f"(load before {load0}, after {_load()})", flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
