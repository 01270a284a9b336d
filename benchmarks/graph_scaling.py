"""How training, clean evaluation, PR-BCD and GR-BCD grow with the graph: generated ``sbm`` graphs of 1k-100k nodes.

For each size ``N`` a fresh process generates ``sbm:nodes=N`` (average degree 20, 10 classes, 128 binary
features, seed 0), trains our ``gcn`` (16 hidden units) for ``--epochs`` epochs with
``training.train_graph_model`` (no early stop), measures the clean test accuracy with ``rbg.evaluate``, then
attacks the test nodes at 5 % of the edges (``floor(0.05 E)`` flips), evasion, one seed:

* ``PR-BCD ours``: ``rbg.evaluate(model, graph, "prbcd", ...)`` (our defaults: true labels, ``prob_margin``,
  lr 2000, the epoch and sample chosen by accuracy);
* ``PR-BCD PyG``: ``torch_geometric.contrib.nn.PRBCDAttack`` on the same model with the same loss, budget,
  block size, epochs, resampling epochs and lr, the true labels of the test nodes, PyG's own metric (the loss);
* ``GR-BCD ours`` / ``GR-BCD PyG``: ``"grbcd"`` and ``GRBCDAttack`` with the same loss (``masked``), block size
  and epochs (``min(epochs, budget)``, as ours passes).

Every step is timed in wall seconds (``time.perf_counter``) and CPU seconds (``time.process_time``; one torch
thread, so CPU s is the work done whatever else runs) and its peak RSS (``VmHWM``, reset before each step
through ``/proc/self/clear_refs``). Accuracy is the test accuracy of the trained model on the perturbed graph.
The 1-minute load average is read before each size. The growth exponent ``k`` of ``time ~ edges^k`` is the
least-squares slope of log CPU seconds over log edges over the sizes of at least ``--fit-from`` nodes.

Each size runs in its own process and writes ``RUNS_DIR/N.json``; ``--table`` pools what is there::

    python benchmarks/graph_scaling.py --sizes 1000 3000 10000 30000 --runs-dir /tmp/graph-scaling
    python benchmarks/graph_scaling.py --sizes 100000 --runs-dir /tmp/graph-scaling
    python benchmarks/graph_scaling.py --table --runs-dir /tmp/graph-scaling --results benchmarks/results/graph-attacks/scaling.json

``--no-attacks`` times generation, training and the clean evaluation only; ``--compare`` puts two such
series side by side (two versions of the code, each imported through ``PYTHONPATH``, sizes interleaved
so both see the same load), with the ratio and each series' exponent::

    git worktree add /tmp/before 1a3f984
    for n in 10000 30000 100000; do
      PYTHONPATH=/tmp/before python benchmarks/graph_scaling.py --sizes $n --no-attacks --runs-dir /tmp/train-before
      PYTHONPATH=. python benchmarks/graph_scaling.py --sizes $n --no-attacks --runs-dir /tmp/train-after
    done
    python benchmarks/graph_scaling.py --compare before=/tmp/train-before after=/tmp/train-after \
        --results benchmarks/results/graph-attacks/scaling-training.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from results_file import print_table, write_results  # noqa: E402

BUDGET = 0.05
STEPS = ("train", "clean eval", "PR-BCD ours", "PR-BCD PyG", "GR-BCD ours", "GR-BCD PyG")


def _peak_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not Linux: the peak is then the process's peak so far
        pass


def _timed(fn):
    _reset_peak()
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0, "peak_rss_mib": _peak_mib()}


def run_size(nodes: int, epochs: int, block_size: int, attack_epochs: int, seed: int, pyg: bool = True,
             attacks: bool = True) -> dict:
    """Everything for one graph size, in this process (one torch thread); ``pyg=False`` skips PyG's attacks,
    ``attacks=False`` every attack."""
    torch.set_num_threads(1)
    import robustbench_geo as rbg
    from robustbench_geo.attacks.graph.base import edge_budget
    from robustbench_geo.data import load_dataset
    from robustbench_geo.models.registry import build_model
    from robustbench_geo.training import default_config, seed_everything, train_graph_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch_geometric.contrib.nn import GRBCDAttack, PRBCDAttack

    load = os.getloadavg()[0]
    graph, gen = _timed(lambda: load_dataset(f"sbm:nodes={nodes},avg_degree=20,classes=10,features=128", seed=seed))
    budget = edge_budget(graph, BUDGET)
    seed_everything(seed)
    model, _ = build_model("gcn", graph)
    cfg = default_config("graph", model, epochs=epochs, patience=epochs + 1, seed=seed)
    steps = {}
    _, steps["train"] = _timed(lambda: train_graph_model(model, graph, cfg, progress=False))
    model.eval()
    test, y = graph.idx_test, graph.y

    @torch.no_grad()
    def accuracy(edge_index) -> float:
        return float((model(graph.x, edge_index).argmax(1)[test] == y[test]).float().mean())

    r, steps["clean eval"] = _timed(lambda: rbg.evaluate(model, graph))
    steps["clean eval"]["accuracy"] = r.clean_accuracy.value
    if not attacks:
        return _run_record(graph, budget, load, gen, steps, epochs, block_size, attack_epochs, seed)
    prbcd = {"block_size": block_size, "epochs": attack_epochs, "epochs_resampling": int(0.8 * attack_epochs),
             "loss": "prob_margin", "lr": 2000.0}
    r, steps["PR-BCD ours"] = _timed(lambda: rbg.evaluate(model, graph, "prbcd", seed=seed,
                                                          budget_edge_fraction=BUDGET, **prbcd))
    steps["PR-BCD ours"]["accuracy"] = r.robust_accuracy.value

    def run_pyg(cls, **kw):
        torch.manual_seed(seed)
        att = cls(model, block_size=block_size, is_undirected=True, log=False, **kw)
        pert, _ = att.attack(graph.x, graph.edge_index, y, budget=budget, idx_attack=test)
        return accuracy(pert)

    if pyg:
        acc, steps["PR-BCD PyG"] = _timed(lambda: run_pyg(PRBCDAttack, epochs=attack_epochs,
                                                          epochs_resampling=prbcd["epochs_resampling"],
                                                          loss="prob_margin", lr=2000.0))
        steps["PR-BCD PyG"]["accuracy"] = acc
    grbcd = {"block_size": block_size, "epochs": attack_epochs, "loss": "masked"}
    r, steps["GR-BCD ours"] = _timed(lambda: rbg.evaluate(model, graph, "grbcd", seed=seed,
                                                          budget_edge_fraction=BUDGET, **grbcd))
    steps["GR-BCD ours"]["accuracy"] = r.robust_accuracy.value
    if pyg:
        acc, steps["GR-BCD PyG"] = _timed(lambda: run_pyg(GRBCDAttack, epochs=min(attack_epochs, max(budget, 1)),
                                                          loss="masked"))
        steps["GR-BCD PyG"]["accuracy"] = acc
    return _run_record(graph, budget, load, gen, steps, epochs, block_size, attack_epochs, seed)


def _run_record(graph, budget, load, gen, steps, epochs, block_size, attack_epochs, seed) -> dict:
    import robustbench_geo

    return {"nodes": graph.num_nodes, "edges": graph.num_edges, "budget": budget, "load_1min": load,
            "generate": gen, "steps": steps, "epochs": epochs, "block_size": block_size,
            "attack_epochs": attack_epochs, "seed": seed, "torch_threads": torch.get_num_threads(),
            "code": str(Path(robustbench_geo.__file__).resolve().parent.parent)}


def fit_exponent(edges: list[float], seconds: list[float]) -> float:
    """Least-squares slope of ``log seconds`` over ``log edges``."""
    lx, ly = [math.log(e) for e in edges], [math.log(max(s, 1e-9)) for s in seconds]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def _cell(step: dict | None) -> str:
    if step is None:
        return "not run"
    acc = f" / {100 * step['accuracy']:.1f} %" if "accuracy" in step else ""
    return f"{step['cpu_s']:.1f} / {step['wall_s']:.1f} / {step['peak_rss_mib']:.0f}{acc}"


def table(runs: list[dict], fit_from: int) -> tuple[list[str], list[list[str]], dict]:
    columns = ["nodes", "edges", "load (1 min)", *STEPS]
    rows = [[f"{r['nodes']:,}", f"{r['edges']:,}", f"{r['load_1min']:.1f}", *(_cell(r["steps"].get(s)) for s in STEPS)]
            for r in runs]
    exponents, cells = {}, []
    for s in STEPS:
        fitted = [r for r in runs if r["nodes"] >= fit_from and s in r["steps"]]
        if len(fitted) < 2:
            cells.append("-")
            continue
        exponents[s] = fit_exponent([r["edges"] for r in fitted], [r["steps"][s]["cpu_s"] for r in fitted])
        cells.append(f"{exponents[s]:.2f} ({round(fitted[0]['nodes'], -3) // 1000}k-{round(fitted[-1]['nodes'], -3) // 1000}k)")
    if exponents:
        rows.append(["k (CPU s ~ edges^k)", "", "", *cells])
    return columns, rows, exponents


def compare(series: list[str], fit_from: int, results: str | None) -> None:
    """Training and clean evaluation of several runs folders side by side (``LABEL=DIR``), per size."""
    runs = {}
    for item in series:
        label, sep, folder = item.partition("=")
        if not sep:
            raise SystemExit(f"--compare: expected LABEL=DIR, got {item!r}")
        runs[label] = {r["nodes"]: r for r in (json.loads(p.read_text()) for p in Path(folder).glob("*.json"))}
    labels = list(runs)
    sizes = sorted(set.intersection(*(set(r) for r in runs.values())))
    if not sizes:
        raise SystemExit(f"--compare: no size was run in every folder ({', '.join(series)})")
    steps = ("train", "clean eval")
    columns = ["nodes", "edges", *(f"{s} {label}" for s in steps for label in labels),
               *(f"{s} {labels[-1]} / {labels[0]} (CPU)" for s in steps)]
    rows = []
    for n in sizes:
        first, last = runs[labels[0]][n], runs[labels[-1]][n]
        ratios = [f"{last['steps'][s]['cpu_s'] / first['steps'][s]['cpu_s']:.2f}x" for s in steps]
        rows.append([f"{n:,}", f"{first['edges']:,}",
                     *(f"{_cell(runs[label][n]['steps'][s])} (load {runs[label][n]['load_1min']:.1f})"
                       for s in steps for label in labels), *ratios])
    exponents = {}
    for label in labels:
        fitted = [runs[label][n] for n in sizes if n >= fit_from]
        if len(fitted) >= 2:
            exponents[label] = {s: fit_exponent([r["edges"] for r in fitted], [r["steps"][s]["cpu_s"] for r in fitted])
                                for s in steps}
    if exponents:
        span = f"({round(min(n for n in sizes if n >= fit_from), -3) // 1000}k-{round(max(sizes), -3) // 1000}k)"
        rows.append(["k (CPU s ~ edges^k)", span,
                     *(f"{exponents[label][s]:.2f}" if label in exponents else "-" for s in steps for label in labels),
                     "", ""])
    print("cells: CPU s / wall s / peak RSS MiB (/ test accuracy)")
    print_table(columns, rows)
    if results:
        first = runs[labels[0]][sizes[0]]
        what = ("Generated sbm graphs (average degree 20, 10 classes, 128 features, seed 0): our gcn (16 hidden) trained "
                f"{first['epochs']} epochs and its clean evaluation, per step CPU seconds / wall seconds / peak RSS in MiB "
                f"(/ test accuracy), one torch thread, one process per size and code version ({', '.join(labels)}; sizes "
                "interleaved); the last columns are CPU-second ratios, the last row the exponent k of CPU s ~ edges^k")
        write_results(results, what, columns, rows, data={"runs": {label: [runs[label][n] for n in sizes] for label in labels},
                                                          "exponents": exponents, "fit_from_nodes": fit_from})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 3000, 10000, 30000, 100000])
    ap.add_argument("--runs-dir", default=None, help="one JSON per size is written / read here")
    ap.add_argument("--epochs", type=int, default=200, help="training epochs (all run)")
    ap.add_argument("--block-size", type=int, default=250_000)
    ap.add_argument("--attack-epochs", type=int, default=125)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fit-from", type=int, default=10_000, help="fit k over the sizes with at least this many nodes")
    ap.add_argument("--no-pyg", action="store_true", help="skip PyG's attacks (ours only)")
    ap.add_argument("--no-attacks", action="store_true", help="generation, training and clean evaluation only")
    ap.add_argument("--compare", nargs="+", metavar="LABEL=DIR", default=None,
                    help="table of training and clean evaluation, one column group per runs folder")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--table", action="store_true", help="pool RUNS_DIR into the table (runs nothing)")
    ap.add_argument("--results", default=None, help="write the table to this results file")
    args = ap.parse_args(argv)
    if args.compare:
        return compare(args.compare, args.fit_from, args.results)
    if not args.runs_dir:
        ap.error("--runs-dir is required (one JSON per size is written / read there)")
    runs_dir = Path(args.runs_dir)
    if args.one is not None:
        run = run_size(args.one, args.epochs, args.block_size, args.attack_epochs, args.seed, not args.no_pyg,
                       not args.no_attacks)
        (runs_dir / f"{args.one}.json").write_text(json.dumps(run, indent=1))
        return
    if not args.table:
        runs_dir.mkdir(parents=True, exist_ok=True)
        for n in args.sizes:
            cmd = [sys.executable, __file__, "--one", str(n), "--runs-dir", str(runs_dir), "--epochs", str(args.epochs),
                   "--block-size", str(args.block_size), "--attack-epochs", str(args.attack_epochs),
                   "--seed", str(args.seed), *(["--no-pyg"] if args.no_pyg else []),
                   *(["--no-attacks"] if args.no_attacks else [])]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            run = json.loads((runs_dir / f"{n}.json").read_text())
            print(f"{n} nodes: {time.perf_counter() - t0:.0f} s wall, "
                  + ", ".join(f"{s} {_cell(run['steps'].get(s))}" for s in STEPS), flush=True)
    runs = sorted((json.loads(p.read_text()) for p in runs_dir.glob("*.json")), key=lambda r: r["nodes"])
    columns, rows, exponents = table(runs, args.fit_from)
    print("cells: CPU s / wall s / peak RSS MiB (/ test accuracy)")
    print_table(columns, rows)
    if args.results:
        what = ("Generated sbm graphs (average degree 20, 10 classes, 128 features, seed 0), our gcn (16 hidden) "
                f"trained {runs[0]['epochs']} epochs, attacked at 5 % of the edges on the test nodes (evasion, one "
                f"seed, block {runs[0]['block_size']:,} pairs, {runs[0]['attack_epochs']} epochs, the same settings for "
                "ours and PyG's): per step CPU seconds / wall seconds / peak RSS in MiB (/ test accuracy after), one "
                "torch thread, one process per size; the last row is the least-squares exponent k of CPU s ~ edges^k")
        write_results(args.results, what, columns, rows, data={"runs": runs, "exponents": exponents,
                                                               "fit_from_nodes": args.fit_from})


if __name__ == "__main__":
    main()
