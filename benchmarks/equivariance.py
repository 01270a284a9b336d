"""Equivariance table: cnn vs deform_cnn vs p4cnn vs stn_cnn under rotation+shift and scale attacks on MNIST.

The claim under test (from the source papers): rotation-equivariant networks are significantly
less vulnerable to geometric attacks. Protocol (every number printed comes from this run):

* training: each model trained identically from scratch with :func:`robustbench_geo.training.fit`
  on a seeded subset of the MNIST training set (``--train-subset``, default 5,000), Adam 1e-3,
  batch 128, ``--epochs`` (default 2), no augmentation, seed ``--seed``; checkpoints are cached in
  ``--out`` (default ``runs/equivariance``) and reused when present;
* evaluation on a seeded subset of the MNIST test set (``--n``, default 300, the same images for
  every model): clean accuracy; accuracy on the test images rotated by 90 degrees (``rot90``, where
  p4cnn is invariant by construction); robust accuracy under the ``grid`` attack (rotation in
  +-30 degrees x shifts in +-3 px; ``--angle-steps`` x ``--shift-steps``^2 points, default 13 x 3^2)
  and the ``scale`` attack (content scale 0.4-1.0, 21 log-spaced factors + 10 gradient steps: the
  Scaled MNIST threat model). Attack success is re-verified by the runner's own forward passes.

Usage::

    python benchmarks/equivariance.py                                  # defaults above
    python benchmarks/equivariance.py --models cnn,p4cnn --n 200 --epochs 1
    python benchmarks/equivariance.py --json > equivariance.json
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
from robustbench_geo.data.base import ImageDataset  # noqa: E402
from robustbench_geo.training import fit  # noqa: E402

MODELS = ("cnn", "deform_cnn", "p4cnn", "stn_cnn")


def train_or_load(model: str, args) -> tuple[torch.nn.Module, dict]:
    stem = Path(args.out) / f"{model}_mnist_s{args.seed}_n{args.train_subset}_e{args.epochs}_{args.schedule}"
    if stem.with_suffix(".json").exists():
        return load_checkpoint(stem, device=args.device)
    res = fit(model, "mnist", epochs=args.epochs, subset=args.train_subset, test_subset=2000, seed=args.seed,
              out=stem, data_root=args.data_root, device=args.device, schedule=args.schedule, progress=not args.quiet)
    return res.model.eval(), res.meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-subset", type=int, default=5000)
    p.add_argument("--n", type=int, default=300, help="test images attacked (seeded subset, same for every model)")
    p.add_argument("--angle-steps", type=int, default=13)
    p.add_argument("--shift-steps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/equivariance")
    p.add_argument("--data-root", default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--schedule", default="constant", help="learning-rate schedule: constant or cosine")
    p.add_argument("--device", default="cpu", help="torch device for training and attacks (cpu, cuda)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    test = load_dataset("mnist", split="test", root=args.data_root, subset=args.n, seed=args.seed)
    rot = ImageDataset("mnist-rot90", torch.rot90(test.images, 1, dims=(2, 3)).contiguous(), test.labels, test.classes,
                       {**test.meta, "transform": "rot90"})
    attacks = {"grid": {"max_angle_deg": 30.0, "angle_steps": args.angle_steps, "max_shift_px": 3.0,
                        "shift_steps": args.shift_steps},
               "scale": {"scale_range": (0.4, 1.0), "steps": 21, "refine_steps": 10}}
    rows = []
    for name in args.models.split(","):
        t0 = time.perf_counter()
        model, meta = train_or_load(name, args)
        row = {"model": name, "params": sum(q.numel() for q in model.parameters()),
               "train_seconds": round(meta.get("train_seconds", float("nan")), 1),
               "clean": image_accuracy(model, test), "rot90": image_accuracy(model, rot)}
        for atk, prm in attacks.items():
            out = evaluate_attack(model, test, atk, prm, seed=args.seed, device=args.device, progress=not args.quiet)
            row[atk] = out.metrics["robust_accuracy"]
            row[f"{atk}_mismatches"] = out.metrics["verification_mismatches"]
            row[f"{atk}_seconds"] = round(out.seconds, 1)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"[{name}] " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
              file=sys.stderr)
    config = {"protocol": {"train": "mnist", "train_subset": args.train_subset, "epochs": args.epochs, "schedule": args.schedule, "seed": args.seed,
                           "test_n": args.n, "attacks": attacks, "device": args.device}, "versions": versions()}
    if args.json:
        print(json.dumps({"rows": rows, "config": config}, indent=2, default=str))
        return 0
    print(f"MNIST, train subset {args.train_subset} x {args.epochs} epochs, {args.n} test images, seed {args.seed}")
    print("| model | params | clean | rot90 | grid (+-30 deg, +-3 px) | scale (0.4-1.0) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['params']:,} | {100 * r['clean']:.1f} % | {100 * r['rot90']:.1f} % | "
              f"{100 * r['grid']:.1f} % | {100 * r['scale']:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
