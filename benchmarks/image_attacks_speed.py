"""Speed of the 775-point grid attack on MNIST test images, measured side by side in one run.

(a) ours vs ART's ``SpatialTransformation`` with the same grid values and model: 31 angles in
    +-30 degrees, shifts {-3, -2, 0, 2, 3} px on both axes (ART rounds shifts to whole pixels, so
    ours runs with ``integer_shifts=True``; ART gets channels-last arrays so that both axes are
    shifted). ART searches one transform for the whole batch, predicts with batch size 1 and warps
    with scipy; we search per sample. Target: >= 5x faster, at least as many images fooled.
(b) ours (default grid) vs the same number of plain forward passes of the model on unwarped
    images in batches of the same size. Target: overhead <= 25 %.

    PYTHONPATH=. python benchmarks/image_attacks_speed.py --checkpoint runs/cnn_mnist \\
        [--n 1000] [--art-n 1000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from robustbench_geo.evaluation import evaluate_attack
from robustbench_geo.attacks.image import GridAttack
from robustbench_geo.checkpoint import load_checkpoint, versions
from robustbench_geo.data import load_dataset

ART_GRID = dict(max_translation=3 / 28 * 100, num_translations=5, max_rotation=30.0, num_rotations=31, verbose=False,
                channels_last=True)
OUR_SAME_GRID = dict(integer_shifts=True)  # defaults: 31 angles in +-30, 5 shifts in +-3 -> {-3, -2, 0, 2, 3}


def plain_forward_seconds(model, images, count: int, batch: int) -> tuple[float, float]:
    """Wall and CPU seconds of ``count`` forward passes (in images) on clean images in batches of ``batch``."""
    pool = images.repeat(-(-batch // images.shape[0]), 1, 1, 1)
    done, t0, c0 = 0, time.perf_counter(), time.process_time()
    with torch.inference_mode():
        while done < count:
            m = min(batch, count - done, pool.shape[0])
            model(pool[:m])
            done += m
    return time.perf_counter() - t0, time.process_time() - c0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--n", type=int, default=1000, help="test images for ours")
    ap.add_argument("--art-n", type=int, default=1000, help="test images for ART (a documented subset if smaller)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-batch", type=int, default=None,
                    help="images per model call for ours and the plain baseline (default: the attacks' default for the device)")
    ap.add_argument("--parts", default="a,b", help="a: ours vs ART; b: overhead over plain forward passes")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, meta = load_checkpoint(args.checkpoint)
    model.eval()
    ds = load_dataset("mnist", split="test", subset=args.n, seed=0)
    ds_art = load_dataset("mnist", split="test", subset=args.art_n, seed=0)
    out = {"versions": versions(), "n": len(ds), "art_n": len(ds_art), "threads": args.threads, "checkpoint": args.checkpoint}

    batch = {} if args.max_batch is None else {"max_batch": args.max_batch}
    if "a" in args.parts:  # (a) same grid, same images: ours vs ART (wall and CPU seconds of this process)
        c0 = time.process_time()
        ours_same = evaluate_attack(model, ds_art, "grid", {**OUR_SAME_GRID, **batch}, progress=False,
                                    batch_size=len(ds_art))
        ours_cpu, c0 = time.process_time() - c0, time.process_time()
        print(f"ours  (integer-shift grid, {len(ds_art)} images): {ours_same.seconds:.1f} s ({ours_cpu:.1f} s CPU), robust "
              f"{100 * ours_same.metrics['robust_accuracy']:.2f} %", flush=True)
        art = evaluate_attack(model, ds_art, "art:SpatialTransformation", ART_GRID, progress=False, batch_size=len(ds_art))
        art_cpu = time.process_time() - c0
        print(f"ART SpatialTransformation ({len(ds_art)} images): {art.seconds:.1f} s ({art_cpu:.1f} s CPU), robust "
              f"{100 * art.metrics['robust_accuracy']:.2f} % (transform: rot {art.metrics.get('attack_rot')}, "
              f"shift {art.metrics.get('attack_trans_x')}, {art.metrics.get('attack_trans_y')})", flush=True)
        out["a"] = {"ours": {**ours_same.metrics, "seconds": ours_same.seconds, "cpu_seconds": ours_cpu},
                    "art": {**art.metrics, "seconds": art.seconds, "cpu_seconds": art_cpu}}

    # (b) default grid vs plain forward passes, interleaved (attack, plain, plain, attack: the attack runs
    # first, so the number of passes is known) so that a change
    # in machine load affects both alike; CPU time of this process is reported beside wall time
    x, y = ds.images, ds.labels
    atk = GridAttack(model, **batch)
    runs = {"attack": [], "plain": []}
    for order in ((("attack", "plain"), ("plain", "attack")) if "b" in args.parts else ()):
        for kind in order:
            if kind == "attack":
                t0, c0 = time.perf_counter(), time.process_time()
                res = atk(x, y)
                runs["attack"].append((time.perf_counter() - t0, time.process_time() - c0))
            else:
                runs["plain"].append(plain_forward_seconds(model, x, res.forward_passes, atk.max_batch))
    if "b" in args.parts:
        wall = {k: sum(v[0] for v in r) for k, r in runs.items()}
        cpu = {k: sum(v[1] for v in r) for k, r in runs.items()}
        out["b"] = {"attack_seconds": wall["attack"] / 2, "plain_seconds": wall["plain"] / 2,
                    "attack_cpu_seconds": cpu["attack"] / 2, "plain_cpu_seconds": cpu["plain"] / 2,
                    "max_batch": atk.max_batch, "forward_passes": res.forward_passes,
                    "overhead": wall["attack"] / wall["plain"] - 1, "overhead_cpu": cpu["attack"] / cpu["plain"] - 1,
                    "fooled": int(res.success.sum()), "runs": runs}
    if "a" in args.parts:
        a = out["a"]
        print("\n(a) 775-point grid, same values and model, " f"{len(ds_art)} MNIST test images, {args.threads} thread(s)")
        print("| | seconds (CPU seconds) | images fooled (of correct) | robust accuracy | forward passes |")
        print("| --- | --- | --- | --- | --- |")
        for k, label in (("ours", "ours (per sample)"), ("art", "ART SpatialTransformation (one transform per batch)")):
            m = a[k]
            fooled = round(m["success_rate"] * m["clean_accuracy"] * m["n"])
            print(f"| {label} | {m['seconds']:.1f} ({m['cpu_seconds']:.1f}) | {fooled} | {100 * m['robust_accuracy']:.2f} % | "
                  f"{int(m['forward_passes'])} |")
        print(f"speed-up: {a['art']['seconds'] / a['ours']['seconds']:.1f}x wall, "
              f"{a['art']['cpu_seconds'] / a['ours']['cpu_seconds']:.1f}x CPU time")
    if "b" in args.parts:
        b = out["b"]
        print(f"\n(b) default 775-point grid on {len(ds)} images, {b['max_batch']} images per call, interleaved runs (mean of 2): "
              f"attack {b['attack_seconds']:.1f} s vs {b['forward_passes']} plain forward passes {b['plain_seconds']:.1f} s: "
              f"overhead {100 * b['overhead']:.1f} % (CPU time: {b['attack_cpu_seconds']:.1f} vs "
              f"{b['plain_cpu_seconds']:.1f} s, {100 * b['overhead_cpu']:.1f} %)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=str)


if __name__ == "__main__":
    main()
