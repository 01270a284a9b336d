"""Cells: one sweep config -> the list of :class:`Cell` (model x attack setting x dataset x seed) and their keys.

A cell's hash covers everything that can change its result: the model (name, kwargs, and for
evaluated models the SHA-256 of their weights), the training config, the evaluation dataset and
subset, the attack with its defaults filled in, the seed and the package version. Labels and
file paths of weights are not part of it, so a relabelled model or a moved weights file finds its
finished cells again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Iterator

from robustbench_geo._version import __version__
from robustbench_geo.attacks.base import get_attack
from robustbench_geo.checkpoint import sha256_file, weights_sha256
from robustbench_geo.data import dataset_info
from robustbench_geo.loading import load_model, state_sha256
from robustbench_geo.sweep.config import AttackCfg, DatasetCfg, ModelCfg, SweepConfig, SweepConfigError, _applies
from robustbench_geo.training import default_config


@dataclass(frozen=True)
class Cell:
    """One unit of work: train (or reuse) a model, attack it on one dataset with one setting and seed.

    Attributes:
        hash: SHA-256 (hex) of :attr:`config`; the store's key.
        train_hash: SHA-256 of the training part only; the checkpoint cache key.
        config: the full, JSON-ready configuration of the cell (see :func:`cell_config`).
    """

    hash: str
    train_hash: str
    model_label: str
    attack_label: str
    dataset_label: str
    seed: int
    config: dict = field(compare=False)

    @property
    def short(self) -> str:
        return self.hash[:12]

    def describe(self) -> str:
        a = self.config["attack"]
        setting = ", ".join(f"{k}={v}" for k, v in sorted(a["grid_point"].items()))
        return f"{self.model_label} x {self.attack_label}({setting}) on {self.dataset_label} seed {self.seed}"


def config_hash(obj) -> str:
    """SHA-256 hex digest of the canonical JSON of ``obj`` (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _defaults(a: AttackCfg) -> dict:
    """What a cell's stored params are completed with: an attack's defaults; a certificate's settings are stored as given."""
    return get_attack(a.attack).defaults() if a.kind == "attack" else {}


def train_config(cfg: SweepConfig, m: ModelCfg, seed: int) -> dict | None:
    """The training part of a cell: what the checkpoint cache is keyed by (None for evaluated models)."""
    if m.evaluated:
        return None
    d = cfg.datasets[m.dataset]
    tc = default_config(m.task, m.model, **m.train, seed=seed).record()
    return {"model": m.model, "model_params": m.params, "dataset": d.spec, "train_subset": d.train_subset,
            "train": tc, "deform_backend": cfg.deform_backend, "package_version": __version__}


def weights_key(cfg: SweepConfig, m: ModelCfg) -> str | None:
    """The SHA-256 that keys an evaluated model's cells (``None`` for trained models), computed once per sweep.

    A checkpoint's or a weights file's bytes, or, for a factory that returns a trained model, the state
    dict of the model it builds (on the model's dataset).
    """
    if not m.evaluated:
        return None
    if m.label not in cfg.weights_keys:
        if m.source == "checkpoint":
            sha = weights_sha256(m.checkpoint)
        elif m.weights is not None:
            sha = sha256_file(m.weights)
        else:
            try:
                model, _ = load_model(m.model, data=dataset_info(cfg.datasets[m.dataset].spec), params=m.params)
            except (ValueError, TypeError) as e:
                raise SweepConfigError(f"models.{m.label}.factory: cannot build the pretrained model to hash its "
                                       f"weights: {e}") from e
            sha = state_sha256(model)
        cfg.weights_keys[m.label] = sha
    return cfg.weights_keys[m.label]


def model_config(m: ModelCfg, sha: str | None = None) -> dict:
    """The model part of a cell's stored config; evaluated models also say where their weights are and their ``sha``."""
    out = {"label": m.label, "name": m.model, "params": m.params}
    if m.vote:
        out["vote"] = m.vote
    if m.evaluated:
        out.update({"source": m.source, "task": m.task, "checkpoint": m.checkpoint, "plugin": m.plugin,
                    "weights": m.weights, "preprocessing": m.preprocessing, "weights_sha256": sha})
    return out


def _model_key(m: ModelCfg, sha: str | None) -> dict:
    """The model part of the cell hash: name and kwargs; for evaluated models also the weights' SHA-256
    (not their path: moved files keep their cells, changed weights are new cells)."""
    key = {"name": m.model, "params": m.params}
    if m.vote:  # absent without a vote: cells of models without one keep their hashes
        key["vote"] = m.vote
    if m.evaluated:
        key.update({"source": m.source, "weights_sha256": sha, "preprocessing": m.preprocessing})
    return key


def _attack_points(a: AttackCfg, d: DatasetCfg, task: str) -> Iterator[tuple[dict, dict, dict]]:
    """Each grid point of attack ``a`` on ``d``: ``(grid point, params with defaults filled in, runner kwargs)``."""
    defaults = _defaults(a)
    runner_keys = sorted(a.runner.keys() & {"budget", "mode"})
    keys = sorted(a.grid) + runner_keys
    values = [a.grid[k] for k in sorted(a.grid)] + [a.runner[k] for k in runner_keys]
    for combo in itertools.product(*values):
        point = dict(zip(keys, combo))
        params = {**defaults, **a.params, **{k: v for k, v in point.items() if k in a.grid}}
        runner = {k: v for k, v in point.items() if k in ("budget", "mode")}
        if "batch_size" in a.runner:
            runner["batch_size"] = a.runner["batch_size"]
        if task == "image":
            runner["n"] = d.test_subset
        yield point, params, runner


def call_params(name: str, params: dict, runner: dict) -> dict:
    """The parameters a cell passes to its attack: the stored ``params`` have every default filled in (they
    key the cell), so where the runner's ``budget`` sets the budget, the budget parameter's filled-in default
    is dropped; the parser refuses a sweep that sets both explicitly."""
    budget_param = getattr(get_attack(name).cls, "budget_param", None)
    if runner.get("budget") is None or budget_param is None:
        return dict(params)
    return {k: v for k, v in params.items() if k != budget_param}


def _cell(cfg: SweepConfig, m: ModelCfg, a: AttackCfg, d: DatasetCfg, point: dict, params: dict, runner: dict,
          seed: int) -> Cell:
    """One cell: its stored config, and the hash of everything in it that can change the result."""
    tcfg, sha = train_config(cfg, m, seed), weights_key(cfg, m)
    config = {
        "model": model_config(m, sha),
        "training": tcfg,
        "dataset": {"label": d.label, "spec": d.spec, "test_subset": d.test_subset},
        "attack": {"label": a.label, "kind": a.kind, "name": a.attack, "params": params, "runner": runner,
                   "grid_point": point},
        "seed": seed, "package_version": __version__,
    }
    config = json.loads(json.dumps(config, default=str))  # tuples -> lists, as stored
    hashed = {k: v for k, v in config.items() if k != "model"}
    hashed["model"] = _model_key(m, sha)
    # the kind is told by the name (no attack is registered under a certificate's), so it stays out of the hash
    hashed["attack"] = {k: v for k, v in config["attack"].items() if k not in ("label", "kind", "grid_point")}
    hashed["dataset"] = {k: v for k, v in config["dataset"].items() if k != "label"}
    train_hash = config_hash(tcfg) if tcfg is not None else config_hash(_model_key(m, sha))
    return Cell(config_hash(hashed), train_hash, m.label, a.label, d.label, seed, config)


def expand(cfg: SweepConfig) -> list[Cell]:
    """All cells of a sweep in a stable order (model, attack, dataset, grid point, seed).

    Attack parameters are stored with the attack's defaults filled in, so writing a default
    explicitly or leaving it out gives the same cell hash.
    """
    cells: list[Cell] = []
    for m in cfg.models.values():
        for a in cfg.attacks.values():
            if not _applies(a, m):
                continue
            for ds_label in a.datasets or (m.dataset,):
                d = cfg.datasets[ds_label]
                if d.task != m.task:
                    continue
                for point, params, runner in _attack_points(a, d, m.task):
                    cells.extend(_cell(cfg, m, a, d, point, params, runner, seed) for seed in cfg.seeds)
    return cells
