"""Our ``prbcd`` against PyG's own ``PRBCDAttack`` on a user's PyG model, side by side in one process.

A 2-layer ``GCNConv`` model (16 hidden units, dropout 0.5, Adam 0.01, weight decay 5e-4, 200 epochs:
PyG's Cora example) is trained on Planetoid Cora with the public split and attacked at 5 % of the
edges (``floor(0.05 E)`` flips) on the 1000 test nodes, one torch thread:

* ``pyg``: ``PRBCDAttack(model, block_size=250_000, lr=2_000)`` with the true labels and the test mask
  (PyG's defaults otherwise: probability-margin loss, the loss as the early-stopping metric);
* ``ours (before)``: ``rbg.benchmark(model, data, "prbcd", ...)`` with the parameters of our earlier
  defaults (``lr=1000``, ``labels="predicted"``, ``select="loss"``);
* ``ours``: the same call with today's defaults.

Each row gives the mean test accuracy after the attack over ``--seeds`` attack seeds (one trained
model) and the mean CPU seconds of one attack (``time.process_time``, the whole call). Run::

    python benchmarks/prbcd_pyg.py --seeds 0 1 2 --results benchmarks/results/graph-attacks/prbcd-pyg.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from results_file import print_table, write_results  # noqa: E402

OLD_DEFAULTS = {"lr": 1000.0, "labels": "predicted", "select": "loss"}


class UserGCN(torch.nn.Module):
    """Two ``GCNConv`` layers as PyG's examples write them."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int):
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.conv1 = GCNConv(in_channels, hidden)
        self.conv2 = GCNConv(hidden, out_channels)

    def forward(self, x, edge_index, edge_weight=None):
        x = F.relu(self.conv1(x, edge_index, edge_weight))
        x = F.dropout(x, p=0.5, training=self.training)
        return self.conv2(x, edge_index, edge_weight)


def train_like_pyg(model, data, epochs: int = 200):
    """PyG's example loop: full batch, Adam 0.01, weight decay 5e-4, the last epoch's weights (seed torch first)."""
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    model.train()
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(model(data.x, data.edge_index)[data.train_mask], data.y[data.train_mask]).backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def test_accuracy(model, data, edge_index) -> float:
    return float((model(data.x, edge_index).argmax(1)[data.test_mask] == data.y[data.test_mask]).float().mean())


def run_pyg(model, data, budget: int, seed: int) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch_geometric.contrib.nn import PRBCDAttack
    t0 = time.process_time()
    torch.manual_seed(seed)
    att = PRBCDAttack(model, block_size=250_000, lr=2_000, log=False)
    pert, _ = att.attack(data.x, data.edge_index, data.y, budget=budget, idx_attack=data.test_mask)
    return test_accuracy(model, data, pert), time.process_time() - t0


def run_ours(model, data, seed: int, params: dict) -> tuple[float, float]:
    import robustbench_geo as rbg

    t0 = time.process_time()
    r = rbg.benchmark(model, data, "prbcd", params={"budget_edge_fraction": 0.05, **params}, seed=seed)
    return r.robust_accuracy.value, time.process_time() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--results", default=None, help="write the table to this results file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from robustbench_geo.data import load_dataset

    graph = load_dataset("cora:public")
    data = graph.to_pyg()
    torch.manual_seed(0)
    model = train_like_pyg(UserGCN(data.num_features, 16, int(data.y.max()) + 1), data)
    clean = test_accuracy(model, data, data.edge_index)
    budget = int(0.05 * graph.num_edges)
    print(f"Cora (public split): {graph.num_nodes} nodes, {graph.num_edges} edges, budget {budget} flips, "
          f"clean test accuracy {clean:.4f}")
    runs = {"pyg": [], "ours (before)": [], "ours": []}
    for seed in args.seeds:
        runs["pyg"].append(run_pyg(model, data, budget, seed))
        runs["ours (before)"].append(run_ours(model, data, seed, OLD_DEFAULTS))
        runs["ours"].append(run_ours(model, data, seed, {}))
        print(seed, {k: v[-1] for k, v in runs.items()}, flush=True)
    columns = ["attack", "accuracy after (mean)", "per seed", "CPU s (mean)"]
    rows = []
    for name, rs in runs.items():
        accs, secs = [a for a, _ in rs], [s for _, s in rs]
        rows.append([name, f"{100 * statistics.mean(accs):.1f} %", " / ".join(f"{100 * a:.1f}" for a in accs),
                     f"{statistics.mean(secs):.1f}"])
    print_table(columns, rows)
    if args.results:

        what = (f"A user's 2-layer GCNConv on Planetoid Cora (public split, clean test accuracy {100 * clean:.1f} %), "
                f"5 % of the edges ({budget} flips), test accuracy after the attack, mean over {len(args.seeds)} "
                f"attack seeds (one trained model), and CPU seconds of one attack, one thread, all in one process")
        write_results(args.results, what, columns, rows,
                      data={"clean": clean, "budget": budget, "seeds": args.seeds, "old_defaults": OLD_DEFAULTS,
                            "runs": {k: [{"accuracy": a, "cpu_seconds": s} for a, s in v] for k, v in runs.items()}})


if __name__ == "__main__":
    main()
