"""A finished sweep's summary table (and its headline) as a docs results file.

Reads the results store of a sweep folder (``rbgeo sweep ... --output DIR``), nothing else: the table is
the report's summary (per model x dataset x attack setting: seeds, n, clean and robust accuracy with the
pooled 95 % Wilson interval), and the file's ``data`` keeps every cell's metrics, timing and hash, the
headline lines and the store's metadata, so the page's numbers can be checked without rerunning::

    python benchmarks/sweep_table.py --store reports/study --results benchmarks/results/study-preset/study.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import markdown, write_results  # noqa: E402

from robustbench_geo.report import report_headline  # noqa: E402
from robustbench_geo.report.tables import cells_frame, fmt_metric, model_text, summary_frame  # noqa: E402
from robustbench_geo.sweep.store import ResultStore  # noqa: E402

COLUMNS = ["model", "dataset", "attack", "setting", "seeds", "n", "clean", "robust"]


def pivot(frame, summary, store: str) -> tuple[list[str], list[list[str]]]:
    """One row per model, one column per attack x dataset (first-seen order): robust accuracy in % with its
    95 % Wilson interval (clean cells: clean accuracy); ManiFool cells: the invariance score (mean
    normalised geodesic distance of the fooling transforms of correctly classified images) with its 95 %
    normal interval, from the per-image distances stored with the cell."""
    from robustbench_geo.report.study import invariance_score

    conds = list(dict.fromkeys((r["attack"], r["dataset"]) for r in summary.to_dict("records")))
    models = list(dict.fromkeys(model_text(r) for r in summary.to_dict("records")))
    cells = {}
    for r in summary.to_dict("records"):
        if r["attack"] == "manifool":
            dirs = [d for d in frame[(frame["model"] == r["model"]) & (frame["attack"] == "manifool")
                                     & (frame["dataset"] == r["dataset"]) & (frame["status"] == "done")]["artefact_dir"]]
            sc = invariance_score(Path(store), dirs)
            text = "n/a" if sc is None else f"inv {sc.mean:.2f} [{sc.low:.2f}, {sc.high:.2f}]"
        else:
            text = fmt_metric(r, "clean_accuracy" if r["attack"] == "clean" else "robust_accuracy")
        cells[(model_text(r), (r["attack"], r["dataset"]))] = text
    columns = ["model"] + [f"{a} ({d})" for a, d in conds]
    return columns, [[m] + [cells.get((m, c), "") for c in conds] for m in models]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--store", required=True, help="the sweep's output folder (holds results.sqlite)")
    p.add_argument("--results", default=None, help="write benchmarks/results/<topic>/<name>.json")
    p.add_argument("--notes", default=None, help="load, what else ran, deviations (stored with --results)")
    p.add_argument("--pivot", action="store_true", help="one row per model, one column per attack x dataset")
    args = p.parse_args(argv)
    with ResultStore(args.store, create=False) as store:
        cells, sweep, counts = store.cells(), store.sweep, store.status_counts()
    frame = cells_frame(cells)
    summary = summary_frame(frame)
    if args.pivot:
        columns, rows = pivot(frame, summary, args.store)
    else:
        columns = COLUMNS
        rows = [[model_text(r), r["dataset"], r["attack"], r["setting"], str(r["seeds"]),
                 "n/a" if r.get("n") is None else f"{r['n']:g}", fmt_metric(r, "clean_accuracy"),
                 fmt_metric(r, "robust_accuracy")] for r in summary.to_dict("records")]
    headline = report_headline(args.store)
    print(markdown(columns, rows))
    print("\n".join(headline))
    if args.results:
        per_cell = [{"hash": c["hash"], "model": c["model"], "attack": c["attack"], "dataset": c["dataset"],
                     "seed": c["seed"], "status": c["status"], "seconds": c.get("seconds"), "train_seconds": c.get("train_seconds"),
                     "attack_seconds": c.get("attack_seconds"), "metrics": c.get("metrics"), "error": c.get("error")}
                    for c in cells]
        done = int(counts.get("done", 0))
        write_results(args.results, f"Sweep '{sweep}' ({done} of {sum(counts.values())} cells done): clean and robust "
                      "accuracy in %, mean over seeds, [95 % Wilson interval] of the n attacked samples pooled over seeds",
                      columns, rows, data={"counts": counts, "headline": headline, "cells": per_cell}, notes=args.notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
