"""Sweep definitions: a TOML file -> validated :class:`SweepConfig` (its cells: :mod:`robustbench_geo.sweep.cells`).

A sweep file has four kinds of tables (every key is optional unless marked *required*)::

    [sweep]
    name = "quick"                 # required; the store in the output folder belongs to this name
    output = "reports/quick"       # output folder (store, artefacts, report, logs)
    seeds = [0, 1]                 # each cell runs once per seed (training and attack)
    device = "cpu"                 # torch device for training and attacks ("cuda" requests GPUs)
    deform_backend = "auto"        # deformable-convolution backend
    jobs = 2                       # local worker processes when the command line gives no --jobs (default 1)
    checkpoint_cache = ""          # trained models, keyed by training hash ("" = $RBGEO_CACHE/checkpoints)

    [datasets.mnist]               # a label you choose
    spec = "mnist"                 # dataset spec (rbgeo list datasets), options after a colon
    train_subset = 5000            # images: seeded subset of the training split used for training
    test_subset = 500              # images: seeded subset of the test split that is attacked

    [models.cnn]                   # a label you choose (shown in reports)
    model = "cnn"                  # registry name or plug-in (package.module:factory, file.py:factory)
    dataset = "mnist"              # required; label of the training dataset
    epochs = 2                     # also lr, batch_size, augment, trainable, schedule (see training.py)
    defense = "worst_of_k:k=10"    # images: spatial defense while training (see train_defenses.py)
    params = { num_deform = 3 }    # model factory kwargs
    vote = 10                      # images: attack the test-time majority vote over 10 random transforms

    [models.theirs]                # a trained model, evaluated as given (never trained):
    checkpoint = "checkpoints/cnn" # a checkpoint of rbgeo train (+ model = "f.py:fn" to allow its plug-in)
    dataset = "mnist"              # or: factory = "f.py:fn" with pretrained = true, and optionally
                                   # weights = "w.safetensors", preprocessing = "mean=M,std=S", params

    [attacks.rotation]             # a label you choose
    attack = "grid"                # registry name (rbgeo list attacks) or "none" (clean accuracy); default: the label
    datasets = ["mnist", "mnist-scaled"]  # evaluation datasets (labels); default: each model's own
    models = ["cnn"]               # restrict to these model labels; default: every model of the domain
    params = { steps = 10 }        # fixed attack parameters
    grid = { max_angle_deg = [10, 30] }   # parameter grid (cartesian product)
    budget = [0.05, 0.1]           # graphs: fraction of edges (grid)
    mode = ["evasion"]             # graphs: evasion and/or poisoning (grid)
    batch_size = 256               # images: attack batch size

``[certify.LABEL]`` tables add certification cells (see :mod:`robustbench_geo.sweep.certify_table`).

One *cell* is one trained model x one attack setting x one evaluation dataset x one seed. Its
hash covers its whole configuration (model and kwargs, training settings, datasets and their
variants, attack and parameters with defaults filled in, seed, package version), so a finished cell
is found again whichever file or order produced it. For an evaluated model (``checkpoint`` or
pretrained ``factory``) the model part is its name, kwargs and the SHA-256 of its weights, not
their path: changed weights are new cells (see docs/own-models.md).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from robustbench_geo.attacks.base import check_params, get_attack
from robustbench_geo.check import DeviceUnavailableError, check_device, check_number, check_seed, unknown_name_error
from robustbench_geo.checkpoint import CheckpointError, check_plugin_allowed, read_metadata
from robustbench_geo.data import dataset_info
from robustbench_geo.loading import check_fits, check_model_source, read_weights
from robustbench_geo.models.preprocessing import parse_preprocessing
from robustbench_geo.models.registry import (
    check_parameter_names, check_task, get_model_entry, is_plugin_spec, model_kwargs_for,
)
from robustbench_geo.ops.deform_conv import resolve_backend
from robustbench_geo.sweep.certify_table import parse_certify_tables
from robustbench_geo.train_defenses import get_defense
from robustbench_geo.training import default_config

PRESET_DIR = Path(__file__).parent / "presets"

_SWEEP_KEYS = {"name", "output", "seeds", "device", "deform_backend", "checkpoint_cache", "description", "jobs"}
_DATASET_KEYS = {"spec", "train_subset", "test_subset"}
_TRAIN_KEYS = {"epochs", "lr", "batch_size", "augment", "trainable", "schedule", "defense"}
_EVALUATED_KEYS = {"checkpoint", "factory", "pretrained", "weights", "preprocessing"}
_MODEL_KEYS = {"model", "dataset", "params", "vote"} | _TRAIN_KEYS | _EVALUATED_KEYS
_ATTACK_KEYS = {"attack", "datasets", "models", "params", "grid", "budget", "mode", "batch_size"}
_TOP_KEYS = {"sweep", "datasets", "models", "attacks", "certify"}


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
    source: str = "train"  # "train" (the sweep trains it), "checkpoint" or "pretrained" (evaluated as given)
    checkpoint: str | None = None  # checkpoint stem (source "checkpoint")
    plugin: str | None = None  # the plug-in the sweep file allows a checkpoint to import (its ``model`` key)
    weights: str | None = None  # weights file of a pretrained factory
    preprocessing: dict | None = None  # {"mean": [...], "std": [...]} of a pretrained factory
    vote: int | None = None  # images: evaluated as a majority vote over this many random transforms (models/vote.py)

    @property
    def evaluated(self) -> bool:
        """Evaluated as given (checkpoint or pretrained factory), never trained by the sweep."""
        return self.source != "train"


@dataclass(frozen=True)
class AttackCfg:
    """An ``[attacks.LABEL]`` table (kind ``"attack"``: ``attack`` is a registered attack) or a ``[certify.LABEL]``
    table (kind ``"certificate"``, named :data:`~robustbench_geo.sweep.store.CERTIFICATE`)."""
    label: str
    attack: str
    domain: str
    datasets: tuple[str, ...] | None
    models: tuple[str, ...] | None
    params: dict
    grid: dict
    runner: dict  # grids of runner kwargs: budget, mode (lists) + fixed batch_size
    kind: str = "attack"


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
    jobs: int = 1  # local worker processes unless the command line says otherwise (``--jobs``)
    #: evaluated models' weight hashes (label -> SHA-256), filled when the cells are first expanded
    weights_keys: dict[str, str] = field(default_factory=dict, repr=False, compare=False)


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

    def lookup(self, table: dict, key: str, default: str, path: str, what: str, getter, errors=(KeyError,),
               hint: str = ""):
        """``(name, getter(name))`` for the string ``table[key]`` (else ``default``); a failed lookup names the key."""
        name = self.typed(table.get(key, default), str, f"{path}.{key}", what)
        try:
            return name, getter(name)
        except errors as e:
            self.fail(f"{path}.{key}" if key in table else path, f"{e}{hint}")

    def typed(self, value, types, path: str, what: str):
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            self.fail(path, f"expected {what}, got {value!r}")
        if not isinstance(value, types):
            self.fail(path, f"expected {what}, got {value!r}")
        return value


def parse_config(text: str, source: str = "<string>", *, output: str | Path | None = None) -> SweepConfig:
    """Parse and validate a sweep file's text; nothing is trained or attacked.

    Stages: TOML -> ``[sweep]`` -> ``[datasets]`` -> ``[models]`` -> ``[attacks]`` -> cross checks.
    Evaluated models (``checkpoint =``, or ``factory =`` with ``pretrained = true``) are checked here
    (a weights file is read, never unpickled; a checkpoint's metadata is read), and hashed, a factory
    without weights built, when the cells are expanded (:func:`robustbench_geo.sweep.cells.weights_key`).

    Raises:
        SweepConfigError: malformed TOML (with its line), unknown keys, models, datasets, attacks or
            attack parameters (naming the key and its line), or a model/dataset/attack mismatch.
    """
    raw, c = _read_toml(text, source)
    sw = _parse_sweep_table(raw.get("sweep", {}), c)
    datasets = _parse_datasets(raw.get("datasets", {}), c)
    models = _parse_models(raw.get("models", {}), c, datasets)
    attacks = _parse_attacks(raw.get("attacks", {}), c, datasets, models, certify=raw.get("certify", {}))
    cfg = SweepConfig(name=sw["name"], output=Path(output or sw.get("output", f"reports/{sw['name']}")),
                      seeds=sw["seeds"], device=str(sw.get("device", "cpu")),
                      deform_backend=str(sw.get("deform_backend", "auto")),
                      checkpoint_cache=str(sw.get("checkpoint_cache", "")), datasets=datasets, models=models,
                      attacks=attacks, source=source, description=str(sw.get("description", "")), jobs=sw["jobs"])
    _check_shapes(cfg, c)
    _check_poisoning(cfg, c)
    return cfg


def _read_toml(text: str, source: str) -> tuple[dict, _Checker]:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SweepConfigError(f"{source}: malformed TOML: {e}") from None
    c = _Checker(text, source)
    c.keys(raw, _TOP_KEYS, "")
    return raw, c


def _parse_sweep_table(sw: dict, c: _Checker) -> dict:
    """``[sweep]``: the name (required) and seeds validated; returns the table with ``seeds`` as a list."""
    c.keys(sw, _SWEEP_KEYS, "sweep")
    if "name" not in sw:
        c.fail("sweep", "expected a 'name' key (the store in the output folder belongs to this name)")
    if not c.typed(sw["name"], str, "sweep.name", "a string").strip():
        c.fail("sweep.name", "expected a non-empty name (the store in the output folder belongs to it), got ''")
    if "output" in sw and not c.typed(sw["output"], str, "sweep.output", "a folder path (a string)").strip():
        c.fail("sweep.output", "expected a folder path, got '' (leave the key out for reports/NAME)")
    seeds = sw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        c.fail("sweep.seeds", f"expected a list of seeds such as [0, 1, 2], got {seeds} (one seed is written "
                              f"[{seeds}]; --seeds {seeds} on the command line means {seeds} seeds)")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        c.fail("sweep.seeds", f"expected a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        c.fail("sweep.seeds", f"expected distinct seeds, got {seeds}")
    for i, s in enumerate(seeds):
        try:
            check_seed(s, f"seeds[{i}]")
        except ValueError as e:
            c.fail("sweep.seeds", str(e))
    jobs = sw.get("jobs", 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        c.fail("sweep.jobs", f"expected a positive integer (local worker processes), got {jobs!r}")
    for key, check in (("device", check_device), ("deform_backend", resolve_backend)):
        try:
            value = c.typed(sw.get(key, "cpu" if key == "device" else "auto"), str, f"sweep.{key}", "a string")
            value == "auto" or check(value)  # "auto" is always valid (resolving it would build kernels)
        except (ValueError, KeyError) as e:
            c.fail(f"sweep.{key}", str(e))
        except DeviceUnavailableError:
            pass  # a valid name: a dry run of a GPU sweep works on any machine; running it checks the device
    return {**sw, "seeds": list(seeds), "jobs": jobs}


def _parse_datasets(tables: dict, c: _Checker) -> dict[str, DatasetCfg]:
    datasets = {label: _parse_dataset(label, d, c) for label, d in tables.items()}
    if not datasets:
        c.fail("datasets", "expected at least one [datasets.LABEL] table")
    return datasets


def _parse_dataset(label: str, d: dict, c: _Checker) -> DatasetCfg:
    p = f"datasets.{label}"
    c.keys(d, _DATASET_KEYS, p)
    spec, info = c.lookup(d, "spec", label, p, "a dataset spec string", dataset_info)
    subsets = {}
    for k in ("train_subset", "test_subset"):
        if k in d:
            v = c.typed(d[k], int, f"{p}.{k}", "a positive integer")
            if v <= 0:
                c.fail(f"{p}.{k}", f"expected a positive integer, got {v}")
            if info.task == "graph":
                c.fail(f"{p}.{k}", "subsets apply to image datasets only (graphs use their split)")
            subsets[k] = v
    return DatasetCfg(label, spec, info.task, **subsets)


def _parse_models(tables: dict, c: _Checker, datasets: dict[str, DatasetCfg]) -> dict[str, ModelCfg]:
    """Each ``[models.LABEL]`` is trained (``model =``), a checkpoint, or a pretrained factory."""
    models = {}
    for label, m in tables.items():
        p = f"models.{label}"
        c.keys(m, _MODEL_KEYS, p)
        if "checkpoint" in m and "factory" in m:
            c.fail(f"{p}.factory", "expected checkpoint = ... or factory = ..., got both")
        parse = (_parse_checkpoint_model if "checkpoint" in m else _parse_pretrained_model if "factory" in m
                 else _parse_trained_model)
        models[label] = _with_vote(parse(label, {k: v for k, v in m.items() if k != "vote"}, p, c, datasets), m, p, c)
    if not models:
        c.fail("models", "expected at least one [models.LABEL] table")
    return models


def _with_vote(cfg: ModelCfg, m: dict, p: str, c: _Checker) -> ModelCfg:
    """``vote = K``: the model is attacked as deployed behind a majority vote of K random transforms (fresh
    draws on every call, seeded by the cell's seed); its training, and so its cached checkpoint, is unchanged."""
    if "vote" not in m:
        return cfg
    k = c.typed(m["vote"], int, f"{p}.vote", "a positive number of votes (an integer)")
    if k < 1:
        c.fail(f"{p}.vote", f"expected a positive number of votes, got {k}")
    if cfg.task != "image":
        c.fail(f"{p}.vote", "the majority vote over random transforms applies to image models only")
    return dataclasses.replace(cfg, vote=k)


def _model_dataset(m: dict, p: str, c: _Checker, datasets: dict[str, DatasetCfg]) -> DatasetCfg:
    """The model's ``dataset`` label (required): its own evaluation data and the shape it is built for."""
    if "dataset" not in m:
        c.fail(p, f"expected a 'dataset' key naming one of the [datasets] labels: {', '.join(datasets)}")
    ds = m["dataset"]
    if ds not in datasets:
        c.fail(f"{p}.dataset", f"unknown dataset label {ds!r}; defined: {', '.join(datasets)}")
    return datasets[ds]


def _model_name(m: dict, key: str, default: str, p: str, c: _Checker) -> str:
    """``m[key]`` (or ``default``), checked to be a registered model or an importable plug-in."""
    return c.lookup(m, key, default, p, "a model name", get_model_entry, (KeyError, ValueError, FileNotFoundError))[0]


def _only(m: dict, allowed: set, p: str, c: _Checker, kind: str) -> None:
    for k in m:
        if k not in allowed:
            c.fail(f"{p}.{k}", f"{kind}: {k!r} does not apply; expected only {', '.join(sorted(allowed))}")


def _parse_trained_model(label: str, m: dict, p: str, c: _Checker, datasets: dict[str, DatasetCfg]) -> ModelCfg:
    """``model = NAME`` (+ training settings): trained by the sweep, cached by its training hash."""
    _only(m, {"model", "dataset", "params"} | _TRAIN_KEYS, p, c,
          "a model the sweep trains (an already trained one is checkpoint = ..., or factory = ... with pretrained = true)")
    model = _model_name(m, "model", label, p, c)
    d = _model_dataset(m, p, c, datasets)
    try:
        task = check_task(model, dataset_info(d.spec))
    except ValueError as e:
        c.fail(f"{p}.dataset", str(e))
    train = {k: m[k] for k in _TRAIN_KEYS if k in m}
    if "defense" in train:
        c.typed(train["defense"], str, f"{p}.defense", "a defense spec such as 'worst_of_k:k=10'")
        try:
            get_defense(train["defense"])
        except (ValueError, KeyError) as e:
            c.fail(f"{p}.defense", str(e))
    try:
        default_config(task, **train)
    except (TypeError, ValueError, KeyError) as e:
        bad = str(e).split(":", 1)[0]
        c.fail(f"{p}.{bad}" if bad in train else p, f"bad training settings: {e}")
    if task == "graph" and train.get("augment", "none") != "none":
        c.fail(f"{p}.augment", "geometric augmentation applies to image datasets only")
    if task == "graph" and train.get("defense", "none") != "none":
        c.fail(f"{p}.defense", "spatial defenses apply to image datasets only")
    params = c.typed(m.get("params", {}), dict, f"{p}.params", "a table of model kwargs")
    try:  # names the factory does not take, and values the data set (in_channels = 3 on MNIST), fail here, not in a cell
        check_parameter_names(model, params)
        if task == "image":
            model_kwargs_for(model, dataset_info(d.spec), **params)
    except (TypeError, ValueError) as e:
        c.fail(f"{p}.params", str(e))
    return ModelCfg(label, model, d.label, task, dict(params), train)


def _parse_checkpoint_model(label: str, m: dict, p: str, c: _Checker, datasets: dict[str, DatasetCfg]) -> ModelCfg:
    """``checkpoint = STEM``: evaluated, never trained; ``model`` may only allow the checkpoint's plug-in."""
    _only(m, {"checkpoint", "model", "dataset"}, p, c, "a checkpoint model is evaluated, never trained")
    path = c.typed(m["checkpoint"], str, f"{p}.checkpoint", "a checkpoint path (STEM of STEM.json + STEM.safetensors)")
    plugin = c.typed(m["model"], str, f"{p}.model", "a plug-in spec") if "model" in m else None
    d = _model_dataset(m, p, c, datasets)
    try:
        meta = read_metadata(path)
        check_plugin_allowed(meta, plugin, f"checkpoint {path}")  # nothing named by the file is imported before this
        check_fits(meta, dataset_info(d.spec), f"checkpoint {path}")
    except (CheckpointError, ValueError) as e:
        c.fail(f"{p}.checkpoint", str(e))
    if plugin is not None and plugin != meta["model"] and not is_plugin_spec(meta["model"]):  # plug-ins: checked above
        c.fail(f"{p}.model", f"checkpoint {path} is a {meta['model']!r}; with a checkpoint, model may only name its plug-in")
    return ModelCfg(label, meta["model"], d.label, meta.get("task", "image"), dict(meta["model_kwargs"]), {},
                    source="checkpoint", checkpoint=path, plugin=plugin)


def _parse_pretrained_model(label: str, m: dict, p: str, c: _Checker, datasets: dict[str, DatasetCfg]) -> ModelCfg:
    """``factory = SPEC`` with ``pretrained = true`` (+ ``weights``, ``preprocessing``, ``params``): never trained."""
    _only(m, {"factory", "pretrained", "weights", "preprocessing", "params", "dataset"}, p, c,
          "a pretrained factory model is evaluated, never trained")
    if m.get("pretrained") is not True:
        c.fail(f"{p}.pretrained" if "pretrained" in m else p,
               "factory = ... models are evaluated as they come: expected pretrained = true (to train a model, use "
               "model = ... instead)")
    spec = _model_name(m, "factory", "", p, c)
    d = _model_dataset(m, p, c, datasets)
    info = dataset_info(d.spec)
    try:
        task = check_task(spec, info)
    except ValueError as e:
        c.fail(f"{p}.dataset", str(e))
    params = dict(c.typed(m.get("params", {}), dict, f"{p}.params", "a table of factory kwargs"))
    weights = c.typed(m["weights"], str, f"{p}.weights", "a weights file path") if "weights" in m else None
    prep = m.get("preprocessing")
    try:
        prep = parse_preprocessing(prep)
    except ValueError as e:
        c.fail(f"{p}.preprocessing", str(e))
    if prep is not None and task == "graph":
        c.fail(f"{p}.preprocessing", "preprocessing (mean/std per channel) applies to image models only")
    prep = None if prep is None else {"mean": list(prep[0]), "std": list(prep[1])}
    if weights is not None:
        try:
            read_weights(weights)  # a bad file fails here, before any cell runs
        except ValueError as e:
            c.fail(f"{p}.weights", str(e))
    else:
        try:
            check_model_source(spec)  # built (and its weights hashed) when the cells are expanded
        except ValueError as e:
            c.fail(f"{p}.factory", str(e))
    return ModelCfg(label, spec, d.label, task, params, {}, source="pretrained", weights=weights, preprocessing=prep)


def _parse_attacks(tables: dict, c: _Checker, datasets: dict[str, DatasetCfg],
                   models: dict[str, ModelCfg], certify: dict | None = None) -> dict[str, AttackCfg]:
    attacks = {label: _parse_attack(label, a, c, datasets, models) for label, a in tables.items()}
    attacks.update(parse_certify_tables(certify or {}, c, datasets, models, AttackCfg))  # [certify.LABEL]
    if not attacks:
        c.fail("attacks", "expected at least one [attacks.LABEL] or [certify.LABEL] table")
    tasks = {d.task for d in datasets.values()}
    for label, a in tables.items():  # a table that matches no dataset would silently add no cell
        domain = attacks[label].domain
        if domain in ("image", "graph") and domain not in tasks:
            c.fail(f"attacks.{label}.attack", f"{attacks[label].attack!r} is a {domain} attack but the sweep has no "
                                              f"{domain} dataset ({', '.join(sorted(tasks))} only): it would run no cell")
    return attacks


def _parse_attack(label: str, a: dict, c: _Checker, datasets: dict[str, DatasetCfg],
                  models: dict[str, ModelCfg]) -> AttackCfg:
    p = f"attacks.{label}"
    c.keys(a, _ATTACK_KEYS, p)
    name, entry = c.lookup(a, "attack", label, p, "an attack name", get_attack, hint=" (or 'none' for clean accuracy)")
    params, grid = _attack_params(a, p, c, entry)
    runner = _attack_runner(a, p, c, entry, name)
    budget_param = getattr(entry.cls, "budget_param", None)
    if "budget" in a and budget_param in {**params, **grid}:
        c.fail(f"{p}.budget", f"budget and {budget_param} (in {'grid' if budget_param in grid else 'params'}) both set "
                              f"the budget of {name!r}; give only one")
    sel = _attack_selection(a, p, c, entry, name, datasets, models)
    return AttackCfg(label, name, entry.domain, sel.get("datasets"), sel.get("models"), dict(params), grid, runner)


def _attack_params(a: dict, p: str, c: _Checker, entry) -> tuple[dict, dict]:
    """Fixed ``params`` and the ``grid`` (lists), each name checked against the attack's parameters."""
    params = c.typed(a.get("params", {}), dict, f"{p}.params", "a table of attack parameters")
    grid = c.typed(a.get("grid", {}), dict, f"{p}.grid", "a table of parameter lists")
    grid = {k: (v if isinstance(v, list) else [v]) for k, v in grid.items()}
    for k, v in grid.items():
        if not v:
            c.fail(f"{p}.grid.{k}", "expected a non-empty list of values")
    for k, values in [*((k, [v]) for k, v in params.items()), *grid.items()]:
        for v in values:  # names, and each value through the shared numeric check
            try:
                check_params(entry, {k: v})
            except ValueError as e:
                c.fail(f"{p}.{'grid' if k in grid else 'params'}.{k}", str(e))
    both = set(params) & set(grid)
    if both:
        c.fail(f"{p}.grid.{sorted(both)[0]}", "set either in params or in grid, not both")
    return params, grid


def _attack_runner(a: dict, p: str, c: _Checker, entry, name: str) -> dict:
    """Runner settings: graph ``budget`` and ``mode`` grids, or the image ``batch_size``."""
    runner: dict = {}
    if name == "none" and any(k in a for k in ("budget", "mode", "batch_size")):
        c.fail(p, "attack 'none' (clean accuracy) takes no budget, mode or batch_size")
    if entry.domain == "graph":
        budget = a.get("budget", [None])
        budget = budget if isinstance(budget, list) else [budget]
        for b in budget:
            try:
                b is None or check_number(b, "budget (fraction of edges or flips per target)", low=0.0)
            except ValueError as e:
                c.fail(f"{p}.budget", str(e))
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
            if runner["batch_size"] < 1:
                c.fail(f"{p}.batch_size", f"expected a positive integer, got {runner['batch_size']}")
    return runner


def _attack_selection(a: dict, p: str, c: _Checker, entry, name: str, datasets: dict[str, DatasetCfg],
                      models: dict[str, ModelCfg]) -> dict:
    """``datasets`` and ``models`` restrictions: known labels of the attack's domain."""
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
            c.fail(f"{p}.datasets", f"{name!r} is a {entry.domain} attack but dataset {v!r} is {datasets[v].task} data")
    for v in sel.get("models", ()):
        if entry.domain != "any" and models[v].task != entry.domain:
            c.fail(f"{p}.models", f"{name!r} is a {entry.domain} attack but model {v!r} is a {models[v].task} model")
    return sel


def _check_poisoning(cfg: SweepConfig, c: _Checker) -> None:
    """Poisoning retrains the model from its recipe: a pretrained factory model has none."""
    for a in cfg.attacks.values():
        if "poisoning" not in a.runner.get("mode", ()):
            continue
        for m in cfg.models.values():
            if _applies(a, m) and m.source == "pretrained":
                c.fail(f"attacks.{a.label}.mode", f"poisoning retrains the model from its training recipe, but model "
                       f"{m.label!r} is a pretrained factory without one; restrict the attack with models = [...] or "
                       f"use mode = ['evasion']")


def _check_shapes(cfg: SweepConfig, c: _Checker) -> None:
    """An image model is only evaluated on datasets of its training shape and classes."""
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
            raise unknown_name_error("preset", str(path_or_preset), presets)
        p = PRESET_DIR / f"{path_or_preset}.toml"
        source = f"preset {path_or_preset!r} ({p})"
    else:
        if not p.is_file():
            raise FileNotFoundError(f"sweep file {p} not found")
        source = str(p)
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise SweepConfigError(f"{source}: expected a UTF-8 text file (TOML), got byte {e.object[e.start]:#04x} at "
                               f"offset {e.start}") from None
    return parse_config(text, source, output=output)


def list_presets() -> list[str]:
    """Names of the sweep presets shipped with the package (``presets/*.toml``)."""
    return sorted(f.stem for f in PRESET_DIR.glob("*.toml"))


def _applies(a: AttackCfg, m: ModelCfg) -> bool:
    return a.domain in (m.task, "any") and (not a.models or m.label in a.models)
