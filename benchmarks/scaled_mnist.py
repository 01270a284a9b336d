"""Regular vs Deformable CNN on MNIST and Scaled MNIST (the first published table of the toolkit).

Reference (the Keras deformable-convolution experiment on Scaled MNIST):

    model        MNIST     Scaled MNIST
    regular      98.74 %   57.01 %
    deformable   97.27 %   92.55 %

Two protocols, both printed:

(a) original: ``cnn`` trained on plain MNIST; ``deform_cnn`` takes its weights (the deformable
    layers start as the regular convs, offsets zero) and only the offset predictors are
    fine-tuned on scale-augmented MNIST (``--augment scale``, the same sampler that makes
    ``mnist-scaled``);
(b) fair: both architectures trained identically from scratch, once without and once with scale
    augmentation.

Every model is evaluated on the MNIST test set and on the seeded Scaled MNIST test set.

Usage::

    python benchmarks/scaled_mnist.py                         # full protocol: 10 epochs, 60k images
    python benchmarks/scaled_mnist.py --epochs 2 --train-subset 10000 --finetune-epochs 1
    python benchmarks/scaled_mnist.py --json > scaled_mnist.json
    python benchmarks/scaled_mnist.py --device cuda --json    # on a GPU (benchmarks/gpu_session.sh)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import torch

warnings.filterwarnings("ignore", category=FutureWarning)

from robustbench_geo.checkpoint import versions  # noqa: E402
from robustbench_geo.data import load_dataset  # noqa: E402
from robustbench_geo.evaluation import image_accuracy  # noqa: E402
from robustbench_geo.models import build_model, set_deform_backend  # noqa: E402
from robustbench_geo.models.deformable import load_regular_weights  # noqa: E402
from robustbench_geo.training import TrainConfig, seed_everything, train_image_model  # noqa: E402

REFERENCE = {"regular": (98.74, 57.01), "deformable": (97.27, 92.55)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=10, help="training epochs on MNIST (reference: 10)")
    p.add_argument("--finetune-epochs", type=int, default=None, help="offset fine-tuning epochs (default: --epochs)")
    p.add_argument("--train-subset", type=int, default=None, help="seeded subset of the 60k training images")
    p.add_argument("--test-subset", type=int, default=None, help="seeded subset of the 10k test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--protocols", default="original,fair", help="comma list of: original, fair")
    p.add_argument("--deform-backend", default="auto")
    p.add_argument("--device", default="cpu", help="torch device for training and evaluation, e.g. cuda")
    p.add_argument("--data-root", default=None)
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)

    t_start = time.perf_counter()
    kw = dict(root=args.data_root, seed=args.seed)
    train = load_dataset("mnist", split="train", subset=args.train_subset, **kw)
    tests = {"mnist": load_dataset("mnist", split="test", subset=args.test_subset, **kw),
             "mnist-scaled": load_dataset("mnist-scaled", split="test", subset=args.test_subset, **kw)}
    rows = []

    def run(name, augment, epochs, init=None, trainable="all"):
        seed_everything(args.seed)
        model, _ = build_model(name, train)
        backend = set_deform_backend(model, args.deform_backend, args.device)
        model.to(args.device)
        if init is not None:
            load_regular_weights(model, init.state_dict())
        cfg = TrainConfig(epochs=epochs, seed=args.seed, augment=augment, trainable=trainable)
        t0 = time.perf_counter()
        train_image_model(model, train, cfg, device=args.device, progress=not args.json)
        secs = time.perf_counter() - t0
        accs = {k: 100 * image_accuracy(model, ds) for k, ds in tests.items()}
        return model, {"model": name, "augment": augment, "trainable": trainable, "epochs": epochs,
                       "mnist": accs["mnist"], "mnist_scaled": accs["mnist-scaled"], "train_s": secs,
                       "deform_backend": backend}

    protocols = args.protocols.split(",")
    unknown = set(protocols) - {"original", "fair"}
    if unknown:
        p.error(f"--protocols: expected a comma list of original, fair; got {sorted(unknown)}")
    ft_epochs = args.finetune_epochs if args.finetune_epochs is not None else args.epochs
    regular, row = run("cnn", "none", args.epochs)
    rows.append({"protocol": "both", "variant": "regular, plain MNIST", **row})
    if "original" in protocols:
        _, row = run("deform_cnn", "scale", ft_epochs, init=regular, trainable="offsets")
        rows.append({"protocol": "original", "variant": "deformable: regular weights, offsets tuned on scaled", **row})
    if "fair" in protocols:
        _, row = run("deform_cnn", "none", args.epochs)
        rows.append({"protocol": "fair", "variant": "deformable, plain MNIST", **row})
        for name, label in (("cnn", "regular"), ("deform_cnn", "deformable")):
            _, row = run(name, "scale", args.epochs)
            rows.append({"protocol": "fair", "variant": f"{label}, scale-augmented MNIST", **row})

    meta = {"seed": args.seed, "epochs": args.epochs, "finetune_epochs": ft_epochs, "train_size": len(train),
            "test_size": len(tests["mnist"]), "wall_s": time.perf_counter() - t_start, "threads": torch.get_num_threads(),
            "device": args.device, "versions": versions(), "scaled_transform": tests["mnist-scaled"].meta["transform"]}
    if args.json:
        json.dump({"rows": rows, "reference": REFERENCE, "meta": meta}, sys.stdout, indent=2)
        print()
        return 0
    print(f"\nScaled MNIST reproduction: {meta['train_size']} train / {meta['test_size']} test images, "
          f"{args.epochs} epochs (fine-tune {ft_epochs}), seed {args.seed}, {meta['threads']} threads")
    print(f"{'protocol':9s} {'variant':54s} {'MNIST':>8s} {'Scaled':>8s} {'train s':>8s}")
    for r in rows:
        print(f"{r['protocol']:9s} {r['variant']:54s} {r['mnist']:7.2f}% {r['mnist_scaled']:7.2f}% {r['train_s']:8.1f}")
    for k, (a, b) in REFERENCE.items():
        print(f"{'reference':9s} {k + ' (Keras experiment)':54s} {a:7.2f}% {b:7.2f}%")
    backends = sorted({r["deform_backend"] for r in rows if r["deform_backend"]})
    print(f"wall time {meta['wall_s']:.0f} s; deformable backend {', '.join(backends) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
