"""``rbgeo sweep --dry-run``: list the cells and estimate how long the unfinished ones take.

The estimate is rough and says where each number comes from:

* ``done``: the cell is finished in the store (no time left);
* ``history``: the same attack on the same model finished before in this store (seconds per image,
  or per cell for graphs; CPU seconds per thread where the store recorded them);
* ``calibrated``: one timed training step of the model on this machine times the work: epochs x
  batches for training (times the spatial defense's cost per batch, e.g. ``1 + k/3`` steps for
  worst-of-k), and :func:`forward_passes` per attacked image (worst case, no early exit).
  On the CPU the step is timed in CPU seconds per torch thread (``time.process_time``), so a busy
  machine does not inflate it: the estimate is for the same machine idle;
* ``estimated``: a graph attack with its own dry-run estimate (``estimate_seconds(graph)``, today
  ``auto``: one timed gradient and forward of a fresh model of the cell's architecture on the cell's
  graph, times each portfolio member's work; CPU seconds per thread, like ``calibrated``);
* ``guess``: other graph attacks without history (``GRAPH_ATTACK_GUESS_S``).

Training is counted once per training config and not at all when the checkpoint is cached. The
calibration runs on the sweep's ``device`` (``[sweep] device = "cuda"`` gives a GPU estimate).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from robustbench_geo.attacks.base import get_attack
from robustbench_geo.data import dataset_info, load_dataset
from robustbench_geo.evaluation.graph import resolve_params
from robustbench_geo.loading import load_model
from robustbench_geo.models import build_model
from robustbench_geo.sweep.cells import call_params
from robustbench_geo.train_defenses import get_defense


def forward_passes(attack: str, params: dict) -> float:
    """Model forward passes per attacked image assumed without timing history (backward = 2 forwards).

    Known attacks are counted from their parameters (worst case, no early exit); others assume 300.
    """
    p = params
    if attack == "none":
        return 1
    if attack == "grid":
        return p.get("angle_steps", 31) * p.get("shift_steps", 5) ** 2
    if attack in ("worst_of_k", "random"):
        return p.get("k", 1) + 1
    if attack == "scale":
        per_axis = p.get("steps", 21)
        return (per_axis ** 2 if p.get("anisotropic") else per_axis) + 3 * p.get("refine_steps", 10)
    if attack == "affine_pgd":
        return 3 * p.get("steps", 40) * p.get("restarts", 5)
    if attack == "stadv":
        return 3 * p.get("max_iterations", p.get("steps", 100))
    return 300
GRAPH_ATTACK_GUESS_S = 60.0
TRAIN_SIZES = {"mnist": 60000, "fashion-mnist": 60000, "mnist-scaled": 60000, "mnist-rotated": 60000, "cifar10": 50000}


def _cpu_clock() -> float:
    """CPU seconds of this process per torch thread: on a busy machine this counts the work, not the
    waiting for a core, so the estimate is what an idle machine takes (assuming the threads scale)."""
    return time.process_time() / max(torch.get_num_threads(), 1)


def _step_seconds(model_name: str, params: dict, spec: str, batch_size: int, device: str = "cpu") -> float:
    """Seconds of one training step (forward + backward) of a fresh model on random data, on ``device``."""
    from robustbench_geo.data import dataset_info
    from robustbench_geo.models import create_model

    info = dataset_info(spec)
    probe = min(batch_size, 32)  # timed on a small batch, scaled to the full one
    if info.task == "image":
        model = create_model(model_name, in_channels=info.in_channels, num_classes=info.num_classes,
                             image_size=info.image_size, **params)
        x = torch.rand(probe, info.in_channels, *info.image_size, device=device)
        run = lambda: model(x).sum().backward()  # noqa: E731
    else:
        n, f = 2500, 1433
        model = create_model(model_name, in_features=f, num_classes=info.num_classes, **params)
        x = torch.rand(n, f, device=device)
        ei = torch.randint(0, n, (2, 10000), device=device)
        run = lambda: model(x, ei).sum().backward()  # noqa: E731
    model.to(device).train()
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    run()  # warm-up
    sync()
    clock = time.perf_counter if str(device).startswith("cuda") else _cpu_clock
    t0 = clock()
    for _ in range(2):
        run()
    sync()
    seconds = (clock() - t0) / 2
    return seconds * batch_size / probe if info.task == "image" else seconds


def graph_attack_seconds(attack: str, params: dict, runner: dict, model: str, model_params: dict, spec: str,
                         memo: dict | None = None) -> tuple[float, str]:
    """Seconds of one graph-attack cell without history: ``(seconds, source)``.

    An attack class with ``estimate_seconds(graph, clock=...)`` (``auto``) is asked on a fresh, untrained
    ``model`` built for dataset ``spec`` (the cost of a gradient does not depend on the weights), with the
    cell's parameters and budget, timed in CPU seconds per thread; every other attack gets
    ``GRAPH_ATTACK_GUESS_S``. ``memo`` caches loaded graphs and estimates across cells.
    """
    entry = get_attack(attack)
    if not hasattr(entry.cls, "estimate_seconds"):
        return GRAPH_ATTACK_GUESS_S, "guess"
    memo = {} if memo is None else memo
    full = resolve_params(entry, call_params(attack, params, runner), runner.get("budget"))
    key = (attack, repr(sorted(full.items())), model, repr(sorted(model_params.items())), spec)
    if key not in memo:
        if ("graph", spec) not in memo:
            memo[("graph", spec)] = load_dataset(spec)
        graph = memo[("graph", spec)]
        net, _ = build_model(model, graph, **model_params)
        memo[key] = float(entry.cls(net, **full).estimate_seconds(graph, clock=_cpu_clock)["total"])
    return memo[key], "estimated"


def _estimate_evaluated(c, row: dict, history: dict, steps: dict) -> None:
    """Attack time of a ``checkpoint =`` / pretrained ``factory =`` cell: history, or its timed forward pass."""
    m, a = c.config["model"], c.config["attack"]
    n = a["runner"].get("n")
    hist = history.get((a["name"], m["name"], m.get("vote")))
    if hist:
        row["attack_s"], row["source"] = sum(hist) / len(hist) * (n or 1), "history"
    elif "n" in a["runner"]:
        if m["label"] not in steps:
            steps[m["label"]] = _forward_seconds(m, c.config["dataset"]["spec"])
        row["attack_s"] = forward_passes(a["name"], a["params"]) * (n or 10000) * steps[m["label"]] * (m.get("vote") or 1)
        row["source"] = "calibrated"
    else:
        row["attack_s"] = 0.1 if a["name"] == "none" else GRAPH_ATTACK_GUESS_S
        row["source"] = "calibrated" if a["name"] == "none" else "guess"


def _forward_seconds(m: dict, spec: str, probe: int = 32) -> float:
    """Seconds per image of one forward pass of an evaluated image model (loaded as a cell would)."""
    info = dataset_info(spec)
    if m["source"] == "checkpoint":
        model, _ = load_model(m["plugin"], checkpoint=m["checkpoint"], data=info)
    else:
        model, _ = load_model(m["name"], weights=m["weights"], data=info, preprocessing=m["preprocessing"],
                              params=m["params"])
    x = torch.rand(probe, info.in_channels, *info.image_size)
    with torch.no_grad():
        model(x)  # warm-up
        t0 = time.perf_counter()
        model(x)
    return (time.perf_counter() - t0) / probe


def estimate_sweep(cfg, cells, *, jobs: int = 1) -> tuple[list[dict], float]:
    """Per-cell estimates and the total wall time in seconds (divided by ``jobs``).

    Returns:
        ``(rows, total_seconds)`` with rows ``{"cell", "status", "train_s", "attack_s", "source"}``.
    """
    from robustbench_geo.data import dataset_info
    from robustbench_geo.sweep.runner import default_checkpoint_cache
    from robustbench_geo.sweep.store import STORE_NAME, ResultStore

    done, history = {}, {}
    store_file = Path(cfg.output) / STORE_NAME
    if store_file.is_file() and store_file.stat().st_size:  # a 0-byte file: a new store to the sweep, no history
        with ResultStore(cfg.output, cfg.name, create=False) as store:  # read only: a dry run writes nothing
            for r in store.cells():
                done[r["hash"]] = r["status"]
                if r["status"] == "done" and r["attack_seconds"] is not None:
                    a = r["config"]["attack"]
                    n = a["runner"].get("n") or 1
                    info = r["info"] or {}
                    cpu = info.get("attack_cpu_seconds")  # load-independent when recorded (per thread)
                    secs = cpu / max(int(info.get("threads") or 1), 1) if cpu is not None else r["attack_seconds"]
                    history.setdefault((a["name"], r["config"]["model"]["name"], r["config"]["model"].get("vote")),
                                      []).append(secs / n)
    cache = Path(cfg.checkpoint_cache) if cfg.checkpoint_cache else default_checkpoint_cache()
    steps: dict = {}
    graph_memo: dict = {}
    trained: set = set()
    rows, total = [], 0.0
    for c in cells:
        row = {"cell": c, "status": done.get(c.hash, "new"), "train_s": 0.0, "attack_s": 0.0, "source": "done"}
        if row["status"] == "done":
            rows.append(row)
            continue
        t = c.config["training"]
        if t is None:  # an evaluated model: nothing to train; its forward pass is timed
            _estimate_evaluated(c, row, history, steps)
            total += row["attack_s"]
            rows.append(row)
            continue
        key = (t["model"], str(t["model_params"]), t["dataset"], t["train"]["batch_size"])
        if key not in steps:
            steps[key] = _step_seconds(t["model"], t["model_params"], t["dataset"], t["train"]["batch_size"], cfg.device)
        step = steps[key]
        cached = any(cache.glob(f"*-{c.train_hash[:16]}.json"))
        if c.train_hash not in trained and not cached:
            trained.add(c.train_hash)
            if dataset_info(t["dataset"]).task == "image":
                size = t["train_subset"] or TRAIN_SIZES.get(t["dataset"].split(":")[0], 60000)
                batches = t["train"]["epochs"] * math.ceil(size / t["train"]["batch_size"])
                row["train_s"] = batches * step * get_defense(t["train"].get("defense")).cost
            else:
                row["train_s"] = min(t["train"]["epochs"], 300) * step * 2  # early stopping usually ends sooner
        a = c.config["attack"]
        n = a["runner"].get("n")
        hist = history.get((a["name"], c.config["model"]["name"], c.config["model"].get("vote")))
        if hist:
            row["attack_s"] = sum(hist) / len(hist) * (n or 1)
            row["source"] = "history"
        elif "n" in a["runner"]:
            per_forward = step / 3 / t["train"]["batch_size"]  # a training step is ~3 forward passes
            votes = c.config["model"].get("vote") or 1  # a majority vote runs the model once per vote
            row["attack_s"] = forward_passes(a["name"], a["params"]) * (n or 10000) * per_forward * votes
            row["source"] = "calibrated"
        elif a["name"] == "none":
            row["attack_s"], row["source"] = 0.1, "calibrated"
        else:
            row["attack_s"], row["source"] = graph_attack_seconds(a["name"], a["params"], a["runner"], t["model"],
                                                                  t["model_params"], t["dataset"], graph_memo)
        total += row["train_s"] + row["attack_s"]
        rows.append(row)
    return rows, total / max(jobs, 1)
