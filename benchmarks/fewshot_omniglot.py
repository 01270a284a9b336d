"""Few-shot GNN (Garcia & Bruna 2018) on the offline Omniglot subsets: accuracy and attacks.

Paper (full Omniglot background set, 1200 training characters x 4 rotations): 5-way 1-shot 99.2 %,
5-shot 99.7 %. The offline mirror holds two *small* background subsets only, so the protocol here is:

* training: ``images_background_small1`` (5 alphabets, 136 characters x 20 drawers), rotations by
  multiples of 90 degrees as new classes (544 classes), 28x28, ``--iterations`` iterations of
  ``--batch`` episodes (one query each), Adam 1e-3 (weight decay 1e-6, halved every
  ``iterations / 2``), seed ``--seed``; the model is cached in ``--out``;
* evaluation: ``small2-heldout`` = ``images_background_small2`` minus the alphabets it shares
  with small1 (Greek, Latin): Japanese (katakana), Sanskrit, Tagalog, 106 characters never seen
  in training; ``--episodes`` seeded N-way K-shot episodes without rotations; accuracy with a 95 %
  interval;
* attacks on the first ``--attack-episodes`` of those episodes: ``grid`` (rotation +-30 deg x
  shift +-3 px, 13 x 3 x 3 points) and ``scale`` (content scale 0.4-1.0) on the query image and on
  one support image (the first shot of the query's class), and the structure attack deleting 1 or
  2 edges of the learned adjacency incident to the query.

Usage::

    python benchmarks/fewshot_omniglot.py --way 5 --shot 1
    python benchmarks/fewshot_omniglot.py --way 5 --shot 5 --iterations 1000 --json
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

from robustbench_geo.evaluation.fewshot import evaluate_fewshot_attack  # noqa: E402
from robustbench_geo.checkpoint import load_checkpoint, save_checkpoint, versions  # noqa: E402
from robustbench_geo.data.omniglot import load_omniglot, load_one_shot_runs  # noqa: E402
from robustbench_geo.fewshot_training import evaluate_fewshot, evaluate_one_shot_runs, test_episodes, train_fewshot  # noqa: E402
from robustbench_geo.models import create_model  # noqa: E402
from robustbench_geo.training import seed_everything  # noqa: E402

ATTACKS = [
    ("grid", "query", {"max_angle_deg": 30.0, "angle_steps": 13, "max_shift_px": 3.0, "shift_steps": 3}),
    ("grid", "support", {"max_angle_deg": 30.0, "angle_steps": 13, "max_shift_px": 3.0, "shift_steps": 3}),
    ("scale", "query", {"scale_range": (0.4, 1.0), "steps": 21, "refine_steps": 10}),
    ("scale", "support", {"scale_range": (0.4, 1.0), "steps": 21, "refine_steps": 10}),
    ("adjacency", "query", {"max_edges": 1, "scope": "query"}),
    ("adjacency", "query", {"max_edges": 2, "scope": "query"}),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--way", type=int, default=5)
    p.add_argument("--shot", type=int, default=1)
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--batch", type=int, default=16, help="episodes per iteration")
    p.add_argument("--episodes", type=int, default=1000, help="held-out evaluation episodes")
    p.add_argument("--attack-episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="runs/fewshot")
    p.add_argument("--data-root", default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--device", default="cpu", help="torch device for training and attacks (cpu, cuda)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train = load_omniglot("small1", root=args.data_root)
    test = load_omniglot("small2-heldout", root=args.data_root)
    stem = Path(args.out) / f"fewshot_gnn_{args.way}w{args.shot}s_it{args.iterations}_b{args.batch}_s{args.seed}"
    if stem.with_suffix(".json").exists():
        model, meta = load_checkpoint(stem, device=args.device)
    else:
        seed_everything(args.seed)
        model = create_model("fewshot_gnn", num_classes=args.way).to(args.device)
        t0 = time.perf_counter()
        hist = train_fewshot(model, train, n_way=args.way, k_shot=args.shot, iterations=args.iterations,
                             batch_episodes=args.batch, lr_halve_every=max(1, args.iterations // 2), seed=args.seed,
                             progress=not args.quiet)
        meta = {"model": "fewshot_gnn", "model_kwargs": {"num_classes": args.way}, "train_subset": "small1",
                "n_way": args.way, "k_shot": args.shot, "iterations": args.iterations, "batch_episodes": args.batch,
                "seed": args.seed, "device": args.device, "history": hist, "train_seconds": time.perf_counter() - t0, "versions": versions()}
        save_checkpoint(stem, model, meta)
    model.eval()
    acc = evaluate_fewshot(model, test, args.way, args.shot, args.episodes, seed=args.seed)
    print(f"[fewshot] {args.way}-way {args.shot}-shot on {test.meta['subset']} ({test.num_characters} characters): "
          f"{100 * acc['accuracy']:.2f} +- {100 * acc['ci95']:.2f} % over {acc['n']} episodes", file=sys.stderr)
    runs = None
    if args.way == 20 and args.shot == 1:  # Lake et al.'s 20 one-shot runs on the evaluation alphabets
        runs = evaluate_one_shot_runs(model, load_one_shot_runs(root=args.data_root))
        print(f"[fewshot] Lake et al. 20-way one-shot runs: {100 * runs['accuracy']:.2f} +- {100 * runs['ci95']:.2f} % "
              f"({runs['n']} queries, {runs['runs']} runs)", file=sys.stderr)
    eps = test_episodes(test, args.way, args.shot, args.episodes, args.seed)[:args.attack_episodes]
    rows = []
    for attack, target, prm in ATTACKS:
        out = evaluate_fewshot_attack(model, eps, attack, prm, target=target, seed=args.seed, progress=not args.quiet)
        rows.append({"attack": attack, "target": target, "params": prm, **out.metrics, "seconds": round(out.seconds, 1)})
        print(f"[fewshot] {attack} on {target} {prm}: clean {out.metrics['clean_accuracy']:.3f}, "
              f"robust {out.metrics['robust_accuracy']:.3f}, mismatches {out.metrics['verification_mismatches']:.0f}",
              file=sys.stderr)
    result = {"accuracy": acc, "one_shot_runs": runs, "attacks": rows, "train": {k: v for k, v in meta.items() if k != "history"},
              "final_train": (meta.get("history") or [{}])[-1]}
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(f"{args.way}-way {args.shot}-shot, trained on small1 ({args.iterations} x {args.batch} episodes), "
          f"tested on small2-heldout: {100 * acc['accuracy']:.2f} +- {100 * acc['ci95']:.2f} % ({acc['n']} episodes)")
    if runs is not None:
        print(f"Lake et al. 20-way one-shot runs (evaluation alphabets): {100 * runs['accuracy']:.2f} +- "
              f"{100 * runs['ci95']:.2f} % ({runs['n']} queries)")
    print("| attack | target | params | clean | robust |")
    print("| --- | --- | --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['attack']} | {r['target']} | {r['params']} | {100 * r['clean_accuracy']:.1f} % | "
              f"{100 * r['robust_accuracy']:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
