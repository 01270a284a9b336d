"""Speed and memory of our graph attacks vs DeepRobust 0.2.11, side by side (Cora LCC, Pro-GNN split).

Each measurement runs in its own child process (so peak RSS is per attack) with ``--threads`` torch
threads (1 by default), on the same graph, budget and CPU: Nettack per target (structure only, degree + 2 flips, the same
targets), PGD at 5 % (100 steps), Metattack Meta-Self (``--meta-flips`` greedy flips, seconds per
flip). Strength is reported on the same footing: Nettack and PGD perturbations are evaluated on
our GCN (evasion); DeepRobust's PGD also on its own GCN. Nettack runs a second time on
DeepRobust's trained surrogate (``ours_nettack_drsur``), so the two attacks are compared on the same
linearised model: the surrogate's random initialisation alone moves 1-3 of 20 targets. Finally PR-BCD attacks a synthetic
stochastic block model with ``--sbm-nodes`` (100k) nodes, where the dense attacks refuse.

DeepRobust is benchmark-only (extra ``bench``). Its 0.2.11 package ``__init__`` files import
optional dependencies (torch_sparse, gensim) that are not needed by these attacks; we import the
attack modules directly (bare parent packages), without changing DeepRobust's code. Run with the
interpreter that has it, e.g.::

    PYTHONPATH=. python benchmarks/graph_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def _deeprobust():
    import types

    import deeprobust.graph as dg

    for sub in ("global_attack", "targeted_attack", "defense"):
        pkg = types.ModuleType(f"deeprobust.graph.{sub}")
        pkg.__path__ = [os.path.join(os.path.dirname(dg.__file__), sub)]
        sys.modules[pkg.__name__] = pkg
    from deeprobust.graph.global_attack.base_attack import BaseAttack
    sys.modules["deeprobust.graph.global_attack"].BaseAttack = BaseAttack
    from deeprobust.graph.targeted_attack.base_attack import BaseAttack as TargetedBase
    sys.modules["deeprobust.graph.targeted_attack"].BaseAttack = TargetedBase
    from deeprobust.graph.defense.gcn import GCN
    sys.modules["deeprobust.graph.defense"].GCN = GCN
    from deeprobust.graph.global_attack.mettack import Metattack
    from deeprobust.graph.global_attack.topology_attack import PGDAttack
    from deeprobust.graph.targeted_attack.nettack import Nettack
    return GCN, Nettack, PGDAttack, Metattack


def _setup():
    import scipy.sparse as sp

    from robustbench_geo.data import load_dataset
    from robustbench_geo.models import build_model
    from robustbench_geo.training import default_config, seed_everything, train_graph_model

    g = load_dataset("cora")
    seed_everything(0)
    model, _ = build_model("gcn", g)
    train_graph_model(model, g, default_config("graph", seed=0), progress=False)
    adj = sp.csr_matrix(g.dense_adjacency().numpy())
    feats = sp.csr_matrix(g.x.numpy())
    return g, model.eval(), adj, feats, g.y.numpy()


def _targets(g, model, k):
    from robustbench_geo.evaluation.graph import _margins, select_targets
    from robustbench_geo.evaluation import graph_logits

    logits = graph_logits(model, g)
    return select_targets(_margins(logits, g.y), logits.argmax(1) == g.y, g.idx_test, 0)[:k]


def _acc(model, g, ei, nodes=None):
    from robustbench_geo.evaluation import graph_accuracy

    return graph_accuracy(model, g, nodes if nodes is not None else "test", edge_index=ei)


def _ei(adj):
    from robustbench_geo.data.graphs import adjacency_to_edge_index, symmetrize

    return adjacency_to_edge_index(symmetrize(adj))


def job(name: str, args) -> dict:
    torch.set_num_threads(args.threads)
    out: dict = {"job": name, "threads": args.threads}
    if name == "prbcd_sbm":
        return _prbcd_sbm(args, out)
    g, model, adj, feats, labels = _setup()
    n = g.num_nodes
    budget = int(0.05 * g.num_edges)
    if name in ("ours_nettack", "ours_nettack_drsur", "dr_nettack"):
        targets = _targets(g, model, args.targets)
        deg = np.asarray(adj.sum(1)).ravel()
        mis, t_total = 0, 0.0
        if name.startswith("ours_nettack"):
            from robustbench_geo.attacks import create_attack

            att = create_attack("nettack", None)
            att.surrogate(g, 0)  # the surrogate is trained once per graph, as in DeepRobust (excluded)
            if name == "ours_nettack_drsur":  # the same attack on DeepRobust's trained surrogate
                w = _deeprobust_surrogate(feats, adj, labels, g)
                att._surrogate = (att._surrogate[0], (w.gc1.weight @ w.gc2.weight).detach().float())
            for t in targets:
                t0 = time.perf_counter()
                res = att(g, t)
                t_total += time.perf_counter() - t0
                mis += int(_predict(model, g, res.edge_index)[t] != g.y[t])
        else:
            _, Nettack, _, _ = _deeprobust()
            sur = _deeprobust_surrogate(feats, adj, labels, g)
            warm = Nettack(sur, nnodes=n, attack_structure=True, attack_features=False, device="cpu")
            warm.attack(feats, adj, labels, targets[0], 1, direct=True, verbose=False)  # numba JIT (excluded)
            for t in targets:
                att = Nettack(sur, nnodes=n, attack_structure=True, attack_features=False, device="cpu")
                t0 = time.perf_counter()
                att.attack(feats, adj, labels, t, int(deg[t]) + 2, direct=True, verbose=False)
                t_total += time.perf_counter() - t0
                mis += int(_predict(model, g, _ei(att.modified_adj))[t] != g.y[t])
        out.update(seconds_per_target=t_total / len(targets), misclassified=mis, targets=len(targets))
    elif name == "ours_pgd":
        from robustbench_geo.attacks import create_attack

        t0 = time.perf_counter()
        res = create_attack("pgd", model, budget_edge_fraction=0.05, steps=100)(g, seed=0)
        out.update(seconds=time.perf_counter() - t0, clean=_acc(model, g, g.edge_index), attacked=_acc(model, g, res.edge_index),
                   flips=res.flips)
    elif name == "dr_pgd":
        GCN, _, PGDAttack, _ = _deeprobust()
        victim = GCN(nfeat=feats.shape[1], nclass=int(labels.max()) + 1, nhid=16, dropout=0.5, device="cpu")
        victim.fit(feats, adj, labels, g.idx_train.numpy(), g.idx_val.numpy(), patience=30)
        victim.eval()
        att = PGDAttack(model=victim, nnodes=n, loss_type="CE", device="cpu")
        a_t, x_t, y_t = torch.FloatTensor(adj.todense()), torch.FloatTensor(feats.todense()), torch.LongTensor(labels)
        t0 = time.perf_counter()
        att.attack(x_t, a_t, y_t, g.idx_test.numpy(), budget, epochs=100)
        secs = time.perf_counter() - t0
        mod = att.modified_adj.detach()
        import scipy.sparse as sp

        ei = _ei(sp.csr_matrix(mod.numpy()))
        dr_clean = float(victim.predict(x_t, a_t).argmax(1)[g.idx_test].eq(y_t[g.idx_test]).float().mean())
        dr_att = float(victim.predict(x_t, mod).argmax(1)[g.idx_test].eq(y_t[g.idx_test]).float().mean())
        out.update(seconds=secs, clean=_acc(model, g, g.edge_index), attacked=_acc(model, g, ei),
                   dr_victim_clean=dr_clean, dr_victim_attacked=dr_att, flips=int((mod - a_t).abs().sum() / 2))
    elif name == "ours_meta":
        from robustbench_geo.attacks import create_attack

        att = create_attack("metattack", None, budget_edge_fraction=args.meta_flips / g.num_edges + 1e-9)
        att.progress = False
        t0 = time.perf_counter()
        res = att(g, seed=0)
        out.update(seconds_per_flip=(time.perf_counter() - t0) / max(res.flips, 1), flips=res.flips)
    elif name == "dr_meta":
        GCN, _, _, Metattack = _deeprobust()
        sur = GCN(nfeat=feats.shape[1], nclass=int(labels.max()) + 1, nhid=16, dropout=0, with_relu=False,
                  with_bias=False, device="cpu")
        sur.fit(feats, adj, labels, g.idx_train.numpy(), g.idx_val.numpy(), patience=30)
        att = Metattack(sur, nnodes=n, feature_shape=feats.shape, attack_structure=True, attack_features=False,
                        device="cpu", lambda_=0)
        unl = np.union1d(g.idx_val.numpy(), g.idx_test.numpy())
        a_t, x_t, y_t = torch.FloatTensor(adj.todense()), torch.FloatTensor(feats.todense()), torch.LongTensor(labels)
        t0 = time.perf_counter()
        # ll_constraint=False: DeepRobust 0.2.11's likelihood filter indexes ``adj[node_pairs.T]``, which
        # torch >= 2 reads as a (2, K, N) gather and fails allocating ~61 GB on Cora; ours keeps the filter on
        att.attack(x_t, a_t, y_t, g.idx_train.numpy(), unl, args.meta_flips, ll_constraint=False)
        out.update(seconds_per_flip=(time.perf_counter() - t0) / args.meta_flips, flips=args.meta_flips,
                   ll_constraint=False)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _deeprobust_surrogate(feats, adj, labels, g):
    """DeepRobust's Nettack surrogate: its linearised GCN (no ReLU, no bias), trained by its ``fit``."""
    GCN = _deeprobust()[0]
    torch.manual_seed(0)
    np.random.seed(0)
    sur = GCN(nfeat=feats.shape[1], nclass=int(labels.max()) + 1, nhid=16, dropout=0, with_relu=False,
              with_bias=False, device="cpu")
    sur.fit(feats, adj, labels, g.idx_train.numpy(), g.idx_val.numpy(), patience=30)
    return sur


def _predict(model, g, ei):
    from robustbench_geo.evaluation import graph_logits

    return graph_logits(model, g, ei).argmax(1)


def _prbcd_sbm(args, out):
    """PR-BCD on a synthetic SBM: ``--sbm-nodes`` nodes, 10 blocks, ~10 edges per node, 32 features."""
    from robustbench_geo.attacks import create_attack
    from robustbench_geo.attacks.graph.base import symmetric_edge_index
    from robustbench_geo.data.base import GraphDataset
    from robustbench_geo.data.graphs import stratified_split
    from robustbench_geo.models import build_model
    from robustbench_geo.training import TrainConfig, seed_everything, train_graph_model

    n, k = args.sbm_nodes, 10
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, k, (n,), generator=gen)
    m_in, m_out = 4 * n, 1 * n  # ~8 intra- and ~2 inter-block edges per node
    order = torch.argsort(y)
    starts = torch.searchsorted(y[order], torch.arange(k))
    sizes = torch.bincount(y, minlength=k)
    i = torch.randint(0, n, (m_in,), generator=gen)
    j = order[starts[y[i]] + (torch.rand(m_in, generator=gen) * sizes[y[i]]).long()]
    i2, j2 = torch.randint(0, n, (m_out,), generator=gen), torch.randint(0, n, (m_out,), generator=gen)
    ring = torch.arange(n)
    src = torch.cat([i, i2, ring])
    dst = torch.cat([j, j2, (ring + 1) % n])  # a ring keeps every node connected
    keep = src != dst
    a, b = torch.minimum(src[keep], dst[keep]), torch.maximum(src[keep], dst[keep])
    ids = torch.unique(a * n + b)
    ei = symmetric_edge_index(torch.stack([ids // n, ids % n]), n)
    x = torch.randn(n, 32, generator=gen) + 0.7 * torch.nn.functional.one_hot(y, 32).float()
    tr, va, te = stratified_split(y, (0.1, 0.1, 0.8), 0)
    g = GraphDataset("sbm", "synthetic", x, ei, y, tr, va, te, {})
    seed_everything(0)
    model, _ = build_model("gcn", g)
    t0 = time.perf_counter()
    train_graph_model(model, g, TrainConfig(epochs=100, lr=0.01, weight_decay=5e-4, patience=20), progress=False)
    out["train_seconds"] = time.perf_counter() - t0
    out["nodes"], out["edges"] = n, g.num_edges
    try:
        create_attack("pgd", model)(g)
    except MemoryError as e:
        out["pgd_refusal"] = str(e)
    att = create_attack("prbcd", model, budget_edge_fraction=args.sbm_budget, block_size=args.sbm_block,
                        epochs=args.sbm_epochs, epochs_resampling=int(0.8 * args.sbm_epochs))
    t0 = time.perf_counter()
    res = att(g, seed=0)
    out["seconds"] = time.perf_counter() - t0
    out["clean"], out["attacked"], out["flips"] = _acc(model, g, g.edge_index), _acc(model, g, res.edge_index), res.flips
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--job", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--jobs", default="ours_nettack,ours_nettack_drsur,dr_nettack,ours_pgd,dr_pgd,ours_meta,dr_meta,prbcd_sbm")
    ap.add_argument("--targets", type=int, default=20, help="Nettack targets (from the 40-target protocol)")
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads for every job")
    ap.add_argument("--meta-flips", type=int, default=10, help="Metattack flips timed per implementation")
    ap.add_argument("--sbm-nodes", type=int, default=100_000)
    ap.add_argument("--sbm-budget", type=float, default=0.01)
    ap.add_argument("--sbm-block", type=int, default=1_000_000)
    ap.add_argument("--sbm-epochs", type=int, default=50)
    ap.add_argument("--out", default="runs/graph_speed.json")
    args = ap.parse_args()
    if args.job:
        print("RESULT " + json.dumps(job(args.job, args)), flush=True)
        return
    results = {}
    for name in args.jobs.split(","):
        opts = ["--targets", args.targets, "--threads", args.threads, "--meta-flips", args.meta_flips, "--sbm-nodes", args.sbm_nodes,
                "--sbm-budget", args.sbm_budget, "--sbm-block", args.sbm_block, "--sbm-epochs", args.sbm_epochs]
        cmd = [sys.executable, __file__, "--job", name] + [str(o) for o in opts]
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        results[name] = json.loads(line[-1][7:]) if line else {"error": (p.stderr or p.stdout)[-2000:]}
        print(name, json.dumps(results[name]), flush=True)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    _table(results, args.threads)


def _table(r, threads=1):
    def get(name, key, scale=1.0, fmt="{:.2f}"):
        v = r.get(name, {}).get(key)
        return fmt.format(v * scale) if isinstance(v, (int, float)) else "n/a"

    print(f"\n| attack (Cora LCC, {threads} thread{'s' if threads > 1 else ''}) | ours | DeepRobust 0.2.11 | speed-up | strength ours / DeepRobust | peak RSS MiB ours / DR |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, o, d, key, unit, strength in [
        ("Nettack, s/target (struct, deg+2)", "ours_nettack", "dr_nettack", "seconds_per_target", "s",
         lambda n: f"{get(n, 'misclassified', fmt='{:.0f}')}/{get(n, 'targets', fmt='{:.0f}')} misclassified"),
        ("Nettack, the same on DeepRobust's surrogate", "ours_nettack_drsur", "dr_nettack", "seconds_per_target", "s",
         lambda n: f"{get(n, 'misclassified', fmt='{:.0f}')}/{get(n, 'targets', fmt='{:.0f}')} misclassified"),
        ("PGD 5 %, s (100 steps)", "ours_pgd", "dr_pgd", "seconds", "s",
         lambda n: f"acc {get(n, 'attacked', 100)} %"),
        ("Metattack Meta-Self, s/flip", "ours_meta", "dr_meta", "seconds_per_flip", "s", lambda n: "see fidelity"),
    ]:
        so, sd = r.get(o, {}).get(key), r.get(d, {}).get(key)
        sp = f"{sd / so:.1f}x" if so and sd else "n/a"
        print(f"| {label} | {get(o, key)} | {get(d, key)} | {sp} | {strength(o)} / {strength(d)} | "
              f"{get(o, 'peak_rss_mib', fmt='{:.0f}')} / {get(d, 'peak_rss_mib', fmt='{:.0f}')} |")
    s = r.get("prbcd_sbm", {})
    if "seconds" in s:
        print(f"\nPR-BCD on SBM: {s['nodes']} nodes, {s['edges']} edges, {s['flips']} flips in {s['seconds']:.0f} s; "
              f"accuracy {100 * s['clean']:.2f} -> {100 * s['attacked']:.2f} %; peak RSS {s['peak_rss_mib']:.0f} MiB")
        print(f"dense PGD on it: {s.get('pgd_refusal', 'did not refuse')}")


if __name__ == "__main__":
    main()
