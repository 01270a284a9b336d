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

    # the full protocol: 60k training images, 10 epochs, full 10k test sets, seeds 0-2, both protocols
    python benchmarks/scaled_mnist.py --seeds 0,1,2 --jobs 2 --results benchmarks/results/benchmarks/scaled-mnist-full.json
    python benchmarks/scaled_mnist.py --epochs 2 --train-subset 10000 --finetune-epochs 1 --seeds 0
    python benchmarks/scaled_mnist.py --json > scaled_mnist.json
    python benchmarks/scaled_mnist.py --device cuda --json    # on a GPU (benchmarks/gpu_session.sh)

    # one seed at a time, each kept as it finishes (a long CPU job that may be cut short), then the table
    python benchmarks/scaled_mnist.py --protocols original --seeds 0 --runs-dir /tmp/scaled-mnist
    python benchmarks/scaled_mnist.py --table --runs-dir /tmp/scaled-mnist --results benchmarks/results/benchmarks/scaled-mnist-original.json

    # the ablation of the original protocol: the regular CNN trained once per seed and kept, then
    # fine-tuned with the reference's offset layer and/or its schedule (20 epochs, Adam 5e-4, batch 32)
    python benchmarks/scaled_mnist.py --protocols original --seeds 0 --regular-cache /tmp/regular --runs-dir /tmp/ablation --offset-style channel --curve
    python benchmarks/scaled_mnist.py --protocols original --seeds 0 --regular-cache /tmp/regular --runs-dir /tmp/ablation --finetune-epochs 20 --finetune-lr 5e-4 --finetune-batch-size 32
    # ... and the reference's other differences: batch norm trained during the fine-tuning, Keras 2.0's
    # nearest-neighbour resampling of the scaled data (train and test), ReLU before batch norm
    python benchmarks/scaled_mnist.py --protocols original --seeds 0 --regular-cache /tmp/regular --runs-dir /tmp/ablation --offset-style keras --finetune-trainable offsets+bn --interpolation nearest --block-order relu-bn
    python benchmarks/scaled_mnist.py --protocols original --table --runs-dir /tmp/ablation --results benchmarks/results/benchmarks/scaled-mnist-ablation.json

Each seed is an independent run (initialisation, batch order, augmentation and the Scaled MNIST test
variant all follow the seed); ``--jobs`` runs seeds in that many worker processes, one torch thread
each. The table gives, per variant, the mean over seeds with the 95 % Wilson interval of the pooled
test images, and the standard deviation over seeds. A run whose fine-tuning differs from ours
(``--offset-style``, ``--finetune-epochs/-lr/-batch-size``, ``--finetune-trainable``, ``--interpolation``,
``--block-order``) names the difference in its row's variant
label and in its file name under ``--runs-dir``; ``--table`` puts every run of the protocols in that
folder in one table, one row per variant.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore", category=FutureWarning)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_file import markdown, write_results  # noqa: E402

from robustbench_geo.checkpoint import versions  # noqa: E402
from robustbench_geo.data import load_dataset  # noqa: E402
from robustbench_geo.evaluation import image_accuracy  # noqa: E402
from robustbench_geo.models import build_model, set_deform_backend  # noqa: E402
from robustbench_geo.models.deformable import load_regular_weights  # noqa: E402
from robustbench_geo.stats import estimate  # noqa: E402
from robustbench_geo.training import TrainConfig, seed_everything, train_image_model  # noqa: E402

REFERENCE = {"regular": (98.74, 57.01), "deformable": (97.27, 92.55)}
PROTOCOLS = ("original", "fair")
OFFSET_STYLES = ("dcn", "channel", "keras")
FT_LR, FT_BATCH_SIZE = 1e-3, 128  # our offset fine-tuning (the reference's: 5e-4, 32)


def one_seed(args, seed: int) -> dict:
    """Every variant of the chosen protocols for one seed: rows of accuracies (%) and the test sizes."""
    if args.jobs > 1:
        torch.set_num_threads(1)
    train, tests = _data(args, seed)
    rows = []
    regular, row = regular_cnn(args, seed, train, tests)
    rows.append({"protocol": "both", "variant": _sampled(args, "regular, plain MNIST"), **row})
    scale = _scale_augment(args)
    if "original" in args.protocol_list:
        _, row = _train(args, seed, train, tests, "deform_cnn", scale, _ft_epochs(args), init=regular,
                        trainable=args.finetune_trainable, lr=args.finetune_lr, batch_size=args.finetune_batch_size)
        rows.append({"protocol": "original", "variant": original_variant(args), **row})
    if "fair" in args.protocol_list:
        _, row = _train(args, seed, train, tests, "deform_cnn", "none", args.epochs)
        rows.append({"protocol": "fair", "variant": _sampled(args, _with_style(args, "deformable, plain MNIST")), **row})
        for name, label in (("cnn", "regular"), ("deform_cnn", "deformable")):
            _, row = _train(args, seed, train, tests, name, scale, args.epochs)
            label = f"{label}, scale-augmented MNIST"
            label = _with_style(args, label) if name == "deform_cnn" else label
            rows.append({"protocol": "fair", "variant": _sampled(args, label), **row})
    return {"seed": seed, "rows": rows, "train_size": len(train), "test_size": len(tests["mnist"]),
            "scaled_transform": tests["mnist-scaled"].meta["transform"]}


def _data(args, seed: int):
    kw = dict(root=args.data_root, seed=seed)
    train = load_dataset("mnist", split="train", subset=args.train_subset, **kw)
    tests = {"mnist": load_dataset("mnist", split="test", subset=args.test_subset, **kw),
             "mnist-scaled": load_dataset("mnist-scaled", split="test", subset=args.test_subset,
                                          interpolation=args.interpolation, **kw)}
    return train, tests


def _scale_augment(args) -> str:
    """The training augmentation that draws Scaled MNIST's transforms, resampled like its test set."""
    return "scale-nearest" if args.interpolation == "nearest" else "scale"


def _sampled(args, label: str) -> str:
    """A row label naming what differs from ours for every model of the run (see :func:`_run_wide`)."""
    extra = [words for words, _ in _run_wide(args)]
    return f"{label} [{'; '.join(extra)}]" if extra else label


def _run_wide(args) -> list[tuple[str, str]]:
    """The settings that differ from ours for every model of the run, regular included: Keras 2.0's
    nearest-neighbour resampling of the scaled data (train and test), the reference's ReLU-before-BN
    blocks; as (words for a row label, part of the run file's name)."""
    out = [("nearest sampling", "nearest")] if args.interpolation != "bilinear" else []
    if args.block_order != "bn-relu":
        out.append(("ReLU before BN", args.block_order))
    return out


def _ft_epochs(args) -> int:
    return args.finetune_epochs if args.finetune_epochs is not None else args.epochs


def _schedule_differs(args) -> bool:
    """Whether the offset fine-tuning's epochs, learning rate or batch size differ from ours."""
    return (_ft_epochs(args), args.finetune_lr, args.finetune_batch_size) != (args.epochs, FT_LR, FT_BATCH_SIZE)


def _with_style(args, label: str) -> str:
    return label if args.offset_style == "dcn" else f"{label} [{args.offset_style} offsets]"


def original_variant(args) -> str:
    """The original protocol's deformable row label; settings that differ from ours are named in it."""
    label = "deformable: regular weights, offsets tuned on scaled"
    extra = [words for words, _ in _differences(args)]
    return f"{label} [{'; '.join(extra)}]" if extra else label


def _differences(args) -> list[tuple[str, str]]:
    """Each setting of the fine-tuning that differs from ours, the run-wide ones last: (words for the row
    label, part of the run file's name)."""
    out = [(f"{args.offset_style} offsets", args.offset_style)] if args.offset_style != "dcn" else []
    if _schedule_differs(args):
        out.append((f"{_ft_epochs(args)} ep, Adam {args.finetune_lr:g}, batch {args.finetune_batch_size}",
                    f"ft{_ft_epochs(args)}-lr{args.finetune_lr:g}-b{args.finetune_batch_size}"))
    if args.finetune_trainable != "offsets":
        out.append(("batch norm trained too", "bn"))
    if args.finetune_bn_momentum is not None:
        out.append((f"BN momentum {args.finetune_bn_momentum:g}", f"bnm{args.finetune_bn_momentum:g}"))
    return out + _run_wide(args)


def _train(args, seed, train, tests, name, augment, epochs, init=None, trainable="all", lr=1e-3, batch_size=128):
    """Train one variant from its seed; returns the model and its row (accuracies in %)."""
    seed_everything(seed)
    kwargs = {"offset_style": args.offset_style} if name == "deform_cnn" and args.offset_style != "dcn" else {}
    if args.block_order != "bn-relu":
        kwargs["block_order"] = args.block_order
    model, _ = build_model(name, train, **kwargs)
    backend = set_deform_backend(model, args.deform_backend, args.device)
    model.to(args.device)
    if init is not None:
        load_regular_weights(model, init.state_dict())
        if args.finetune_bn_momentum is not None:  # Keras' BatchNormalization(momentum=0.99) is torch's 0.01
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.momentum = args.finetune_bn_momentum
    cfg = TrainConfig(epochs=epochs, seed=seed, augment=augment, trainable=trainable, lr=lr, batch_size=batch_size)
    curve, eval_s = [], 0.0

    def after_epoch(epoch: int, rec: dict) -> None:  # --curve: Scaled MNIST test accuracy after every epoch
        nonlocal eval_s
        t = time.perf_counter()
        curve.append(100 * image_accuracy(model, tests["mnist-scaled"]))
        eval_s += time.perf_counter() - t
        print(f"[{name} seed {seed}] epoch {epoch + 1}/{epochs}: train acc {100 * rec['train_accuracy']:.2f} %, "
              f"Scaled MNIST test {curve[-1]:.2f} %", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    train_image_model(model, train, cfg, device=args.device, progress=not args.json and args.jobs == 1,
                      on_epoch=after_epoch if args.curve else None)
    secs = time.perf_counter() - t0 - eval_s
    accs = {k: 100 * image_accuracy(model, ds) for k, ds in tests.items()}
    row = {"model": name, "augment": augment, "trainable": trainable, "epochs": epochs, "lr": lr, "batch_size": batch_size,
           "seed": seed, "mnist": accs["mnist"], "mnist_scaled": accs["mnist-scaled"], "train_s": secs,
           "deform_backend": backend}
    if name == "deform_cnn":
        row["offset_style"] = args.offset_style
    if args.curve:
        row["scaled_curve"] = curve
    return model, row


def regular_cnn(args, seed, train, tests):
    """The regular CNN of ``seed`` trained on plain MNIST, and its row.

    With ``--regular-cache DIR`` it is read from ``DIR/cnn-seed<S>-e<E>-n<N>.pt`` when a previous run
    saved it there (its row keeps the seconds of the run that trained it; its accuracies are measured again
    on this run's test sets, which ``--test-subset`` may have changed), else trained and saved, so that
    several fine-tuning variants of one seed start from the same regular weights.
    """
    path = None
    if args.regular_cache:
        order = "" if args.block_order == "bn-relu" else f"-{args.block_order}"
        path = Path(args.regular_cache) / f"cnn{order}-seed{seed}-e{args.epochs}-n{len(train)}.pt"
        if path.exists():
            saved = torch.load(path, map_location="cpu")
            model, _ = build_model("cnn", train, block_order=args.block_order)
            model.load_state_dict(saved["state_dict"])
            model.to(args.device).eval()
            accs = {k: 100 * image_accuracy(model, ds) for k, ds in tests.items()}
            return model, {**saved["row"], "mnist": accs["mnist"], "mnist_scaled": accs["mnist-scaled"],
                           "cached": str(path)}
    model, row = _train(args, seed, train, tests, "cnn", "none", args.epochs)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "row": row}, path)
    return model, row


def _cell(values: list[float], n: int) -> str:
    """Mean over seeds (%), [95 % Wilson interval of the pooled test images], ± std over seeds."""
    est = estimate([v / 100 for v in values], [n] * len(values))
    out = f"{100 * est.mean:.2f} [{100 * est.low:.1f}, {100 * est.high:.1f}]"
    if len(values) > 1 and est.std is not None and not math.isnan(est.std):
        out += f" ± {100 * est.std:.2f}"
    return out


def table(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    """One row per variant over all seeds (variants in order of first appearance), then the reference's rows.

    A seed's row of one variant may appear in several runs (the regular CNN reused from
    ``--regular-cache`` by each fine-tuning variant); it is counted once, and must agree.
    """
    n = runs[0]["test_size"]
    columns = ["protocol", "variant", "MNIST", "Scaled MNIST", "train s (mean)"]
    groups: dict[tuple[str, str], dict[int, dict]] = {}
    for run in runs:
        for r in run["rows"]:
            per_seed = groups.setdefault((r["protocol"], r["variant"]), {})
            old = per_seed.setdefault(r["seed"], r)
            if (old["mnist"], old["mnist_scaled"]) != (r["mnist"], r["mnist_scaled"]):
                raise ValueError(f"runs disagree on {r['variant']!r}, seed {r['seed']}: expected one trained model, got "
                                 f"{old['mnist']:.2f}/{old['mnist_scaled']:.2f} and {r['mnist']:.2f}/{r['mnist_scaled']:.2f} %")
    rows = []
    for (protocol, variant), per_seed in groups.items():
        rs = [per_seed[s] for s in sorted(per_seed)]
        rows.append([protocol, variant, _cell([r["mnist"] for r in rs], n), _cell([r["mnist_scaled"] for r in rs], n),
                     f"{sum(r['train_s'] for r in rs) / len(rs):.0f}"])
    for k, (a, b) in REFERENCE.items():
        rows.append(["reference", f"{k} (Keras experiment)", f"{a:.2f}", f"{b:.2f}", ""])
    seed_sets = [sorted(per_seed) for per_seed in groups.values()]
    if any(s != seed_sets[0] for s in seed_sets):  # variants run with different seeds: say which, row by row
        columns.insert(2, "seeds")
        for row, seeds in zip(rows, seed_sets + [[]] * len(REFERENCE)):
            row.insert(2, ",".join(map(str, seeds)))
    return columns, rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=10, help="training epochs on MNIST (reference: 10)")
    p.add_argument("--finetune-epochs", type=int, default=None, help="offset fine-tuning epochs (default: --epochs)")
    p.add_argument("--finetune-lr", type=float, default=FT_LR, help="offset fine-tuning Adam learning rate (reference: 5e-4)")
    p.add_argument("--finetune-batch-size", type=int, default=FT_BATCH_SIZE, help="offset fine-tuning batch size (reference: 32)")
    p.add_argument("--offset-style", default="dcn", choices=OFFSET_STYLES,
                   help="deform_cnn's offset layers: dcn (one offset per kernel tap, ours), channel (one per input "
                        "channel, resampling before a plain conv, as the reference's ConvOffset2D) or keras (channel "
                        "with the reference code's reshaping of the predicted offsets)")
    p.add_argument("--finetune-trainable", default="offsets", choices=("offsets", "offsets+bn"),
                   help="what the offset fine-tuning trains: the offsets with batch norm frozen (ours), or the offsets "
                        "and the batch-norm layers, statistics included (the reference)")
    p.add_argument("--finetune-bn-momentum", type=float, default=None,
                   help="batch-norm momentum while the offsets+bn fine-tuning updates the statistics (torch "
                        "convention; default torch's 0.1; Keras' default momentum=0.99 is 0.01 here)")
    p.add_argument("--interpolation", default="bilinear", choices=("bilinear", "nearest"),
                   help="resampling of the scaled data, training and test alike: bilinear (ours) or nearest "
                        "neighbour with edges repeated (the reference's Keras 2.0 ImageDataGenerator)")
    p.add_argument("--block-order", default="bn-relu", choices=("bn-relu", "relu-bn"),
                   help="every model's blocks: conv, BN, ReLU (ours) or conv, ReLU, BN (the reference's Keras model)")
    p.add_argument("--regular-cache", default=None,
                   help="folder keeping each seed's trained regular CNN: reused when there, saved when trained")
    p.add_argument("--curve", action="store_true",
                   help="also measure Scaled MNIST test accuracy after every epoch (kept as each row's scaled_curve)")
    p.add_argument("--train-subset", type=int, default=None, help="seeded subset of the 60k training images")
    p.add_argument("--test-subset", type=int, default=None, help="seeded subset of the 10k test images")
    p.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds SEED)")
    p.add_argument("--seeds", default="0", help="comma list of seeds, each an independent run (full protocol: 0,1,2)")
    p.add_argument("--jobs", type=int, default=1, help="seeds run in this many worker processes (one torch thread each)")
    p.add_argument("--protocols", default="original,fair", help="comma list of: original, fair")
    p.add_argument("--deform-backend", default="auto")
    p.add_argument("--device", default="cpu", help="torch device for training and evaluation, e.g. cuda")
    p.add_argument("--data-root", default=None)
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--results", default=None, help="write the table to benchmarks/results/<topic>/<name>.json")
    p.add_argument("--notes", default=None, help="load, what else ran, deviations (stored with --results)")
    p.add_argument("--runs-dir", default=None,
                   help="write each seed's run here as it finishes (seed<S>-<protocols>.json); with --table, read them")
    p.add_argument("--table", action="store_true", help="build the table from the runs in --runs-dir; train nothing")
    args = p.parse_args(argv)
    if args.finetune_bn_momentum is not None and (args.finetune_trainable != "offsets+bn" or not 0 < args.finetune_bn_momentum <= 1):
        p.error(f"--finetune-bn-momentum: expected a number in (0, 1] with --finetune-trainable offsets+bn (frozen batch "
                f"norm keeps its statistics), got {args.finetune_bn_momentum} with {args.finetune_trainable}")
    args.protocol_list = args.protocols.split(",")
    unknown = set(args.protocol_list) - set(PROTOCOLS)
    if unknown:
        p.error(f"--protocols: expected a comma list of original, fair; got {sorted(unknown)}")
    try:
        seeds = [args.seed] if args.seed is not None else [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds: expected a comma list of integers, got {args.seeds!r}")
    if args.jobs < 1:
        p.error(f"--jobs: expected a positive integer, got {args.jobs}")

    if args.table:
        if not args.runs_dir:
            p.error("--table: needs --runs-dir (the folder the seeds' runs were written to)")
        return _table_from_runs(args)
    t_start = time.perf_counter()
    if args.runs_dir and not (args.jobs > 1 and len(seeds) > 1):
        runs = [_kept_run(args, s) for s in seeds]
    elif args.jobs > 1 and len(seeds) > 1:
        os.environ["OMP_NUM_THREADS"] = "1"
        with mp.get_context("spawn").Pool(min(args.jobs, len(seeds))) as pool:
            runs = pool.starmap(_kept_run if args.runs_dir else one_seed, [(args, s) for s in seeds])
    else:
        runs = [one_seed(args, s) for s in seeds]
    meta = _meta(args, seeds, runs, wall_s=time.perf_counter() - t_start)
    _report(args, runs, meta)
    return 0


def _meta(args, seeds, runs, *, wall_s) -> dict:
    ft_epochs = args.finetune_epochs if args.finetune_epochs is not None else args.epochs
    return {"seeds": seeds, "epochs": args.epochs, "finetune_epochs": ft_epochs, "train_size": runs[0]["train_size"],
            "test_size": runs[0]["test_size"], "wall_s": wall_s, "jobs": args.jobs,
            "threads": 1 if args.jobs > 1 else torch.get_num_threads(), "device": args.device, "versions": versions(),
            "scaled_transform": runs[0]["scaled_transform"], "protocols": args.protocol_list,
            "finetune_lr": args.finetune_lr, "finetune_batch_size": args.finetune_batch_size,
            "offset_style": args.offset_style, "regular_cache": args.regular_cache,
            "finetune_trainable": args.finetune_trainable, "interpolation": args.interpolation,
            "finetune_bn_momentum": args.finetune_bn_momentum,
            "block_order": args.block_order}


def _kept_run(args, seed: int) -> dict:
    """One seed's run, written to ``--runs-dir`` as soon as it finishes (with its own meta)."""
    t0 = time.perf_counter()
    run = one_seed(args, seed)
    run["meta"] = _meta(args, [seed], [run], wall_s=time.perf_counter() - t0)
    out = Path(args.runs_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"seed{seed}-{'+'.join(args.protocol_list)}{_variant_tag(args)}.json").write_text(json.dumps(run, indent=1))
    return run


def _variant_tag(args) -> str:
    """The run file's suffix naming the fine-tuning settings that differ from ours ('' for ours)."""
    return "".join(f"-{tag}" for _, tag in _differences(args))


def _table_from_runs(args) -> int:
    """The table over every kept run in ``--runs-dir`` of the chosen protocols, seeds in order."""
    tag = "+".join(args.protocol_list)
    found = [*Path(args.runs_dir).glob(f"seed*-{tag}.json"), *Path(args.runs_dir).glob(f"seed*-{tag}-*.json")]
    files = sorted(found, key=lambda f: (int(f.name[4:].split("-")[0]), not f.name.endswith(f"-{tag}.json"), f.name))
    if not files:
        raise SystemExit(f"--table: no runs of protocols {tag!r} in {args.runs_dir} (expected seed<S>-{tag}.json)")
    runs = [json.loads(f.read_text()) for f in files]
    first = runs[0]["meta"]
    for key in ("epochs", "train_size", "test_size"):
        if any(r["meta"][key] != first[key] for r in runs):
            raise SystemExit(f"--table: the runs in {args.runs_dir} differ in {key}; keep one protocol per folder")
    seeds = sorted({r["seed"] for r in runs})
    meta = {**first, "seeds": seeds, "wall_s": sum(r["meta"]["wall_s"] for r in runs),
            "per_run": {f.name: r["meta"] for f, r in zip(files, runs)}}
    args.epochs, args.finetune_epochs, args.jobs = first["epochs"], first["finetune_epochs"], first["jobs"]
    _report(args, runs, meta)
    return 0


def _report(args, runs: list[dict], meta: dict) -> None:
    seeds, ft_epochs = meta["seeds"], meta["finetune_epochs"]
    rows = [r for run in runs for r in run["rows"]]
    if args.json:
        json.dump({"rows": rows, "reference": REFERENCE, "meta": meta}, sys.stdout, indent=2)
        print()
    else:
        print(f"\nScaled MNIST reproduction: {meta['train_size']} train / {meta['test_size']} test images, "
              f"{args.epochs} epochs (fine-tune {ft_epochs}), seeds {seeds}, {meta['threads']} thread(s) per run")
        print(markdown(*table(runs)))
        backends = sorted({r["deform_backend"] for r in rows if r["deform_backend"]})
        print(f"wall time {meta['wall_s']:.0f} s; deformable backend {', '.join(backends) or '-'}")
    if args.results:
        columns, cells = table(runs)
        write_results(args.results, f"Clean test accuracy (%) of the Scaled MNIST reproduction: mean over seeds "
                      f"{seeds} [95 % Wilson interval of the {meta['test_size']} test images pooled over seeds] ± std "
                      f"over seeds; {meta['train_size']} training images, {args.epochs} epochs; the reference's numbers "
                      "below", columns, cells, data={"rows": rows, "meta": meta}, notes=args.notes)


if __name__ == "__main__":
    sys.exit(main())
