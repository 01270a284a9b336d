"""A user's own PyG model against our registered ``gcn`` under ``structure-evasion``, side by side in one process.

Both are 2-layer GCNs with 16 hidden units and dropout 0.5, trained the way PyG's Cora example trains
(full batch, Adam 0.01, weight decay 5e-4, 200 epochs, seed ``--train-seed``) on our Cora (the
literature LCC, Pro-GNN split):

* ``user GCNConv``: two ``torch_geometric.nn.GCNConv`` layers, only ``forward(x, edge_index, edge_weight)``:
  the gradient attacks relax a block of node pairs (``attacks/graph/block.py``);
* ``gcn`` (registered): the same function with a ``dense_forward``: the gradient attacks relax every pair.

Each runs ``rbg.benchmark(model, data, "structure-evasion", seed=S)`` (the default ``auto`` portfolio at
5 % of the edges) for every seed of ``--seeds``, one torch thread; CPU seconds are
``time.process_time`` of the whole call. Run::

    python benchmarks/own_pyg_model.py --seeds 0 --results benchmarks/results/own-models/structure-evasion.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from prbcd_pyg import UserGCN, train_like_pyg  # noqa: E402
from results_file import print_table, write_results  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="cora")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--results", default=None, help="write the table to this results file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import robustbench_geo as rbg
    from robustbench_geo.data import load_dataset
    from robustbench_geo.models import create_model

    graph = load_dataset(args.data)
    data = graph.to_pyg()
    models = {}
    torch.manual_seed(args.train_seed)
    models["user GCNConv"] = train_like_pyg(UserGCN(graph.num_features, 16, graph.num_classes), data)
    torch.manual_seed(args.train_seed)
    gcn = create_model("gcn", in_features=graph.num_features, num_classes=graph.num_classes, hidden=16)
    models["gcn (registered)"] = train_like_pyg(gcn, data)
    runs = {name: [] for name in models}
    for seed in args.seeds:
        for name, model in models.items():
            t0 = time.process_time()
            r = rbg.benchmark(model, graph, "structure-evasion", seed=seed)
            cpu = time.process_time() - t0
            runs[name].append({"seed": seed, "clean": r.clean_accuracy.value, "robust": r.robust_accuracy.value,
                               "cpu_seconds": cpu})
            print(name, runs[name][-1], flush=True)
    columns = ["model", "clean", "after structure-evasion", "CPU s", "CPU s / gcn's"]
    base = statistics.mean(r["cpu_seconds"] for r in runs["gcn (registered)"])
    rows = []
    for name, rs in runs.items():
        cpu = statistics.mean(r["cpu_seconds"] for r in rs)
        rows.append([name, f"{100 * statistics.mean(r['clean'] for r in rs):.1f} %",
                     f"{100 * statistics.mean(r['robust'] for r in rs):.1f} %", f"{cpu:.1f}", f"{cpu / base:.2f}x"])
    print_table(columns, rows)
    if args.results:
        what = (f"A user's 2-layer GCNConv model and our registered gcn (16 hidden units, the same training, seed "
                f"{args.train_seed}) on {graph.num_nodes}-node {args.data} under structure-evasion (auto, 5 % of the "
                f"edges), mean over attack seeds {args.seeds}: test accuracy and CPU seconds of the whole call, one "
                f"thread, both in one process")
        write_results(args.results, what, columns, rows, data={"runs": runs, "train_seed": args.train_seed})


if __name__ == "__main__":
    main()
