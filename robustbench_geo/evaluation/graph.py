"""Evaluation protocols for structure attacks: evasion and poisoning, global and 40-target.

* **Evasion**: the attack perturbs the graph; the given (trained) model is evaluated on it.
* **Poisoning**: the attack perturbs the graph; a fresh model (``fresh_model()``, else
  ``checkpoint_meta["model"]`` with ``["model_kwargs"]``) is trained on it with the checkpoint's training config
  (:func:`~robustbench_geo.training.train_graph_model`, seed = attack seed) and evaluated; the clean
  reference is the same architecture trained with the same seed on the clean graph.
* **Global** attacks report test accuracy; ``success_rate`` is the fraction of test nodes that
  were correct on the clean graph and are wrong after the attack.
* **Targeted** attacks use the standard 40-target protocol (Zügner et al. 2018): among the test
  nodes the clean model classifies correctly, the 10 with the highest margin, the 10 with the
  lowest and 20 others at random (seeded); each target is attacked separately on the clean graph;
  ``success_rate`` is the fraction of targets misclassified afterwards, ``robust_accuracy`` the rest.

Every robust number is re-measured independently of the attack: the perturbed ``edge_index`` is
fed to the sparse ``forward`` of a fresh copy of the model (evasion;
:func:`~robustbench_geo.models.predict.fresh_copy` of a copy taken before the attack ran, so no cache
or other state the attack's own forward passes left behind is read) or a model is retrained on it
(poisoning). The clean accuracy is measured the same way.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from robustbench_geo._version import versions
from robustbench_geo.attacks.base import get_attack
from robustbench_geo.attacks.graph.base import GraphPerturbation, check_perturbation, check_target, degrees
from robustbench_geo.data.base import GraphDataset
from robustbench_geo.evaluation.outcome import AttackOutcome, summarise
from robustbench_geo.models.predict import fresh_copy, graph_logits, model_device, on_device
from robustbench_geo.models.registry import create_model
from robustbench_geo.training import TrainConfig, default_config, seed_everything, train_graph_model

MODES = ("evasion", "poisoning")


def select_targets(margins: torch.Tensor, correct: torch.Tensor, candidates: torch.Tensor, seed: int,
                   n_high: int = 10, n_low: int = 10, n_random: int = 20) -> list[int]:
    """The 40-target protocol: highest-margin, lowest-margin and random correctly classified nodes.

    Args:
        margins: ``(N,)`` classification margins of the clean model (true-class probability minus
            the largest other probability).
        correct: ``(N,)`` bool, the clean model is right.
        candidates: node ids to choose from (test nodes).
    """
    pool = candidates[correct[candidates]]
    order = pool[torch.argsort(margins[pool], descending=True, stable=True)]
    if order.numel() <= n_high + n_low + n_random:
        return order.tolist()
    high, low, rest = order[:n_high], order[order.numel() - n_low:], order[n_high:order.numel() - n_low]
    g = torch.Generator().manual_seed(seed)
    rand = rest[torch.randperm(rest.numel(), generator=g)[:n_random]]
    return [*high.tolist(), *low.tolist(), *rand.tolist()]


def _margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p = logits.softmax(1)
    true = p.gather(1, y[:, None]).squeeze(1)
    other = p.scatter(1, y[:, None], -1.0).max(1).values
    return true - other


def _predict(model, graph: GraphDataset, edge_index: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
    g = graph if x is None else graph.with_edges(graph.edge_index, x)
    return graph_logits(model, g, edge_index)


def _retrain(graph: GraphDataset, checkpoint_meta: dict | None, seed: int, device, edge_index=None, x=None,
             fresh_model: Callable[[], nn.Module] | None = None):
    if fresh_model is None and (not checkpoint_meta or "model" not in checkpoint_meta):
        raise ValueError("mode='poisoning' retrains the model: expected checkpoint_meta with 'model', 'model_kwargs' "
                         "and 'train' (the checkpoint's JSON metadata) or fresh_model, got neither")
    seed_everything(seed)
    model = fresh_model() if fresh_model is not None else \
        create_model(checkpoint_meta["model"], **checkpoint_meta.get("model_kwargs", {}))
    cfg = dict((checkpoint_meta or {}).get("train") or asdict(default_config("graph", model)))
    cfg["seed"] = seed
    g = graph if edge_index is None and x is None else graph.with_edges(
        graph.edge_index if edge_index is None else edge_index, x)
    train_graph_model(model, g, TrainConfig(**cfg), device=device, progress=False)
    return model.cpu().eval()


def resolve_params(entry, params: dict, budget) -> dict:
    """The attack's parameters with defaults filled in and ``budget`` mapped to its budget parameter."""
    full = entry.fill(params)
    if budget is not None:
        name = entry.cls.budget_param
        if name in params:  # two settings of one budget: neither may win in silence
            raise ValueError(f"budget={budget} and the attack parameter {name}={params[name]} both set the budget of "
                             f"attack {entry.name!r}; give only one (--budget or --param {name})")
        full[name] = budget
    return full


def evaluate_graph_attack(model, graph: GraphDataset, attack: str, params: dict | None = None, *, seed: int = 0,
                          mode: str = "evasion", budget=None, checkpoint_meta: dict | None = None, device=None,
                          progress: bool = True, targets: list[int] | None = None,
                          fresh_model: Callable[[], nn.Module] | None = None) -> AttackOutcome:
    """Run structure attack ``attack`` on ``graph`` against ``model`` under protocol ``mode``.

    Args:
        model: trained graph model (evasion victim; in poisoning it only picks the targets and
            serves as the attack's white-box model where the attack uses one).
        params: attack parameters (``rbgeo list attacks`` shows them).
        seed: attack seed (also the retraining seed in poisoning and the target-selection seed).
        mode: ``evasion`` or ``poisoning``.
        budget: overrides the attack's budget parameter: a fraction of edges (global attacks) or a
            count of flips per target (targeted; ``None`` keeps the default, degree + 2).
        checkpoint_meta: the checkpoint's metadata (poisoning: the model to rebuild and its training
            settings; without ``train`` the graph defaults of :func:`~robustbench_geo.training.default_config`).
        fresh_model: poisoning: builds the untrained model to retrain (instead of ``checkpoint_meta["model"]``).
        targets: explicit target nodes for targeted attacks (default: the 40-target protocol).
        device: where the model runs (and poisoning retrains); ``None`` (default): where it is. The
            caller's model is never moved (a copy runs elsewhere).

    Returns:
        :class:`~robustbench_geo.attacks.base.AttackOutcome` with metrics ``clean_accuracy``,
        ``robust_accuracy``, ``success_rate``, ``flips``, ``insertions``, ``deletions``, ``budget``.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    entry = get_attack(attack)
    targeted = bool(getattr(entry.cls, "targeted", False))
    full = resolve_params(entry, params or {}, budget)
    graph = graph.to("cpu")
    model = on_device(model, device).eval()
    pristine = fresh_copy(model)  # before any forward pass: what every re-measure copies
    seed_everything(seed)
    attacker = entry.cls(model, **full)
    if hasattr(attacker, "progress"):
        attacker.progress = progress
    retrain = _Retrain(mode, checkpoint_meta, seed, model_device(model), fresh_model, pristine)
    t0 = time.perf_counter()
    clean_logits, clean_logits_eval = _clean_logits(model, graph, retrain)
    clean_correct = clean_logits_eval.argmax(1) == graph.y
    clean_acc = summarise(clean_correct[graph.idx_test], clean_correct[graph.idx_test])["clean_accuracy"]
    if targeted:
        metrics, rows, results = _targeted(attacker, model, graph, clean_logits_eval, retrain, progress, targets)
    else:
        metrics, rows, results = _global(attacker, model, graph, clean_logits_eval, retrain)
    flip_metrics, artefacts = _flips(graph, results, targeted)
    metrics = {"clean_accuracy": clean_acc, **metrics, **flip_metrics}
    config = {"seed": seed, "mode": mode, "attack": attack, "params": full, "dataset": graph.name, "split": graph.split,
              "split_hash": graph.split_hash, "num_nodes": graph.num_nodes, "num_edges": graph.num_edges,
              "targeted": targeted, "versions": versions(), "model": (checkpoint_meta or {}).get("model"),
              "work": None if targeted else [r.work for r in results][:1]}
    return AttackOutcome(attack, full, seed, metrics, rows, artefacts, time.perf_counter() - t0, config)


@dataclass(frozen=True)
class _Retrain:
    """What poisoning needs to train a fresh model on a (perturbed) graph; evasion uses the given model."""

    mode: str
    checkpoint_meta: dict | None
    seed: int
    device: torch.device
    fresh_model: Callable[[], nn.Module] | None
    pristine: nn.Module

    def victim(self) -> nn.Module:
        """Evasion's evaluated model: a new copy of the model as it was before the attack, caches empty."""
        return fresh_copy(self.pristine)

    def model(self, graph: GraphDataset, edge_index=None, x=None) -> nn.Module:
        return _retrain(graph, self.checkpoint_meta, self.seed, self.device, edge_index, x, self.fresh_model)


def _clean_logits(model, graph: GraphDataset, retrain: _Retrain) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the attacked model and of the evaluated one on the clean graph (poisoning: a model
    trained on the clean graph with the attack's seed; evasion: the same logits twice)."""
    clean_logits = _predict(retrain.victim(), graph, graph.edge_index)
    if retrain.mode == "poisoning":
        return clean_logits, _predict(retrain.model(graph), graph, graph.edge_index)
    return clean_logits, clean_logits


def _victim_logits(model, graph: GraphDataset, res: GraphPerturbation, retrain: _Retrain) -> torch.Tensor:
    """Logits on the perturbed graph: a fresh copy of the model (evasion) or one retrained on it (poisoning)."""
    victim = retrain.model(graph, res.edge_index, res.x) if retrain.mode == "poisoning" else retrain.victim()
    return _predict(victim, graph, res.edge_index, res.x)


def _global(attacker, model, graph: GraphDataset, clean_logits_eval, retrain: _Retrain):
    """One perturbation of the whole graph, scored on the test nodes."""
    y, test = graph.y, graph.idx_test
    clean_correct = clean_logits_eval.argmax(1) == y
    seed_everything(retrain.seed)
    res = attacker(graph, seed=retrain.seed)
    pred = _victim_logits(model, graph, res, retrain).argmax(1)
    now_correct = pred == y
    summary = summarise(clean_correct[test], now_correct[test], robust_needs_clean=False)
    metrics = {k: summary[k] for k in ("robust_accuracy", "success_rate")}
    rows = [{"node": int(i), "label": int(y[i]), "clean_prediction": int(clean_logits_eval[i].argmax()),
             "prediction": int(pred[i]), "clean_correct": bool(clean_correct[i]), "correct": bool(now_correct[i])}
            for i in test.tolist()]
    return metrics, rows, [res]


def _targeted(attacker, model, graph: GraphDataset, clean_logits_eval, retrain: _Retrain, progress, targets):
    """The 40-target protocol (or ``targets``): each target attacked separately on the clean graph."""
    y, seed = graph.y, retrain.seed
    if targets is None:
        correct = clean_logits_eval.argmax(1) == y
        targets = select_targets(_margins(clean_logits_eval, y), correct, graph.idx_test, seed)
    targets = [check_target(graph, int(t)) for t in targets]
    deg = degrees(graph.edge_index, graph.num_nodes)
    rows, results = [], []
    for t in tqdm(targets, desc="targets", disable=not progress, unit="target"):
        # one seed for all targets: Nettack trains its surrogate once per seed (as Zuegner et al.), not once per target
        res: GraphPerturbation = attacker(graph, t, seed=seed)
        check_perturbation(graph, res)
        logits = _victim_logits(model, graph, res, retrain)
        pred = int(logits[t].argmax())
        rows.append({"target": t, "label": int(y[t]), "clean_prediction": int(clean_logits_eval[t].argmax()),
                     "clean_margin": float(_margins(clean_logits_eval[t:t + 1], y[t:t + 1])[0]), "prediction": pred,
                     "margin": float(_margins(logits[t:t + 1], y[t:t + 1])[0]), "misclassified": pred != int(y[t]),
                     "budget": res.budget, "flips": res.flips, "insertions": int(res.insertions.shape[1]),
                     "deletions": int(res.deletions.shape[1]), "feature_flips": int(res.feature_flips.shape[1]),
                     "degree": int(deg[t])})
        results.append(res)
    mis = [r["misclassified"] for r in rows]
    rate = sum(mis) / len(mis) if mis else 0.0
    return {"robust_accuracy": 1.0 - rate if mis else float("nan"), "success_rate": rate,
            "targets": len(targets)}, rows, results


def _flips(graph: GraphDataset, results: list[GraphPerturbation], targeted: bool) -> tuple[dict, dict]:
    """Flip counts and the artefacts reports draw: inserted/deleted pairs (with their targets) and degrees."""
    none = torch.zeros(2, 0, dtype=torch.long)
    ins = torch.cat([r.insertions for r in results], 1) if results else none
    dels = torch.cat([r.deletions for r in results], 1) if results else none
    deg0 = degrees(graph.edge_index, graph.num_nodes)
    deg1 = deg0.clone()
    for r in results:  # targeted: each target's own perturbed degrees (a target's flips touch it and its partners)
        d = degrees(r.edge_index, graph.num_nodes)
        touched = torch.unique(torch.cat([r.insertions.view(-1), r.deletions.view(-1)]))
        deg1[touched] = d[touched]
    metrics = {"flips": int(ins.shape[1] + dels.shape[1]), "insertions": int(ins.shape[1]),
               "deletions": int(dels.shape[1]), "budget": int(sum(r.budget for r in results)),
               "feature_flips": int(sum(r.feature_flips.shape[1] for r in results))}
    artefacts = {"insertions": ins, "deletions": dels, "degree_before": deg0, "degree_after": deg1}
    if targeted:
        for kind in ("insertions", "deletions"):
            artefacts[f"{kind[:-1]}_targets"] = torch.cat(
                [torch.full((getattr(r, kind).shape[1],), r.target) for r in results]).long() \
                if results else torch.zeros(0, dtype=torch.long)
    return metrics, artefacts
