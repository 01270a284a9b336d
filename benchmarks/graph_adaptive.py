"""Adaptive vs non-adaptive evasion on the defenses: a robustness curve and its area, per model.

Mujkanovic et al. (NeurIPS 2022) show that defenses evaluated with non-adaptive attacks look far more
robust than they are. For every ``--models`` entry (any registered graph model: ``gcn``,
``gcn_jaccard``, ``gcn_svd``, and the defenses added later by name) and seed, this script trains the
model on the Cora LCC (Pro-GNN split, default protocol), then at every ``--budgets`` fraction of edges
(global evasion, 1988 test nodes) measures the test accuracy under

* **non-adaptive**: ``pgd`` with its defaults on a separately trained plain GCN (seed + 1000), the
  perturbation transferred to the model (what a defense paper's "PGD" row usually is);
* **adaptive**: ``auto`` on the model itself (its portfolio of adaptive PGD variants and PR-BCD;
  ``--members`` restricts it).

Every accuracy is re-measured by the sparse forward of a fresh copy of the trained model (taken
before any attack ran, its caches empty) on the perturbed graph. The area
under the curve (trapezoid over ``[0, max budget]`` including the clean point, divided by the max
budget: a mean accuracy, in %) summarises each curve. Results go to ``--out`` (JSON) and a Markdown
table to stdout.

Usage::

    PYTHONPATH=. python benchmarks/graph_adaptive.py --models gcn,gcn_jaccard,gcn_svd --seeds 0,1 --threads 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch


def area(budgets, accs, clean) -> float:
    """Mean accuracy over ``[0, max budget]`` (trapezoid through the clean point)."""
    xs, ys = [0.0, *budgets], [clean, *accs]
    return sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1)) / xs[-1]


def fmt(values, n_test: int) -> str:
    """Mean in %, with the std over seeds (several seeds) or the binomial standard error (one seed)."""
    m = statistics.mean(values)
    err = statistics.stdev(values) if len(values) > 1 else math.sqrt(m * (1 - m) / n_test)
    return f"{100 * m:.1f} ± {100 * err:.1f}"


def trained(name: str, graph, seed: int, cache: Path, epochs: dict | None = None):
    """``name`` trained on ``graph`` with its default protocol (``epochs[name]`` overrides), cached by name and seed."""
    from robustbench_geo.models import build_model
    from robustbench_geo.training import default_config, seed_everything, train_graph_model

    seed_everything(seed)
    model, _ = build_model(name, graph)
    over = {"epochs": epochs[name]} if epochs and name in epochs else {}
    path = cache / (f"{name}_seed{seed}" + (f"_e{over['epochs']}" if over else "") + ".pt")
    if path.exists():
        model.load_state_dict(torch.load(path))
    else:
        t0 = time.perf_counter()
        train_graph_model(model, graph, default_config("graph", name, seed=seed, **over), progress=False)
        print(f"trained {name} seed {seed} in {time.perf_counter() - t0:.0f} s", flush=True)
        cache.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model.eval()


def transferred(surrogate, graph, budget: float, seed: int, cache: Path):
    """The non-adaptive perturbation: ``pgd`` defaults on the plain-GCN ``surrogate``, cached per seed and budget.

    Returns ``(perturbed edge_index, seconds the attack took when it ran)``; separate processes of one
    seed (one model each) share it through ``cache``.
    """
    from robustbench_geo.attacks import create_attack

    path = cache / f"transfer_pgd_seed{seed}_b{budget:g}.pt"
    if path.exists():
        saved = torch.load(path)
        return saved["edge_index"], saved["seconds"]
    t0 = time.perf_counter()
    res = create_attack("pgd", surrogate, budget_edge_fraction=budget)(graph, seed=seed)
    seconds = time.perf_counter() - t0
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.part")
    torch.save({"edge_index": res.edge_index, "seconds": seconds}, tmp)
    tmp.replace(path)
    return res.edge_index, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="gcn,gcn_jaccard,gcn_svd")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--budgets", default="0.01,0.025,0.05,0.1")
    ap.add_argument("--members", default=None, help="auto's members (default: its whole portfolio per model)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--refine-steps", type=int, default=50)
    ap.add_argument("--no-transfer", action="store_true", help="skip the non-adaptive transfer attack")
    ap.add_argument("--epochs", default="", help="per-model epoch overrides, e.g. prognn=200,soft_median_gdc=300")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default=os.environ.get("RBGEO_CACHE", "runs") + "/graph_adaptive_models")
    ap.add_argument("--out", default="runs/graph_adaptive.json")
    ap.add_argument("--table", nargs="+", metavar="JSON",
                    help="print the table of earlier runs' --out files (pooled per model, seed and budget) and exit")
    args = ap.parse_args()
    if args.table:
        return print_pooled(args.table)
    torch.set_num_threads(args.threads)

    from robustbench_geo.attacks.graph.auto import AutoAttack
    from robustbench_geo.data import load_dataset
    from robustbench_geo.evaluation import graph_accuracy
    from robustbench_geo.models.predict import fresh_copy

    graph = load_dataset("cora")
    budgets = [float(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    cache = Path(args.cache)
    n_test = graph.idx_test.numel()
    epochs = {k: int(v) for k, v in (kv.split("=") for kv in args.epochs.split(",") if kv)}
    results = {"budgets": budgets, "seeds": seeds, "threads": args.threads, "members": args.members,
               "n_test": n_test, "load": os.getloadavg(), "runs": []}
    for seed in seeds:
        surrogate = None if args.no_transfer else trained("gcn", graph, seed + 1000, cache)
        transfer = {}  # budget -> (perturbed edge_index, seconds): one non-adaptive attack per seed and budget
        for name in args.models.split(","):
            model = trained(name, graph, seed, cache, epochs)
            pristine = fresh_copy(model)  # every accuracy below is measured on a new copy of this
            row = {"model": name, "seed": seed, "clean": graph_accuracy(fresh_copy(pristine), graph), "curve": {}}
            for b in budgets:
                cell = {}
                if surrogate is not None:
                    if b not in transfer:
                        transfer[b] = transferred(surrogate, graph, b, seed, cache)
                    cell["non_adaptive"] = graph_accuracy(fresh_copy(pristine), graph, edge_index=transfer[b][0])
                    cell["non_adaptive_seconds"] = transfer[b][1]
                att = AutoAttack(model, budget_edge_fraction=b, members=args.members, steps=args.steps,
                                 refine_steps=args.refine_steps)
                cell["estimate_seconds"] = att.estimate_seconds(graph)["total"]
                t0, c0 = time.perf_counter(), time.process_time()
                res = att(graph, seed=seed)
                cell["adaptive_seconds"] = time.perf_counter() - t0
                cell["adaptive_cpu_seconds"] = time.process_time() - c0
                cell["load"] = os.getloadavg()
                cell["adaptive"] = graph_accuracy(fresh_copy(pristine), graph, edge_index=res.edge_index)
                cell["winner"] = res.work["winner"]
                cell["members"] = res.work["members"]
                row["curve"][str(b)] = cell
                print(f"seed {seed} {name} {100 * b:g} %: clean {100 * row['clean']:.2f}, non-adaptive "
                      f"{100 * cell.get('non_adaptive', float('nan')):.2f}, adaptive {100 * cell['adaptive']:.2f} "
                      f"({cell['winner']}, {cell['adaptive_seconds']:.0f} s wall, {cell['adaptive_cpu_seconds']:.0f} s CPU, "
                      f"estimated {cell['estimate_seconds']:.0f} s, load {cell['load'][0]:.1f}; "
                      + ", ".join(f"{m['member']} {100 * m['accuracy']:.1f} % {m['seconds']:.0f} s"
                                  for m in cell["members"] if "accuracy" in m) + ")",
                      flush=True)
            results["runs"].append(row)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=2))
    print_table(results, budgets, n_test, args.models.split(","))


def print_pooled(paths):
    """Tables from several ``--out`` files: per model and set of budgets, every seed that has them all.

    A later file's (model, seed) row replaces an earlier one's budgets one by one, so a curve can be
    assembled from runs of separate budgets.
    """
    rows, n_test, models = {}, None, []
    for path in paths:
        res = json.loads(Path(path).read_text())
        n_test = res["n_test"]
        for r in res["runs"]:
            key = (r["model"], r["seed"])
            if r["model"] not in models:
                models.append(r["model"])
            if key in rows:
                rows[key]["curve"].update(r["curve"])
            else:
                rows[key] = {**r, "curve": dict(r["curve"])}
    for name in models:
        mine = [r for (m, _), r in rows.items() if m == name]
        budget_sets = sorted({tuple(sorted(float(b) for b in r["curve"])) for r in mine}, key=len, reverse=True)
        for budgets in budget_sets:
            runs = [r for r in mine if all(str(b) in r["curve"] for b in budgets)]
            seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
            print(f"\n{name}: seeds {seeds}")
            print_table({"runs": runs}, list(budgets), n_test, [name])


def print_table(results, budgets, n_test, models):
    head = " | ".join(f"{100 * b:g} %" for b in budgets)
    print(f"\nTest accuracy (%), non-adaptive / adaptive, mean ± std over seeds (one seed: ± binomial s.e., n = {n_test})\n")
    auc = "AUC (0 to {:g} %) | ".format(100 * max(budgets)) if len(budgets) > 1 else ""
    print(f"| model | clean | {head} | {auc}adaptive s / attack (wall / CPU) | winners |")
    print("|" + " --- |" * (len(budgets) + 4 + (len(budgets) > 1)))
    for name in models:
        runs = [r for r in results["runs"] if r["model"] == name]
        if not runs:
            continue
        cells = []
        for b in budgets:
            ad = [r["curve"][str(b)]["adaptive"] for r in runs]
            na = [r["curve"][str(b)].get("non_adaptive") for r in runs]
            cells.append((fmt(na, n_test) if None not in na else "-") + " / **" + fmt(ad, n_test) + "**")
        auc_ad = [area(budgets, [r["curve"][str(b)]["adaptive"] for b in budgets], r["clean"]) for r in runs]
        auc_na = [area(budgets, [r["curve"][str(b)].get("non_adaptive", float("nan")) for b in budgets], r["clean"])
                  for r in runs]
        secs = statistics.mean(r["curve"][str(b)]["adaptive_seconds"] for r in runs for b in budgets)
        wins = sorted({r["curve"][str(b)]["winner"] for r in runs for b in budgets})
        auc_na_text = "-" if any(math.isnan(a) for a in auc_na) else fmt(auc_na, n_test)
        auc = f"{auc_na_text} / **{fmt(auc_ad, n_test)}** | " if len(budgets) > 1 else ""  # one point is no curve
        cpu = statistics.mean(r["curve"][str(b)].get("adaptive_cpu_seconds", float("nan")) for r in runs for b in budgets)
        print(f"| `{name}` | {fmt([r['clean'] for r in runs], n_test)} | {' | '.join(cells)} | {auc}"
              f"{secs:.0f} / {cpu:.0f} | {', '.join(wins)} |")


if __name__ == "__main__":
    main()
