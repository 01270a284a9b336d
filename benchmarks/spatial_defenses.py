"""Spatially defended models under the 775-point grid: one row per trained checkpoint, with 95 % intervals.

Each row joins a checkpoint of ``rbgeo train ... --defense ...`` (its defense, epochs, training images
and time, and its clean accuracy on the test images it was evaluated on) with the output folder of
``rbgeo attack CHECKPOINT mnist --attack grid --n N --out DIR`` (clean and grid accuracy on the N
attacked images). Nothing is retrained or re-attacked here: the script reads both, checks that the
attack ran on that checkpoint, and prints (and with ``--results`` records) the table.

Example (the docs' run; see docs/spatial-defenses.md)::

    rbgeo train cnn mnist --defense worst_of_k:k=10 --epochs 5 --schedule cosine --test-subset 10000 --out ck/cnn_wo10
    rbgeo attack ck/cnn_wo10 mnist --attack grid --n 500 --out ck/grid_wo10
    python benchmarks/spatial_defenses.py --run ck/cnn_wo10 ck/grid_wo10 --target 0.90 --min-clean 0.985
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_file import print_table, write_results  # noqa: E402

from robustbench_geo.checkpoint import read_metadata, trained_label, weights_sha256  # noqa: E402
from robustbench_geo.data import load_dataset  # noqa: E402
from robustbench_geo.stats import accuracy_interval  # noqa: E402

COLUMNS = ["model", "training", "clean, test set", "clean, attacked images", "grid (775 points)", "target met"]


def pct(acc: float, n: float) -> str:
    lo, hi = accuracy_interval(acc, n)
    return f"{100 * acc:.2f} [{100 * lo:.1f}, {100 * hi:.1f}] (n={n:g})"


def row(checkpoint: str, attack_dir: str, target: float, min_clean: float,
        train_images: int | None = None) -> tuple[list[str], dict]:
    meta = read_metadata(checkpoint)
    outcomes = json.loads((Path(attack_dir) / "outcome.json").read_text())
    if len(outcomes) != 1 or outcomes[0]["attack"] != "grid":
        raise SystemExit(f"{attack_dir}: expected one grid run (rbgeo attack ... --attack grid), got "
                         f"{[o['attack'] for o in outcomes]}")
    o = outcomes[0]
    if o["model"].get("weights_sha256") != weights_sha256(checkpoint):
        raise SystemExit(f"{attack_dir}: attacked another checkpoint than {checkpoint} (weights differ)")
    m = o["metrics"]
    test_n = meta.get("test_images") or meta["dataset_meta"].get("subset")
    if not test_n:  # no subset recorded: the checkpoint was evaluated on the whole test split
        test_n = len(load_dataset(meta["dataset"], split="test"))
    name = f"`{trained_label(meta)}`"
    train = meta["train"]
    images = meta.get("train_images") or train_images
    if images is None:
        raise SystemExit(f"{checkpoint}: the checkpoint does not record its number of training images; give --train-images")
    training = (f"{train.get('defense', 'none')}, {meta['epochs_run']} epochs x {images} images, {train['schedule']} lr, "
                f"{meta['train_seconds'] / 60:.0f} min")
    clean_test = meta["clean_accuracy"]
    met = m["robust_accuracy"] >= target and clean_test >= min_clean
    cells = [name, training, pct(clean_test, test_n),
             pct(m["clean_accuracy"], m["n"]), pct(m["robust_accuracy"], m["n"]),
             f"{'yes' if met else 'no'} (grid >= {100 * target:g} %, clean >= {100 * min_clean:g} %)"]
    data = {"checkpoint": str(checkpoint), "train_images": images, "weights_sha256": meta["weights_sha256"], "train": train,
            "defense": meta.get("defense"), "train_seconds": meta["train_seconds"], "epochs_run": meta["epochs_run"],
            "clean_accuracy_test": clean_test, "test_n": test_n, "dataset_meta": meta["dataset_meta"],
            "attack": {"params": o["params"], "seed": o["seed"], "metrics": m, "seconds": o["seconds"]}}
    return cells, data


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", nargs=2, action="append", required=True, metavar=("CHECKPOINT", "ATTACK_OUT"),
                    help="a checkpoint and the --out folder of its rbgeo attack ... --attack grid run (repeatable)")
    ap.add_argument("--target", type=float, default=0.90, help="grid accuracy the target asks for (fraction)")
    ap.add_argument("--min-clean", type=float, default=0.985, help="clean test accuracy the target asks for (fraction)")
    ap.add_argument("--train-images", type=int, default=None,
                    help="training images of checkpoints whose metadata does not record them (written before it did)")
    ap.add_argument("--results", default=None, help="write benchmarks/results/<topic>/<name>.json")
    ap.add_argument("--notes", default=None, help="load, what else ran, deviations")
    args = ap.parse_args(argv)
    rows, data = [], []
    for ck, out in args.run:
        cells, d = row(ck, out, args.target, args.min_clean, args.train_images)
        rows.append(cells)
        data.append(d)
    print_table(COLUMNS, rows)
    if args.results:
        write_results(args.results, "Accuracy (%) with 95 % Wilson intervals of spatially defended models: clean on the "
                      "test images the checkpoint was evaluated on, then clean and under the 775-point grid (31 angles "
                      "in +-30 degrees x 5 x 5 shifts in +-3 px) on a seeded subset of the MNIST test set",
                      COLUMNS, rows, data={"runs": data}, notes=args.notes)


if __name__ == "__main__":
    main()
