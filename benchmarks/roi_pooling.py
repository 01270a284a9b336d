"""RoI align vs deformable RoI pooling on mnist-cluttered, clean and under the scale attack.

Protocol: ``roi_cnn`` with ``pool=roi_align`` and with ``pool=deform_roi`` (and optionally
``ps_deform_roi``), identical backbone, head and proposal grid (34 square proposals of 28 and 42 px
on the 56x56 canvas), trained identically with :func:`robustbench_geo.training.fit` on a seeded
subset of the ``mnist-cluttered`` training split (``--train-subset``, default 5,000) for
``--epochs`` (default 2), Adam 1e-3, batch 128, seed ``--seed``; checkpoints cached in ``--out``.
Evaluated on ``--n`` (default 300) seeded test images: clean accuracy and robust accuracy under the
``scale`` attack (content scale 0.6-1.0 about the canvas centre, 21 log-spaced factors + 10 gradient
steps), re-verified by the runner.

Usage::

    python benchmarks/roi_pooling.py
    python benchmarks/roi_pooling.py --pools roi_align,deform_roi,ps_deform_roi --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore", category=FutureWarning)

from robustbench_geo.evaluation import evaluate_attack  # noqa: E402
from robustbench_geo.checkpoint import load_checkpoint, versions  # noqa: E402
from robustbench_geo.data import load_dataset  # noqa: E402
from robustbench_geo.evaluation import image_accuracy  # noqa: E402
from robustbench_geo.training import fit  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pools", default="roi_align,deform_roi")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-subset", type=int, default=5000)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--scale-min", type=float, default=0.6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="runs/roi_pooling")
    p.add_argument("--data-root", default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--schedule", default="constant", help="learning-rate schedule: constant or cosine")
    p.add_argument("--device", default="cpu", help="torch device for training and attacks (cpu, cuda)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    test = load_dataset("mnist-cluttered", split="test", root=args.data_root, subset=args.n, seed=args.seed)
    scale = {"scale_range": (args.scale_min, 1.0), "steps": 21, "refine_steps": 10}
    rows = []
    for pool in args.pools.split(","):
        t0 = time.perf_counter()
        stem = Path(args.out) / f"roi_cnn_{pool}_s{args.seed}_n{args.train_subset}_e{args.epochs}_{args.schedule}"
        if stem.with_suffix(".json").exists():
            model, meta = load_checkpoint(stem, device=args.device)
        else:
            res = fit("roi_cnn", "mnist-cluttered", epochs=args.epochs, subset=args.train_subset, test_subset=1000,
                      seed=args.seed, out=stem, data_root=args.data_root, model_kwargs={"pool": pool}, device=args.device, schedule=args.schedule,
                      progress=not args.quiet)
            model, meta = res.model.eval(), res.meta
        out = evaluate_attack(model, test, "scale", scale, seed=args.seed, device=args.device, progress=not args.quiet)
        rows.append({"pool": pool, "params": sum(q.numel() for q in model.parameters()),
                     "clean": image_accuracy(model, test), "scale": out.metrics["robust_accuracy"],
                     "mismatches": out.metrics["verification_mismatches"],
                     "train_seconds": round(meta.get("train_seconds", float("nan")), 1),
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(f"[{pool}] {rows[-1]}", file=sys.stderr)
    config = {"train_subset": args.train_subset, "epochs": args.epochs, "schedule": args.schedule, "seed": args.seed, "n": args.n, "scale": scale, "device": args.device,
              "versions": versions()}
    if args.json:
        print(json.dumps({"rows": rows, "config": config}, indent=2, default=str))
        return 0
    print(f"mnist-cluttered, train subset {args.train_subset} x {args.epochs} epochs, {args.n} test images, seed {args.seed}")
    print(f"| pool | params | clean | scale ({args.scale_min}-1.0) |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['pool']} | {r['params']:,} | {100 * r['clean']:.1f} % | {100 * r['scale']:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
