"""Published-number checks for the graph attacks (Cora LCC, Pro-GNN split, GCN). Not run by CI.

Prints, side by side with the published reference, mean +- std over training seeds:

* clean GCN accuracy (Pro-GNN Table 2: 83.50 +- 0.44);
* Metattack Meta-Self poisoning at 5 / 10 / 20 % (Pro-GNN: 76.55 / 70.39 / 59.56; target: at most
  1.5 points above). As in Pro-GNN, the attack is run once (seed 0) and the GCN is retrained on the
  poisoned graph with every seed. Metattack is greedy, so the 5 % and 10 % graphs are the first 253
  and 506 flips of the 20 % run (one run serves all three);
* the same GCN on Pro-GNN's pre-attacked graphs at 5-25 % (``prognn`` track; target: within 2
  points at 5 / 10 / 20 %; 15 and 25 % show the trend), and,
  when DeepRobust is importable (run with its interpreter, see ``graph_speed.py``), DeepRobust 0.2.11's
  own GCN on the same graphs and split with its default protocol (200 epochs, weights of the best
  validation loss or accuracy) as a reference row: measured here it gets 55.42 +- 3.16 % on the 20 %
  graph (5 seeds; 54.92 +- 2.67 with 10), as far below Pro-GNN's 59.56 as ours, while both
  reproduce the 5, 10, 15 and 25 % rows: the 20 % row is not reproducible with the released graph;
* PGD evasion at 5 % (target: <= 76 %), one attack per seed against that seed's GCN. The attack
  ascends its loss against the model's predicted labels (the protocol of the 5 % evasion row). Xu et al.'s code
  (KaidiXu/GCN_ADV_Train, attack.py) then keeps the Bernoulli sample with the lowest test accuracy
  against the true labels: ``select="accuracy"``. Rows:
  - ``paper`` and ``default``: the paper's sampling and our swap refinement, both judged by the
    attack loss (``select="loss"``);
  - ``xu_select`` and ``xu_select_refined``: the same two judged by true accuracy; the refined one
    is the default attack;
  - PyG's PR-BCD on the same models;
  - our attack given the true test labels in the loss too. That is a stronger attacker than the
    protocol allows, and it lands near Xu et al.'s 72.1.
* Nettack (direct, structure + features, poisoning, 40 targets, degree + 2 flips; target: >= 90 %
  misclassified), one seed per run by default (``--nettack-seeds``).

Usage::

    python benchmarks/graph_fidelity.py --seeds 5 --parts clean,prognn,pgd,nettack,meta
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

REF = {"clean": 83.50, "meta_0.05": 76.55, "meta_0.1": 70.39, "meta_0.15": 65.10, "meta_0.2": 59.56, "meta_0.25": 47.53}


def ms(values):
    v = [100 * x for x in values]
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def train_gcn(graph, seed, edge_index=None):
    from robustbench_geo.models import build_model
    from robustbench_geo.training import default_config, seed_everything, train_graph_model

    seed_everything(seed)
    model, _ = build_model("gcn", graph)
    g = graph if edge_index is None else graph.with_edges(edge_index)
    train_graph_model(model, g, default_config("graph", seed=seed), progress=False)
    return model.eval()


def deeprobust_gcn(graph, perturbed, seeds):
    """Test accuracies of DeepRobust's GCN (its default ``fit``) on ``perturbed``, or ``None`` without DeepRobust."""
    try:
        import scipy.sparse as sp
        from graph_speed import _deeprobust

        GCN = _deeprobust()[0]
    except ImportError:
        return None
    import numpy as np

    feats, adj = sp.csr_matrix(graph.x.numpy()), sp.csr_matrix(perturbed.dense_adjacency().numpy())
    labels, acc = graph.y.numpy(), []
    for s in seeds:
        np.random.seed(s)
        torch.manual_seed(s)
        m = GCN(nfeat=feats.shape[1], nclass=int(labels.max()) + 1, nhid=16, dropout=0.5, device="cpu")
        m.fit(feats, adj, labels, graph.idx_train.numpy(), graph.idx_val.numpy())
        m.eval()
        pred = m.predict().argmax(1)[graph.idx_test]
        acc.append(float((pred == graph.y[graph.idx_test]).float().mean()))
    return acc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--parts", default="clean,prognn,pgd,nettack,meta")
    ap.add_argument("--nettack-seeds", type=int, default=1)
    ap.add_argument("--pgd-seeds", type=int, default=None, help="PGD runs (default: --seeds)")
    ap.add_argument("--pgd-rows", default="xu_select,xu_select_refined,paper,default,prbcd,true_labels",
                    help="PGD rows: xu_select / xu_select_refined (select=accuracy, refine_steps=0 / default), "
                         "paper / default (the same judged by loss), prbcd (PyG PR-BCD), true_labels (attack with y)")
    ap.add_argument("--meta-max", type=float, default=0.2, help="largest Metattack budget (prefixes give the smaller)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a shared 2-core box)")
    ap.add_argument("--out", default="runs/graph_fidelity.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from robustbench_geo.attacks import create_attack
    from robustbench_geo.attacks.graph.base import apply_flips
    from robustbench_geo.data import load_dataset
    from robustbench_geo.evaluation import evaluate_attack, graph_accuracy

    graph = load_dataset("cora")
    seeds = list(range(args.seeds))
    parts = args.parts.split(",")
    rows, t_all = [], time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def report(name, vals, ref, check, extra=""):
        m, s = ms(vals)
        ok = check(m)
        rows.append({"check": name, "mean": m, "std": s, "n": len(vals), "reference": ref, "pass": ok, "extra": extra})
        print(f"{name:<44} {m:6.2f} +- {s:4.2f}  (n={len(vals)})  reference {ref}  {'PASS' if ok else 'FAIL'} {extra}", flush=True)
        out.write_text(json.dumps(rows, indent=2))

    models = {s: train_gcn(graph, s) for s in seeds}
    if "clean" in parts:
        report("clean GCN", [graph_accuracy(models[s], graph) for s in seeds], "83.50 +- 0.44 (within 1)",
               lambda m: abs(m - REF["clean"]) <= 1.0)
    if "prognn" in parts:
        from robustbench_geo.data.graphs import load_prognn_perturbed

        for rate in (0.05, 0.1, 0.15, 0.2, 0.25):  # the documented table checks 5/10/20 %; 15/25 % show the trend
            p = load_prognn_perturbed("cora", "meta", rate)
            acc = [graph_accuracy(train_gcn(graph, s, p.edge_index), graph.with_edges(p.edge_index)) for s in seeds]
            ref = REF[f"meta_{rate:g}"]
            report(f"GCN on Pro-GNN meta graph {rate:.0%}", acc, f"{ref} (within 2)", lambda m, r=ref: abs(m - r) <= 2.0)
            dr = deeprobust_gcn(graph, p, seeds)
            if dr is not None:
                report(f"  DeepRobust GCN, same graph {rate:.0%}", dr, f"{ref} (reference row)", lambda m, r=ref: abs(m - r) <= 2.0,
                       "DeepRobust 0.2.11 GCN, its default fit")
    if "pgd" in parts:
        rows_pgd = {"paper": ("pgd", "sample only, judged by loss", {"refine_steps": 0, "select": "loss"}),
                    "default": ("pgd", "swap refinement, judged by loss", {"select": "loss"}),
                    "xu_select": ("pgd", "Xu et al.'s selection (sample with the lowest true test accuracy)",
                                  {"refine_steps": 0, "select": "accuracy"}),
                    "xu_select_refined": ("pgd", "default: Xu et al.'s selection + swap refinement on true accuracy",
                                          {"select": "accuracy"}),
                    "prbcd": ("prbcd", "PyG PR-BCD, reference", {}),
                    "true_labels": ("pgd", "default, attacker given the TRUE test labels", {})}
        for key in args.pgd_rows.split(","):
            name, label, kw = rows_pgd[key]
            acc, t0 = [], time.perf_counter()
            for s in seeds[: args.pgd_seeds or len(seeds)]:
                extra = {"labels": graph.y[graph.idx_test]} if key == "true_labels" else {}
                res = create_attack(name, models[s], budget_edge_fraction=0.05, **kw)(graph, seed=s, **extra)
                acc.append(graph_accuracy(models[s], graph, edge_index=res.edge_index))
            report(f"{name.upper()} evasion 5 % (prob_margin, {label})", acc, "<= 76 (Xu et al.: 81.9 -> 72.1)",
                   lambda m: m <= 76.0, f"{(time.perf_counter() - t0) / len(acc):.0f} s/attack; per seed "
                   + " ".join(f"{100 * v:.2f}" for v in acc))
    if "nettack" in parts:
        rates, t0 = [], time.perf_counter()
        meta = {"model": "gcn", "model_kwargs": {"in_features": graph.num_features, "num_classes": graph.num_classes},
                "train": {"epochs": 1000, "lr": 0.01, "weight_decay": 5e-4, "patience": 100}}
        for s in seeds[: args.nettack_seeds]:
            o = evaluate_attack(models[s], graph, "nettack", {"features": True}, seed=s, mode="poisoning",
                                checkpoint_meta=meta, progress=False)
            rates.append(o.metrics["success_rate"])
        report("Nettack direct struct+feat poisoning, 40 tgt", rates, ">= 90 % misclassified", lambda m: m >= 90.0,
               f"{(time.perf_counter() - t0) / len(rates):.0f} s/run")
    if "meta" in parts:
        path = out.parent / f"metattack_self_seed0_{args.meta_max:g}.pt"
        if path.exists():
            seq = torch.load(path)
        else:
            t0 = time.perf_counter()
            res = create_attack("metattack", None, budget_edge_fraction=args.meta_max)(graph, seed=0)
            seq = torch.tensor(res.work["flip_sequence"], dtype=torch.long).T
            torch.save(seq, path)
            print(f"metattack {seq.shape[1]} flips in {time.perf_counter() - t0:.0f} s "
                  f"({(time.perf_counter() - t0) / max(seq.shape[1], 1):.2f} s/flip)", flush=True)
        for rate in (0.05, 0.1, 0.2):
            if rate > args.meta_max + 1e-9:
                continue
            k = int(rate * graph.num_edges)
            ei = apply_flips(graph.edge_index, seq[:, :k], graph.num_nodes)
            acc = [graph_accuracy(train_gcn(graph, s, ei), graph.with_edges(ei)) for s in seeds]
            ref = REF[f"meta_{rate:g}"]
            report(f"Metattack Meta-Self poisoning {rate:.0%} ({k} flips)", acc, f"{ref} (at most +1.5)",
                   lambda m, r=ref: m <= r + 1.5)
    print(f"total {time.perf_counter() - t_all:.0f} s; rows in {out}")


if __name__ == "__main__":
    main()
