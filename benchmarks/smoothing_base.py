"""Which base classifier to smooth: how often each is right on noisy copies across a transform range.

A TSS certificate (``docs/certification.md``) needs, at every node ``t_j`` of the range, a lower
bound ``p_j`` of ``P(h(phi(x, t_j) + eps) = y)`` with ``sigma Phi^-1(p_j)`` above that cell's
interpolation error ``M_j`` (0.2-0.45 in l2 for MNIST at 120 rotation nodes). What limits certified
accuracy is therefore the *smallest* such probability over the range, image by image, more than the
number of samples. This script estimates it cheaply for several checkpoints side by side (the same
images, transforms and noise draws for each): at ``--points`` evenly spaced transforms (edges and
identity included) it draws ``--samples`` noisy copies per transform and prints, per checkpoint, the
share of images whose least-confident transform still has ``p_hat >= q`` for a few ``q``, the clean
accuracy of the base classifier, and the forward passes per second (what certification will cost).

``q = Phi(M / sigma)`` is the probability a node needs for an interpolation error ``M``: with
``sigma = 0.5``, ``M = 0.45`` needs ``0.82``, ``M = 0.3`` needs ``0.73`` (before the Clopper-Pearson
slack of the real certificate, which this diagnostic does not apply). Not a certificate: a ranking.

Usage::

    PYTHONPATH=. python benchmarks/smoothing_base.py --transform rotation CKPT_A CKPT_B --n 500 --threads 1
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from robustbench_geo.checkpoint import load_checkpoint
from robustbench_geo.data import load_dataset
from robustbench_geo.smoothing import make_family
from robustbench_geo.smoothing.certification import checkpoint_sigma
from robustbench_geo.smoothing.tss import inference_model, probe_batch

BUDGETS = {"rotation": {"max_angle_deg": 30.0}, "scaling": {"min_scale": 0.8, "max_scale": 1.2},
           "translation": {"max_shift_px": 1.0}}
LEVELS = (0.5, 0.73, 0.82, 0.9, 0.99)


@torch.inference_mode()
def min_confidence(model, images, labels, family, sigma: float, points: int, samples: int, seed: int, batch: int):
    """Per image: the smallest share of right answers on ``samples`` noisy copies over ``points`` transforms."""
    (lo, hi), = family.box()
    ts = torch.linspace(lo, hi, points, dtype=torch.float64)[:, None]
    worst = torch.ones(images.shape[0])
    g = torch.Generator().manual_seed(seed)
    for i in range(images.shape[0]):
        views = family.fast_warp(images[i:i + 1], ts)  # (points, C, H, W)
        right = torch.zeros(points)
        for s in range(0, samples, batch // points or 1):
            k = min(batch // points or 1, samples - s)
            x = views.repeat_interleave(k, 0)
            x = x + sigma * torch.randn(x.shape, generator=g)
            right += (model(x).argmax(1) == labels[i]).view(points, k).sum(1)
        worst[i] = (right / samples).min()
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--transform", default="rotation", choices=sorted(BUDGETS))
    ap.add_argument("--n", type=int, default=500, help="TSS's images: every 20th test image, the first n")
    ap.add_argument("--points", type=int, default=13)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--sigma", type=float, default=None, help="default: each checkpoint's training noise")
    ap.add_argument("--batch", type=int, default=1300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    full = load_dataset("mnist", split="test")
    idx = torch.arange(0, len(full), 20)[:args.n]
    images, labels = full.images[idx], full.labels[idx]
    family = make_family(args.transform, **BUDGETS[args.transform])
    print(f"{args.transform} {BUDGETS[args.transform]}, {len(idx)} images (every 20th test image), "
          f"{args.points} transforms x {args.samples} noisy copies, load {os.getloadavg()[0]:.1f}\n")
    head = " | ".join(f"min p >= {q:g}" for q in LEVELS)
    print(f"| checkpoint | model | sigma | base clean | {head} | forward passes / s |")
    print("|" + " --- |" * (len(LEVELS) + 5))
    for path in args.checkpoints:
        model, meta = load_checkpoint(path)
        model.eval()
        sigma = args.sigma if args.sigma is not None else checkpoint_sigma(meta)
        if sigma is None:
            raise SystemExit(f"{path}: trained without a noise augmentation (augment={meta.get('train', {}).get('augment')!r}); "
                             f"pass --sigma")
        fast = inference_model(model, probe_batch(images, sigma, torch.device("cpu")))
        with torch.inference_mode():
            clean = (model(images).argmax(1) == labels).float().mean().item()
        t0 = time.perf_counter()
        worst = min_confidence(fast, images, labels, family, sigma, args.points, args.samples, args.seed, args.batch)
        rate = len(idx) * args.points * args.samples / (time.perf_counter() - t0)
        shares = " | ".join(f"{100 * (worst >= q).float().mean():.1f}" for q in LEVELS)
        print(f"| {os.path.basename(path.rstrip('/'))} | {meta['model']} | {sigma:g} | {100 * clean:.1f} | {shares} | "
              f"{rate:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
