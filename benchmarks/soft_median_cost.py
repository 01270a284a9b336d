"""Where the default ``auto`` spends its time on ``soft_median_gdc``, and whether a cheap surrogate can replace it.

Issue 22 asks for the default ``auto`` portfolio on every registered defense on Cora within 3 minutes
of one thread, at the same or lower accuracy after the attack. ``soft_median_gdc`` takes about 20
minutes: every gradient differentiates an exact ``N x N`` personalised-PageRank inverse and a soft
median over 64 diffusion neighbours. This script measures, in one run on one checkpoint:

* ``members``: the default portfolio (``create_attack("auto", model, budget_edge_fraction=0.05)``,
  seed 0), each member's accuracy on the 1988 test nodes, its wall seconds and the portfolio's CPU
  seconds;
* ``transfer``: PGD (true labels, ``tanh_margin`` and ``prob_margin``, the portfolio's defaults of
  100 steps and 50 swap steps) on a cheap surrogate that shares the model's two weight matrices but
  aggregates by a weighted *mean* over the unsparsified PPR, computed by 10 sparse power-iteration
  steps (APPNP-style; ``O(E d)`` per step instead of ``O(N^3)``). The surrogate's gradients, samples
  and swaps are all its own; the flips it returns are then judged by the real model. This is the
  cheapest adaptive surrogate we could think of that keeps the model's weights;
* ``hybrid``: the transferred ``tanh_margin`` flips as the start of an exact PGD through the model
  (``init_flips``) with 20 steps and 20 swap steps: a portfolio of about 3 minutes.

Run (one thread, about 25 minutes)::

    OMP_NUM_THREADS=1 python benchmarks/soft_median_cost.py --checkpoint CK \\
        --results benchmarks/results/graph-adaptive/soft-median-cost.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from results_file import print_table, write_results  # noqa: E402

from robustbench_geo.attacks.base import create_attack  # noqa: E402
from robustbench_geo.attacks.graph.base import GraphPerturbation, edge_budget  # noqa: E402
from robustbench_geo.checkpoint import load_checkpoint  # noqa: E402
from robustbench_geo.data import load_dataset  # noqa: E402
from robustbench_geo.stats import wilson_interval  # noqa: E402


class MeanPPRSurrogate(nn.Module):
    """``soft_median_gdc``'s weights with a weighted-mean aggregation over the PPR, by sparse power iteration.

    ``Z <- (1 - alpha) A_hat Z + alpha H`` for ``iters`` steps, ``A_hat`` the GCN-normalised graph with
    self-loops and edge weights: the APPNP propagation, whose limit is the unsparsified PPR diffusion
    applied to ``H``. No ``dense_forward``, so PGD relaxes the clean edges plus a block of pairs.
    """

    def __init__(self, model, iters: int = 10):
        super().__init__()
        self.model, self.iters = model, iters

    def propagate(self, z, edge_index, weight):
        n = z.shape[0]
        loop = torch.arange(n, device=z.device)
        ei = torch.cat([edge_index, torch.stack([loop, loop])], 1)
        w = torch.cat([weight, torch.ones(n, dtype=z.dtype, device=z.device)])
        deg = torch.zeros(n, dtype=z.dtype, device=z.device).index_add(0, ei[1], w).clamp_min(1e-5)
        norm = w * deg[ei[0]].rsqrt() * deg[ei[1]].rsqrt()
        alpha, out = self.model.teleport, z
        for _ in range(self.iters):
            out = (1 - alpha) * torch.zeros_like(z).index_add(0, ei[1], norm[:, None] * out[ei[0]]) + alpha * z
        return out

    def forward(self, x, edge_index, edge_weight=None):
        w = torch.ones(edge_index.shape[1], dtype=x.dtype, device=x.device) if edge_weight is None else edge_weight
        m = self.model
        h = F.relu(self.propagate(x @ m.lin1.weight.T, edge_index, w) + m.lin1.bias)
        return self.propagate(h @ m.lin2.weight.T, edge_index, w) + m.lin2.bias


def cell(acc: float, n: int) -> str:
    lo, hi = wilson_interval(acc * n, n)
    return f"{100 * acc:.2f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a soft_median_gdc checkpoint trained on --data")
    ap.add_argument("--data", default="cora")
    ap.add_argument("--parts", default="members,transfer", help="comma list of: members, transfer, hybrid")
    ap.add_argument("--results", default=None)
    ap.add_argument("--notes", default=None)
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not parts or set(parts) - {"members", "transfer", "hybrid"}:
        ap.error(f"--parts: expected a comma list of members, transfer, hybrid; got {args.parts!r}")
    model, meta = load_checkpoint(args.checkpoint)
    if meta.get("model") != "soft_median_gdc":
        ap.error(f"--checkpoint: expected a soft_median_gdc checkpoint, got one of {meta.get('model')!r}")
    model.eval()
    graph = load_dataset(args.data)
    nodes, y = graph.idx_test, graph.y[graph.idx_test]
    n = int(nodes.numel())

    @torch.no_grad()
    def accuracy(net, edge_index) -> float:
        return float((net(graph.x, edge_index).argmax(1)[nodes] == y).float().mean())

    columns = ["attack", "gradients through", "CPU s", "wall s", "accuracy after (n=%d)" % n]
    clean = accuracy(model, graph.edge_index)
    rows, data = [["none (clean)", "", "", "", cell(clean, n)]], {"clean": clean}
    budget = edge_budget(graph, 0.05)

    def checked(res) -> GraphPerturbation:
        """The attack's result after an independent check of its budget (its accuracy is re-measured by the caller)."""
        if res.flips > budget:
            raise RuntimeError(f"{res.flips} flips: expected at most the 5 % budget of {budget}")
        return res
    if "members" in parts:
        c0, w0 = time.process_time(), time.perf_counter()
        res = checked(create_attack("auto", model, budget_edge_fraction=0.05)(graph, seed=0))
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        final = accuracy(model, res.edge_index)  # the winner re-judged by an independent forward pass
        if abs(final - res.work["accuracy"]) > 1e-6:
            raise RuntimeError(f"auto reports {res.work['accuracy']:.4f}, its perturbation gives {final:.4f}")
        for m in res.work["members"]:
            if "accuracy" in m:
                rows.append([f"auto member {m['member']}", "the model (exact)", "", f"{m['seconds']:.0f}", cell(m["accuracy"], n)])
                print(f"{m['member']}: {100 * m['accuracy']:.2f} % in {m['seconds']:.0f} s", flush=True)
        rows.append(["auto (default portfolio)", "the model (exact)", f"{cpu:.0f}", f"{wall:.0f}", cell(final, n)])
        data["members"] = {"work": res.work, "cpu_seconds": cpu, "wall_seconds": wall}
    sur = MeanPPRSurrogate(model).eval()
    transferred = {}
    if "transfer" in parts or "hybrid" in parts:
        data["surrogate_clean"] = accuracy(sur, graph.edge_index)
        data["transfer"] = []
        for loss in ("tanh_margin", "prob_margin") if "transfer" in parts else ("tanh_margin",):
            c0, w0 = time.process_time(), time.perf_counter()
            res = checked(create_attack("pgd", sur, budget_edge_fraction=0.05, loss=loss, labels="true", steps=100,
                                        refine_steps=50)(graph, seed=0))
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            real, on_sur = accuracy(model, res.edge_index), accuracy(sur, res.edge_index)
            rows.append([f"pgd/{loss}, transferred", "mean-PPR surrogate (10 power steps)", f"{cpu:.0f}", f"{wall:.0f}",
                         cell(real, n)])
            data["transfer"].append({"loss": loss, "real": real, "surrogate": on_sur, "flips": res.flips,
                                     "cpu_seconds": cpu, "wall_seconds": wall})
            print(f"transfer {loss}: real {100 * real:.2f} %, surrogate {100 * on_sur:.2f} %, {cpu:.0f} CPU s", flush=True)
            transferred[loss] = (res, cpu, wall)
    if "hybrid" in parts:
        start, cpu0, wall0 = transferred["tanh_margin"]
        c0, w0 = time.process_time(), time.perf_counter()
        res = checked(create_attack("pgd", model, budget_edge_fraction=0.05, loss="tanh_margin", labels="true", steps=20,
                                    refine_steps=20)(graph, seed=0,
                                                     init_flips=torch.cat([start.insertions, start.deletions], 1)))
        cpu, wall = cpu0 + time.process_time() - c0, wall0 + time.perf_counter() - w0
        real = accuracy(model, res.edge_index)
        rows.append(["pgd/tanh_margin, transferred, then exact pgd 20 + 20 from it",
                     "surrogate, then the model (exact)", f"{cpu:.0f}", f"{wall:.0f}", cell(real, n)])
        data["hybrid"] = {"real": real, "flips": res.flips, "cpu_seconds": cpu, "wall_seconds": wall,
                          "exact_work": res.work}
        print(f"hybrid: real {100 * real:.2f} %, {cpu:.0f} CPU s in all", flush=True)
    print_table(columns, rows)
    if args.results:
        what = (f"soft_median_gdc on {args.data} (checkpoint {Path(args.checkpoint).name}, clean accuracy as below), "
                f"5 % budget, seed 0, evasion: the default auto portfolio member by member (wall seconds per member, "
                f"CPU seconds of the whole portfolio) and PGD transferred from a mean-PPR surrogate with the model's "
                f"weights (and, with --parts hybrid, an exact PGD of 20 + 20 steps started from its flips); accuracy on the {n} test nodes with 95 % Wilson intervals; one torch thread")
        write_results(args.results, what, columns, rows, data=data, notes=args.notes)


if __name__ == "__main__":
    main()
