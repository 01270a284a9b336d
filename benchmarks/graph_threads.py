"""Graph training with one or two intra-op threads, on an otherwise idle machine and beside busy processes.

Each cell trains ``gcn`` (16 hidden units, seed 0) for 30 epochs with ``training.train_graph_model`` (no early
stop) and reports the median wall seconds over ``--repeats`` runs:

* ``1 thread`` / ``2 threads``: ``torch.set_num_threads(1 | 2)`` in this process;
* ``default (rule)``: a fresh process with no ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` and no
  ``RBGEO_GRAPH_THREADS``: what a user gets from ``robustbench_geo.threads.graph_threads`` (the threads it
  chose are printed beside the time).

``load`` is the number of busy processes this script starts beside the measurement (each multiplies
512 x 512 matrices in a loop on one thread; they are stopped by their process id at the end). Run it
holding both CPU slots (``cpu2``) so that nothing else heavy runs; the 1-minute load average is recorded
per cell anyway::

    cpu2 python benchmarks/graph_threads.py --results benchmarks/results/benchmarks/graph-threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from results_file import print_table, write_results  # noqa: E402

BUSY = "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True:\n    a = (a @ a).tanh_()\n"


def train_seconds(spec: str, epochs: int) -> float:
    """Wall seconds of ``epochs`` epochs of ``gcn`` on ``spec`` (data loading and model building not counted)."""
    from robustbench_geo.data import load_dataset
    from robustbench_geo.models.registry import build_model
    from robustbench_geo.training import default_config, seed_everything, train_graph_model

    graph = load_dataset(spec)
    seed_everything(0)
    model, _ = build_model("gcn", graph)
    cfg = default_config("graph", model, epochs=epochs, patience=epochs + 1, seed=0)
    t0 = time.perf_counter()
    train_graph_model(model, graph, cfg, progress=False)
    return time.perf_counter() - t0


def _child(spec: str, epochs: int) -> None:
    """The ``default (rule)`` cell: prints seconds and the threads graph_threads chose."""
    from robustbench_geo.data import load_dataset
    from robustbench_geo.threads import choose_threads

    graph = load_dataset(spec)
    chosen = choose_threads(graph.num_nodes, graph.x.shape[1], graph.num_edges) or torch.get_num_threads()
    print(json.dumps({"seconds": train_seconds(spec, epochs), "threads": chosen}))


def default_rule(spec: str, epochs: int) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RBGEO_GRAPH_THREADS")}
    out = subprocess.run([sys.executable, __file__, "--child", spec, "--epochs", str(epochs)], env=env, check=True,
                         capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["seconds"], r["threads"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["cora", "sbm:nodes=30000"])
    ap.add_argument("--loads", type=int, nargs="+", default=[0, 2], help="busy processes started beside the runs")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--results", default=None, help="write the table to this results file")
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child, args.epochs)
        return
    os.environ["RBGEO_GRAPH_THREADS"] = "keep"  # this process sets its threads itself
    columns = ["dataset", "busy processes", "load (1 min)", "1 thread (s)", "2 threads (s)", "default (rule) (s)",
               "rule's threads"]
    rows, raw = [], []
    for load in args.loads:
        busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(load)]
        try:
            time.sleep(3 if load else 0)
            for spec in args.datasets:
                cell = {"dataset": spec, "busy": load, "load_1min": os.getloadavg()[0]}
                for threads in (1, 2):
                    torch.set_num_threads(threads)
                    cell[str(threads)] = [train_seconds(spec, args.epochs) for _ in range(args.repeats)]
                rule = [default_rule(spec, args.epochs) for _ in range(args.repeats)]
                cell["rule"], cell["rule_threads"] = [s for s, _ in rule], sorted({t for _, t in rule})
                raw.append(cell)
                rows.append([spec, str(load), f"{cell['load_1min']:.1f}",
                             *(f"{statistics.median(cell[k]):.2f}" for k in ("1", "2", "rule")),
                             "/".join(map(str, cell["rule_threads"]))])
                print(rows[-1], {k: cell[k] for k in ("1", "2", "rule")}, flush=True)
        finally:
            for p in busy:
                p.kill()
                p.wait()
    print_table(columns, rows)
    if args.results:
        what = (f"Wall seconds of {args.epochs} training epochs of gcn (training.train_graph_model, no early stop), "
                f"median of {args.repeats} runs, with 1 or 2 intra-op threads or the default rule "
                "(robustbench_geo.threads, a fresh process without OMP_NUM_THREADS), beside 0 or 2 busy one-thread "
                "processes started by the script, on the 2-core machine held whole (cpu2)")
        write_results(args.results, what, columns, rows, data={"cells": raw, "epochs": args.epochs,
                                                               "repeats": args.repeats})


if __name__ == "__main__":
    main()
