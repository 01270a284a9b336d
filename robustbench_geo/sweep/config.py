"""Sweep definitions: a TOML file -> validated :class:`SweepConfig` -> :class:`Cell` list.

A sweep file has four kinds of tables (every key is optional unless marked *required*)::

    [sweep]
    name = "quick"                 # required; the store in the output folder belongs to this name
    output = "reports/quick"       # output folder (store, artefacts, report, logs)
    seeds = [0, 1]                 # each cell runs once per seed (training and attack)
    device = "cpu"                 # torch device for training and attacks ("cuda" requests GPUs)
    deform_backend = "auto"        # deformable-convolution backend
    checkpoint_cache = ""          # trained models, keyed by training hash ("" = $RBGEO_CACHE/checkpoints)

    [datasets.mnist]               # a label you choose
    spec = "mnist"                 # dataset spec (rbgeo list datasets), options after a colon
    train_subset = 5000            # images: seeded subset of the training split used for training
    test_subset = 500              # images: seeded subset of the test split that is attacked

    [models.cnn]                   # a label you choose (shown in reports)
    model = "cnn"                  # registry name or plug-in (package.module:factory, file.py:factory)
    dataset = "mnist"              # required; label of the training dataset
    epochs = 2                     # also lr, batch_size, augment, trainable, schedule (see training.py)
    params = { num_deform = 3 }    # model factory kwargs

    [attacks.rotation]             # a label you choose
    attack = "grid"                # registry name (rbgeo list attacks) or "none" (clean accuracy); default: the label
    datasets = ["mnist", "mnist-scaled"]  # evaluation datasets (labels); default: each model's own
    models = ["cnn"]               # restrict to these model labels; default: every model of the domain
    params = { steps = 10 }        # fixed attack parameters
    grid = { max_angle_deg = [10, 30] }   # parameter grid (cartesian product)
    budget = [0.05, 0.1]           # graphs: fraction of edges (grid)
    mode = ["evasion"]             # graphs: evasion and/or poisoning (grid)
    batch_size = 256               # images: attack batch size

One *cell* is one trained model x one attack setting x one evaluation dataset x one seed. Its
hash covers its whole configuration (model and kwargs, training settings, datasets and their
variants, attack and parameters with defaults filled in, seed, package version), so a finished cell
is found again whichever file or order produced it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import robustbench_geo

PRESET_DIR = Path(__file__).parent / "presets"

_SWEEP_KEYS = {"name", "output", "seeds", "device", "deform_backend", "checkpoint_cache", "description"}
_DATASET_KEYS = {"spec", "train_subset", "test_subset"}
_TRAIN_KEYS = {"epochs", "lr", "batch_size", "augment", "trainable", "schedule"}
_MODEL_KEYS = {"model", "dataset", "params"} | _TRAIN_KEYS
_ATTACK_KEYS = {"attack", "datasets", "models", "params", "grid", "budget", "mode", "batch_size"}
_TOP_KEYS = {"sweep", "datasets", "models", "attacks"}


@dataclass(frozen=True)
class _NoAttack:
    """``attack = "none"``: clean accuracy only (the baseline row of every table)."""

    name: str = "none"
    domain: str = "any"
    params: dict = field(default_factory=dict)
    cls: type = object

    def describe_params(self) -> list[str]:
        return []


NO_ATTACK = _NoAttack()


class SweepConfigError(ValueError):
    """A sweep file is malformed or names something unknown; the message names the key and line."""


@dataclass(frozen=True)
class DatasetCfg:
    label: str
    spec: str
    task: str
    train_subset: int | None = None
    test_subset: int | None = None


@dataclass(frozen=True)
class ModelCfg:
    label: str
    model: str
    dataset: str  # dataset label
    task: str
    params: dict
    train: dict  # epochs, lr, ... (only the keys given; defaults come from training.default_config)


@dataclass(frozen=True)
class AttackCfg:
    label: str
    attack: str
    domain: str
    datasets: tuple[str, ...] | None
    models: tuple[str, ...] | None
    params: dict
    grid: dict
    runner: dict  # grids of runner kwargs: budget, mode (lists) + fixed batch_size


@dataclass
class SweepConfig:
    name: str
    output: Path
    seeds: list[int]
    device: str
    deform_backend: str
    checkpoint_cache: str
    datasets: dict[str, DatasetCfg]
    models: dict[str, ModelCfg]
    attacks: dict[str, AttackCfg]
    source: str = ""  # file path or preset name
    description: str = ""


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


def _line_of(text: str, path: str) -> str:
    """`` (line N)`` of the line defining the last key of ``path`` (``models.cnn.epochs``), else ``""``.

    The search starts at the header of the key's table (``[models.cnn]``) when there is one.
    """
    parts = path.split(".")
    key, lines = parts[-1], text.splitlines()
    start = 0
    for depth in range(len(parts) - 1, 0, -1):  # the deepest table header naming the path's prefix
        pre = parts[:depth]
        head = re.compile(r"^\s*\[+\s*" + r"\s*\.\s*".join(rf'"?{re.escape(x)}"?' for x in pre) + r"\s*\]")
        hit = next((i for i, ln in enumerate(lines) if head.search(ln)), None)
        if hit is not None:
            start = hit
            break
    pat = re.compile(rf"(^|[\s{{,.\[\"])\"?{re.escape(key)}\"?\s*(=|\]|\.)")
    for i in range(start, len(lines)):
        if pat.search(lines[i].split("#", 1)[0]):
            return f" (line {i + 1})"
    return ""


class _Checker:
    """Collects the file text so every error can name its key and line."""

    def __init__(self, text: str, source: str):
        self.text, self.source = text, source

    def fail(self, path: str, msg: str):
        raise SweepConfigError(f"{self.source}: {path}{_line_of(self.text, path)}: {msg}")

    def keys(self, table: dict, allowed: set, path: str) -> None:
        if not isinstance(table, dict):
            self.fail(path, f"expected a table, got {type(table).__name__}")
        for k in table:
            if k not in allowed:
                self.fail(f"{path}.{k}" if path else k, f"unknown key {k!r}; expected one of {', '.join(sorted(allowed))}")

    def typed(self, value, types, path: str, what: str):
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            self.fail(path, f"expected {what}, got {value!r}")
        if not isinstance(value, types):
            self.fail(path, f"expected {what}, got {value!r}")
        return value


def parse_config(text: str, source: str = "<string>", *, output: str | Path | None = None) -> SweepConfig:
    """Parse and validate a sweep file's text; nothing is loaded or trained.

    Raises:
        SweepConfigError: malformed TOML (with its line), unknown keys, models, datasets, attacks or
            attack parameters (naming the key and its line), or a model/dataset/attack mismatch.
    """
    from robustbench_geo.attacks.base import check_params, get_attack
    from robustbench_geo.data import dataset_info
    from robustbench_geo.models.registry import check_task, get_model_entry

    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SweepConfigError(f"{source}: malformed TOML: {e}") from None
    c = _Checker(text, source)
    c.keys(raw, _TOP_KEYS, "")
    sw = raw.get("sweep", {})
    c.keys(sw, _SWEEP_KEYS, "sweep")
    if "name" not in sw:
        c.fail("sweep", "expected a 'name' key (the store in the output folder belongs to this name)")
    name = c.typed(sw["name"], str, "sweep.name", "a string")
    seeds = sw.get("seeds", [0])
    seeds = [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        c.fail("sweep.seeds", f"expected a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        c.fail("sweep.seeds", f"expected distinct seeds, got {seeds}")

    datasets: dict[str, DatasetCfg] = {}
    for label, d in raw.get("datasets", {}).items():
        p = f"datasets.{label}"
        c.keys(d, _DATASET_KEYS, p)
        spec = c.typed(d.get("spec", label), str, f"{p}.spec", "a dataset spec string")
        try:
            info = dataset_info(spec)
        except KeyError as e:
            c.fail(f"{p}.spec" if "spec" in d else p, str(e))
        subsets = {}
        for k in ("train_subset", "test_subset"):
            if k in d:
                v = c.typed(d[k], int, f"{p}.{k}", "a positive integer")
                if v <= 0:
                    c.fail(f"{p}.{k}", f"expected a positive integer, got {v}")
                if info.task == "graph":
                    c.fail(f"{p}.{k}", "subsets apply to image datasets only (graphs use their split)")
                subsets[k] = v
        datasets[label] = DatasetCfg(label, spec, info.task, **subsets)
    if not datasets:
        c.fail("datasets", "expected at least one [datasets.LABEL] table")

    models: dict[str, ModelCfg] = {}
    for label, m in raw.get("models", {}).items():
        p = f"models.{label}"
        c.keys(m, _MODEL_KEYS, p)
        model = c.typed(m.get("model", label), str, f"{p}.model", "a model name")
        try:
            get_model_entry(model)
        except (KeyError, ValueError, FileNotFoundError) as e:
            c.fail(f"{p}.model" if "model" in m else p, str(e))
        if "dataset" not in m:
            c.fail(p, f"expected a 'dataset' key naming one of the [datasets] labels: {', '.join(datasets)}")
        ds = m["dataset"]
        if ds not in datasets:
            c.fail(f"{p}.dataset", f"unknown dataset label {ds!r}; defined: {', '.join(datasets)}")
        try:
            task = check_task(model, dataset_info(datasets[ds].spec))
        except ValueError as e:
            c.fail(f"{p}.dataset", str(e))
        train = {k: m[k] for k in _TRAIN_KEYS if k in m}
        try:
            from robustbench_geo.training import default_config

            default_config(task, **train)
        except (TypeError, ValueError, KeyError) as e:
            bad = str(e).split(":", 1)[0]
            c.fail(f"{p}.{bad}" if bad in train else p, f"bad training settings: {e}")
        if task == "graph" and train.get("augment", "none") != "none":
            c.fail(f"{p}.augment", "geometric augmentation applies to image datasets only")
        params = c.typed(m.get("params", {}), dict, f"{p}.params", "a table of model kwargs")
        models[label] = ModelCfg(label, model, ds, task, dict(params), train)
    if not models:
        c.fail("models", "expected at least one [models.LABEL] table")

    attacks: dict[str, AttackCfg] = {}
    for label, a in raw.get("attacks", {}).items():
        p = f"attacks.{label}"
        c.keys(a, _ATTACK_KEYS, p)
        name_a = c.typed(a.get("attack", label), str, f"{p}.attack", "an attack name")
        try:
            entry = NO_ATTACK if name_a == "none" else get_attack(name_a)
        except KeyError as e:
            c.fail(f"{p}.attack" if "attack" in a else p, f"{e} (or 'none' for clean accuracy)")
        params = c.typed(a.get("params", {}), dict, f"{p}.params", "a table of attack parameters")
        grid = c.typed(a.get("grid", {}), dict, f"{p}.grid", "a table of parameter lists")
        grid = {k: (v if isinstance(v, list) else [v]) for k, v in grid.items()}
        for k, v in grid.items():
            if not v:
                c.fail(f"{p}.grid.{k}", "expected a non-empty list of values")
        for k in list(params) + list(grid):
            try:
                check_params(entry, {k: None})
            except ValueError as e:
                c.fail(f"{p}.{'grid' if k in grid else 'params'}.{k}", str(e))
        both = set(params) & set(grid)
        if both:
            c.fail(f"{p}.grid.{sorted(both)[0]}", "set either in params or in grid, not both")
        runner: dict = {}
        if name_a == "none" and any(k in a for k in ("budget", "mode", "batch_size")):
            c.fail(p, "attack 'none' (clean accuracy) takes no budget, mode or batch_size")
        if entry.domain == "graph":
            budget = a.get("budget", [None])
            budget = budget if isinstance(budget, list) else [budget]
            for b in budget:
                if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float)) or b < 0):
                    c.fail(f"{p}.budget", f"expected non-negative numbers (fraction of edges or flips per target), got {b!r}")
            mode = a.get("mode", ["evasion"])
            mode = mode if isinstance(mode, list) else [mode]
            for md in mode:
                if md not in ("evasion", "poisoning"):
                    c.fail(f"{p}.mode", f"expected 'evasion' or 'poisoning', got {md!r}")
            runner = {"budget": budget, "mode": mode}
            if "batch_size" in a:
                c.fail(f"{p}.batch_size", "batch_size applies to image attacks only")
        else:
            for k in ("budget", "mode"):
                if k in a:
                    c.fail(f"{p}.{k}", f"{k} applies to graph attacks only; image budgets are attack parameters "
                                       f"({', '.join(entry.params) or 'none'})")
            if "batch_size" in a:
                runner["batch_size"] = c.typed(a["batch_size"], int, f"{p}.batch_size", "a positive integer")
        sel = {}
        for k, pool in (("datasets", datasets), ("models", models)):
            if k in a:
                vals = a[k] if isinstance(a[k], list) else [a[k]]
                for v in vals:
                    if v not in pool:
                        c.fail(f"{p}.{k}", f"unknown {k[:-1]} label {v!r}; defined: {', '.join(pool)}")
                sel[k] = tuple(vals)
        for v in sel.get("datasets", ()):
            if entry.domain != "any" and datasets[v].task != entry.domain:
                c.fail(f"{p}.datasets", f"{name_a!r} is a {entry.domain} attack but dataset {v!r} is {datasets[v].task} data")
        for v in sel.get("models", ()):
            if entry.domain != "any" and models[v].task != entry.domain:
                c.fail(f"{p}.models", f"{name_a!r} is a {entry.domain} attack but model {v!r} is a {models[v].task} model")
        attacks[label] = AttackCfg(label, name_a, entry.domain, sel.get("datasets"), sel.get("models"),
                                   dict(params), grid, runner)
    if not attacks:
        c.fail("attacks", "expected at least one [attacks.LABEL] table")

    cfg = SweepConfig(name=name, output=Path(output or sw.get("output", f"reports/{name}")), seeds=list(seeds),
                      device=str(sw.get("device", "cpu")), deform_backend=str(sw.get("deform_backend", "auto")),
                      checkpoint_cache=str(sw.get("checkpoint_cache", "")), datasets=datasets, models=models,
                      attacks=attacks, source=source, description=str(sw.get("description", "")))
    _check_shapes(cfg, c)
    return cfg


def _check_shapes(cfg: SweepConfig, c: _Checker) -> None:
    """An image model is only evaluated on datasets of its training shape and classes."""
    from robustbench_geo.data import dataset_info

    for a in cfg.attacks.values():
        for m in cfg.models.values():
            if not _applies(a, m) or not a.datasets:
                continue
            tr = dataset_info(cfg.datasets[m.dataset].spec)
            for d in a.datasets:
                ev = dataset_info(cfg.datasets[d].spec)
                if ev.task != tr.task:
                    continue
                if (tr.in_channels, tr.image_size, tr.num_classes) != (ev.in_channels, ev.image_size, ev.num_classes):
                    c.fail(f"attacks.{a.label}.datasets", f"model {m.label!r} is trained on {tr.name} "
                           f"({tr.in_channels}x{tr.image_size}, {tr.num_classes} classes) but {d!r} is "
                           f"{ev.in_channels}x{ev.image_size}, {ev.num_classes} classes")


def load_config(path_or_preset: str | Path, *, output: str | Path | None = None) -> SweepConfig:
    """Read a sweep file, or a preset shipped with the package (``quick``, ``paper``, ...)."""
    p = Path(path_or_preset)
    if p.suffix != ".toml" and not p.exists():
        presets = list_presets()
        if str(path_or_preset) not in presets:
            from robustbench_geo.check import unknown_name_error

            raise unknown_name_error("preset", str(path_or_preset), presets)
        p = PRESET_DIR / f"{path_or_preset}.toml"
        source = f"preset {path_or_preset!r} ({p})"
    else:
        if not p.is_file():
            raise FileNotFoundError(f"sweep file {p} not found")
        source = str(p)
    return parse_config(p.read_text(), source, output=output)


def list_presets() -> list[str]:
    """Names of the sweep presets shipped with the package (``presets/*.toml``)."""
    return sorted(f.stem for f in PRESET_DIR.glob("*.toml"))


def _applies(a: AttackCfg, m: ModelCfg) -> bool:
    return a.domain in (m.task, "any") and (not a.models or m.label in a.models)


def _attack_defaults(name: str) -> dict:
    import inspect

    if name == "none":
        return {}

    from robustbench_geo.attacks.base import get_attack

    return {k: v for k, v in get_attack(name).params.items() if v is not inspect.Parameter.empty}


def train_config(cfg: SweepConfig, m: ModelCfg, seed: int) -> dict:
    """The training part of a cell: what the checkpoint cache is keyed by."""
    from robustbench_geo.training import default_config

    d = cfg.datasets[m.dataset]
    tc = asdict(default_config(m.task, **m.train, seed=seed))
    return {"model": m.model, "model_params": m.params, "dataset": d.spec, "train_subset": d.train_subset,
            "train": tc, "deform_backend": cfg.deform_backend, "package_version": robustbench_geo.__version__}


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
            defaults = _attack_defaults(a.attack)
            keys = sorted(a.grid) + sorted(a.runner.keys() & {"budget", "mode"})
            values = [a.grid[k] for k in sorted(a.grid)] + [a.runner[k] for k in sorted(a.runner.keys() & {"budget", "mode"})]
            for ds_label in a.datasets or (m.dataset,):
                d = cfg.datasets[ds_label]
                if d.task != m.task:
                    continue
                for combo in itertools.product(*values):
                    point = dict(zip(keys, combo))
                    params = {**defaults, **a.params, **{k: v for k, v in point.items() if k in a.grid}}
                    runner = {k: v for k, v in point.items() if k in ("budget", "mode")}
                    if "batch_size" in a.runner:
                        runner["batch_size"] = a.runner["batch_size"]
                    if m.task == "image":
                        runner["n"] = d.test_subset
                    for seed in cfg.seeds:
                        tcfg = train_config(cfg, m, seed)
                        config = {
                            "model": {"label": m.label, "name": m.model, "params": m.params},
                            "training": tcfg,
                            "dataset": {"label": d.label, "spec": d.spec, "test_subset": d.test_subset},
                            "attack": {"label": a.label, "name": a.attack, "params": params, "runner": runner,
                                       "grid_point": point},
                            "seed": seed, "package_version": robustbench_geo.__version__,
                        }
                        config = json.loads(json.dumps(config, default=str))  # tuples -> lists, as stored
                        hashed = {k: v for k, v in config.items() if k != "model"}
                        hashed["model"] = {"name": m.model, "params": m.params}
                        hashed["attack"] = {k: v for k, v in config["attack"].items() if k not in ("label", "grid_point")}
                        hashed["dataset"] = {k: v for k, v in config["dataset"].items() if k != "label"}
                        cells.append(Cell(config_hash(hashed), config_hash(tcfg), m.label, a.label, d.label, seed, config))
    return cells
