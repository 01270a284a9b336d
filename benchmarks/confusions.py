"""Where a model's test errors go: clean accuracy, and how many errors fall on given class pairs.

A rotation-invariant classifier cannot tell a 6 from a 9 rotated by 180 degrees; this script counts
such errors per checkpoint on the full test set, so the claim is measured rather than argued. For each
checkpoint: clean accuracy [95 % Wilson interval], the number of errors, the errors that confuse the
two classes of each ``--pair`` (either direction), and the accuracy those errors cost.

Example (the docs' run; see docs/spatial-defenses.md)::

    python benchmarks/confusions.py --checkpoint ck/p4cnn_wo10 --checkpoint ck/p4cnn_eq_e2 --pair 6,9
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_file import print_table, write_results  # noqa: E402

from robustbench_geo.checkpoint import load_checkpoint, trained_label  # noqa: E402
from robustbench_geo.data import load_dataset  # noqa: E402
from robustbench_geo.models.predict import predict_logits  # noqa: E402
from robustbench_geo.stats import accuracy_interval  # noqa: E402


def _pair(text: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two class indices like 6,9, got {text!r}") from None
    return a, b


def count(pred: torch.Tensor, labels: torch.Tensor, pairs: list[tuple[int, int]]) -> dict:
    """Errors in all, and per pair the errors that take one class of the pair for the other."""
    wrong = pred != labels
    out = {"n": len(labels), "errors": int(wrong.sum()), "pairs": {}}
    for a, b in pairs:
        hit = ((labels == a) & (pred == b)) | ((labels == b) & (pred == a))
        out["pairs"][f"{a}<->{b}"] = int(hit.sum())
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", action="append", required=True, metavar="STEM", help="checkpoint stem (repeatable)")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--pair", type=_pair, action="append", default=None, help="two classes, e.g. 6,9 (repeatable)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--results", default=None, help="write benchmarks/results/<topic>/<name>.json")
    ap.add_argument("--notes", default=None, help="load, what else ran, deviations")
    args = ap.parse_args(argv)
    pairs = args.pair or [(6, 9)]
    test = load_dataset(args.dataset, split="test", root=args.data_root)
    columns = ["checkpoint", "model", "clean accuracy", "errors", *(f"{a} <-> {b} errors" for a, b in pairs),
               "accuracy without them"]
    rows, raw = [], []
    for stem in args.checkpoint:
        model, meta = load_checkpoint(stem)
        with torch.inference_mode():
            pred = predict_logits(model, test.images).argmax(1)
        c = count(pred, test.labels, pairs)
        acc = 1 - c["errors"] / c["n"]
        low, high = accuracy_interval(acc, c["n"])
        paired = sum(c["pairs"].values())
        rows.append([Path(stem).name, trained_label(meta), f"{100 * acc:.2f} [{100 * low:.1f}, {100 * high:.1f}] (n={c['n']})",
                     str(c["errors"]), *(str(v) for v in c["pairs"].values()),
                     f"{100 * (1 - (c['errors'] - paired) / c['n']):.2f}"])
        raw.append({"checkpoint": stem, "model": meta["model"], "train": meta.get("train"),
                    "recorded_clean_accuracy": meta.get("clean_accuracy"), "test_images": meta.get("test_images"), **c})
    print_table(columns, rows)
    if args.results:
        write_results(args.results, f"Clean accuracy on the {args.dataset} test set [95 % Wilson interval], and the "
                      "test errors that confuse the classes of each pair (either direction)", columns, rows,
                      data={"runs": raw}, notes=args.notes)


if __name__ == "__main__":
    main()
