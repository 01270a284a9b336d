"""Speed of the deformable convolution: our backends vs torchvision vs a regular F.conv2d.

One run, the same inputs for all ops, float32, 3x3 kernels, modulated (DCNv2, with mask), no
bias, random offsets (N(0, 1) pixels) and masks. "fwd" is an inference forward pass
(``torch.no_grad``); "fwd+bwd" is a forward pass plus the backward pass for every input
(input, offset, mask and weight; input and weight for conv2d). The repetitions of the ops are
interleaved (ours, torchvision, conv2d, ours, ...) so that a load change on a shared machine
hits all alike; the tables report medians, after one warm-up call per op (which compiles the
kernels).

* ``--device cpu`` (default): ``native`` ("ours"), torchvision, conv2d; wall-clock timing.
  Shapes: three fixed ones (``BASE_SHAPES``), the deformable stage of ``deform_resnet18`` (CIFAR
  32x32, batch 32; read from the model with forward hooks) and the deformable layers of
  ``deform_cnn`` on MNIST (batch 128).
* ``--device cuda``: ``triton`` ("ours"), torchvision, ``native`` (its pure-PyTorch path on the
  GPU) and conv2d, timed with CUDA events. Shapes: ``GPU_SHAPES`` (the three above, a strided one and two
  large ones), then the model layers as above. ``--tf32`` lets float32 GEMMs use TF32 (the triton
  kernels follow ``torch.backends.cuda.matmul.allow_tf32``; cuDNN's conv2d uses TF32 by default).

``--epoch`` also times training ``deform_cnn`` (deformable v1, as ``rbgeo train deform_cnn
mnist``) on MNIST with :func:`robustbench_geo.training.train_image_model` for each backend, plus
the regular ``cnn``: on a seeded subset of ``--epoch-subset`` training images (default 3840 = 30
batches of 128) by default, and the seconds for a full epoch (60000 images) extrapolated linearly
from it; ``--epoch-subset 0`` times the full epoch instead (CPU only).

Usage::

    python benchmarks/deform_conv.py                 # table, about 2 minutes on 2 cores
    python benchmarks/deform_conv.py --json          # the same as JSON
    python benchmarks/deform_conv.py --device cuda --reps 20 --json   # the GPU table (docs/deform-conv.md)
    python benchmarks/deform_conv.py --epoch         # plus one MNIST training epoch per backend
    python benchmarks/deform_conv.py --epoch --skip-shapes --epoch-subset 1280
    RBGEO_NATIVE_KERNEL=torch python benchmarks/deform_conv.py   # the pure-PyTorch fallback as "ours"
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

warnings.filterwarnings("ignore", category=FutureWarning)

from robustbench_geo.checkpoint import versions  # noqa: E402
from robustbench_geo.models import build_model, create_model, deformable_layers, set_deform_backend  # noqa: E402
from robustbench_geo.ops import _deform_kernel, deform_conv2d, resolve_backend  # noqa: E402
from robustbench_geo.ops._deform_triton import Tiles, deform_conv2d_triton  # noqa: E402

BASE_SHAPES = [(128, 32, 14, 14, 64, 1), (128, 64, 7, 7, 64, 1), (32, 64, 28, 28, 64, 1)]
#: GPU shapes (B, C_in, H, W, C_out, stride): the three above, a strided one and two large ones
GPU_SHAPES = BASE_SHAPES + [(32, 256, 8, 8, 512, 2), (64, 256, 56, 56, 256, 1), (16, 512, 28, 28, 512, 1)]
#: ops timed per device, "ours" first
DEVICE_OPS = {"cpu": ["native", "torchvision", "conv2d"], "cuda": ["triton", "torchvision", "native", "conv2d"]}
MNIST_TRAIN_SIZE = 60000


def model_shapes(name: str, batch: int, in_channels: int, size: int, **kwargs) -> list[tuple]:
    """``(B, C_in, H, W, C_out, stride)`` of every deformable layer of a registered model, deduplicated."""
    model = create_model(name, in_channels=in_channels, image_size=(size, size), **kwargs)
    shapes = []

    def hook(layer, inp, _out):
        x = inp[0]
        shapes.append((batch, x.shape[1], x.shape[2], x.shape[3], layer.conv.out_channels, layer.conv.stride[0]))

    handles = [m.register_forward_hook(hook) for _, m in deformable_layers(model)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, in_channels, size, size))
    for h in handles:
        h.remove()
    return list(dict.fromkeys(shapes))


def _time(fn, device: str) -> float:
    """Milliseconds of ``fn()``: CUDA events on a GPU, the wall clock on the CPU."""
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def bench_shape(shape, reps: int, seed: int = 0, device: str = "cpu", ops: list[str] | None = None,
                tiles: Tiles | None = None) -> dict:
    """Median milliseconds of each op (default ``DEVICE_OPS[device]``), forward and forward+backward.

    ``tiles``: the triton backend's tile sizes instead of its automatic choice (tuning).
    """
    b, c, h, w, co, stride = shape
    g = torch.Generator().manual_seed(seed)
    ho, wo = (h + 2 - 3) // stride + 1, (w + 2 - 3) // stride + 1
    x = torch.rand(b, c, h, w, generator=g)
    weight = torch.randn(co, c, 3, 3, generator=g) / (9 * c) ** 0.5
    off = torch.randn(b, 18, ho, wo, generator=g)
    mask = torch.rand(b, 9, ho, wo, generator=g)
    leaves = [t.to(device).requires_grad_(True) for t in (x, off, mask, weight)]
    grads = torch.randn(b, co, ho, wo, generator=g).to(device)

    def deform(backend):
        def op(lv):
            if backend == "torchvision":
                return torchvision.ops.deform_conv2d(lv[0], lv[1], lv[3], None, stride, 1, 1, lv[2])
            if backend == "triton" and tiles is not None:
                return deform_conv2d_triton(lv[0], lv[1], lv[3], None, (stride, stride), (1, 1), (1, 1), lv[2], tiles=tiles)
            return deform_conv2d(lv[0], lv[1], lv[3], None, stride, 1, 1, lv[2], backend=backend)
        return op

    def conv(lv):
        return F.conv2d(lv[0], lv[3], None, stride, 1)

    ops = {name: conv if name == "conv2d" else deform(name) for name in ops or DEVICE_OPS[device]}

    def fwd(op):
        with torch.no_grad():
            op([t.detach() for t in leaves])

    def fwd_bwd(op):
        for t in leaves:
            t.grad = None
        op(leaves).backward(grads)

    out = {}
    for mode, run in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
        times = {k: [] for k in ops}
        for k, op in ops.items():  # warm-up (compiles the kernels on first use)
            run(op)
        for _ in range(reps):
            for k, op in ops.items():
                times[k].append(_time(lambda: run(op), device))
        out[mode] = {f"{k}_ms": statistics.median(v) for k, v in times.items()}
    return out


def epoch_timings(subset: int, seed: int, data_root=None, progress: bool = True) -> list[dict]:
    """Seconds of one ``deform_cnn`` training epoch on MNIST per backend (and the regular ``cnn``)."""
    from robustbench_geo.data import load_dataset
    from robustbench_geo.training import TrainConfig, seed_everything, train_image_model

    train = load_dataset("mnist", split="train", subset=subset or None, root=data_root, seed=seed)
    rows = []
    for name, backend in (("cnn", None), ("deform_cnn", "native"), ("deform_cnn", "torchvision")):
        seed_everything(seed)
        model, _ = build_model(name, train)
        resolved = set_deform_backend(model, backend) if backend else None
        hist = train_image_model(model, train, TrainConfig(epochs=1, seed=seed), progress=progress)
        secs = hist[0]["seconds"]
        rows.append({"model": name, "deform_backend": resolved, "images": len(train), "seconds": secs,
                     "full_epoch_seconds": secs * MNIST_TRAIN_SIZE / len(train), "extrapolated": len(train) != MNIST_TRAIN_SIZE,
                     "train_loss": hist[0]["loss"]})
    return rows


def _fmt_table(rows, names: list[str]) -> str:
    """:func:`table_rows` as aligned plain text: one line per shape and mode, the shape named once."""
    columns, cells = table_rows(rows, names)
    widths = [max(len(c), *(len(r[k]) for r in cells)) for k, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) if k < 2 else c.rjust(w) for k, (c, w) in enumerate(zip(columns, widths)))]
    lines.append("-" * len(lines[0]))
    for i, r in enumerate(cells):
        r = ["" if i % 2 else r[0], *r[1:]]
        lines.append(" | ".join(c.ljust(w) if k < 2 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def table_rows(rows, names: list[str]) -> tuple[list[str], list[list[str]]]:
    """The docs table of :func:`_fmt_table`: one row per shape and mode, milliseconds and the two ratios."""
    ours = names[0]
    columns = ["shape (B, Cin, HxW -> Cout, stride)", "mode", *(f"{n} ms" for n in names), f"tv/{ours}", f"{ours}/conv2d"]
    out = []
    for r in rows:
        b, c, h, w, co, s = r["shape"]
        for mode in ("fwd", "fwd_bwd"):
            m = r[mode]
            tv = f"{m['torchvision_ms'] / m[ours + '_ms']:.2f}x" if "torchvision_ms" in m else "-"
            cv = f"{m[ours + '_ms'] / m['conv2d_ms']:.2f}x" if "conv2d_ms" in m else "-"
            out.append([f"{r['source']}: {b}, {c}, {h}x{w} -> {co}, s{s}", mode.replace("_", "+"),
                        *(f"{m[n + '_ms']:.2f}" for n in names), tv, cv])
    return columns, out


def write_stored(path: str, results: str, date: str | None = None) -> int:
    """Render a stored ``--json`` output (a GPU session's) as a docs results file, with the measuring
    machine, date and versions taken from the stored output rather than from this machine."""
    from results_file import markdown, write_results

    res = json.loads(Path(path).read_text())
    meta = res["meta"]
    names = meta["ops"]
    columns, rows = table_rows(res["shapes"], names)
    where = meta.get("gpu", f"{meta['threads']} CPU threads")
    what = (f"Deformable convolution ({meta['dtype']}, {meta['kernel']}), milliseconds per call, median of "
            f"{meta['reps']} interleaved runs ({meta.get('timing', 'wall clock')}), on {where}; ops: {', '.join(names)}; "
            f"TF32 in GEMMs {'on' if meta.get('matmul_tf32') else 'off'}, cuDNN TF32 {'on' if meta.get('cudnn_tf32') else 'off'} "
            f"(conv2d's baseline); tv/{names[0]} > 1 means {names[0]} is faster")
    if not (meta.get("date") or date):
        raise SystemExit(f"{path} records no date (written before --json stored one): pass --measured-on 'YYYY-MM-DD HH:MM UTC'")
    measured = {"date": meta.get("date") or date, "machine": {"device": meta["device"], "gpu": meta.get("gpu"),
                "threads": meta["threads"], "load_average": meta["load_average"]}, "versions": meta["versions"]}
    write_results(results, what, columns, rows, data=res, measured=measured)
    print(markdown(columns, rows))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=sorted(DEVICE_OPS), default="cpu", help="where the ops run (see above)")
    p.add_argument("--tf32", action="store_true", help="CUDA: allow TF32 in float32 GEMMs (triton and torchvision)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per op (medians reported)")
    p.add_argument("--ops", default=None, help="comma list of ops to time (default: all of the device's)")
    p.add_argument("--large-only", action="store_true", help="CUDA: only the two large GPU shapes")
    p.add_argument("--tiles", default=None, help="triton tile sizes BLOCK_M,BLOCK_N,BLOCK_K (powers of 2 >= 16)")
    p.add_argument("--resnet-batch", type=int, default=32, help="batch of the deform_resnet18 stage shapes")
    p.add_argument("--no-model-shapes", action="store_true", help="only the three base shapes")
    p.add_argument("--epoch", action="store_true", help="also time one deform_cnn MNIST training epoch per backend")
    p.add_argument("--epoch-subset", type=int, default=3840, help="training images timed (0: all 60000)")
    p.add_argument("--skip-shapes", action="store_true", help="with --epoch: only the training epochs")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--from-json", default=None, metavar="FILE", help="render a stored --json output (with --results)")
    p.add_argument("--results", default=None, help="with --from-json: write benchmarks/results/<topic>/<name>.json")
    p.add_argument("--measured-on", default=None, help="with --from-json: the date of a stored output that records none")
    args = p.parse_args(argv)
    if args.from_json or args.results:
        if not (args.from_json and args.results):
            p.error("--from-json and --results go together: the stored --json output and the results file to write")
        return write_stored(args.from_json, args.results, args.measured_on)
    if args.reps < 1:
        p.error(f"--reps: expected a positive number, got {args.reps}")
    if args.threads is not None:
        if args.threads < 1:
            p.error(f"--threads: expected a positive number, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            p.error("--device cuda: expected a CUDA device, found none")
        if args.epoch:
            p.error("--epoch: times CPU training; run it without --device cuda")
        torch.backends.cuda.matmul.allow_tf32 = args.tf32

    ops = args.ops.split(",") if args.ops else DEVICE_OPS[args.device]
    unknown = set(ops) - set(DEVICE_OPS[args.device])
    if unknown:
        p.error(f"--ops: expected some of {', '.join(DEVICE_OPS[args.device])}, got {sorted(unknown)}")
    tiles = None
    if args.tiles:
        try:
            tiles = Tiles(*(int(v) for v in args.tiles.split(",")))
        except (TypeError, ValueError):
            p.error(f"--tiles: expected BLOCK_M,BLOCK_N,BLOCK_K, got {args.tiles!r}")
    issue_shapes = GPU_SHAPES[-2:] if args.large_only else GPU_SHAPES if args.device == "cuda" else BASE_SHAPES
    shapes = [] if (args.skip_shapes and args.epoch) else [("issue", s) for s in issue_shapes]
    if shapes and not (args.no_model_shapes or args.large_only):
        shapes += [("resnet18", s) for s in model_shapes("deform_resnet18", args.resnet_batch, 3, 32)]
        shapes += [("deform_cnn", s) for s in model_shapes("deform_cnn", 128, 1, 28)]
    rows = []
    for source, shape in shapes:
        rows.append({"source": source, "shape": list(shape), **bench_shape(shape, args.reps, args.seed, args.device, ops, tiles)})
        if not args.json:
            print(f"measured {source} {shape}", file=sys.stderr)
    native_impl = "compiled kernel" if args.device == "cpu" and _deform_kernel.available() else "pure PyTorch"
    meta = {"device": args.device, "ops": ops, "tiles": args.tiles, "reps": args.reps, "threads": torch.get_num_threads(),
            "dtype": "float32", "kernel": "3x3, padding 1, mask", "native_impl": native_impl,
            "auto_backend": resolve_backend("auto", args.device), "load_average": list(os.getloadavg()),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "versions": versions()}
    if args.device == "cuda":
        meta.update(gpu=torch.cuda.get_device_name(), timing="CUDA events after one warm-up call per op",
                    matmul_tf32=torch.backends.cuda.matmul.allow_tf32, cudnn_tf32=torch.backends.cudnn.allow_tf32)
    result = {"shapes": rows, "meta": meta}
    if args.epoch:
        result["epoch"] = epoch_timings(args.epoch_subset, args.seed, args.data_root, progress=not args.json)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    where = (f"{meta['gpu']}, CUDA events, TF32 in GEMMs {'on' if args.tf32 else 'off'}" if args.device == "cuda"
             else f"{meta['threads']} threads")
    print(f"\nDeformable convolution, float32, 3x3, padding 1, with mask; median of {args.reps} interleaved runs; "
          f"{where}; native = {meta['native_impl']}; load average {meta['load_average'][0]:.1f}")
    if rows:
        print(_fmt_table(rows, ops))
    if args.epoch:
        print("\nOne training epoch on MNIST (batch 128, Adam), seconds:")
        for r in result["epoch"]:
            extra = f" (timed on {r['images']} images, extrapolated to 60000)" if r["extrapolated"] else ""
            print(f"  {r['model']:11s} {str(r['deform_backend'] or '-'):12s} {r['full_epoch_seconds']:8.1f} s{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
