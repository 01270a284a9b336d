"""The Python API: benchmark your own trained model in one call.

>>> import robustbench_geo as rbg                                           # doctest: +SKIP
>>> result = rbg.benchmark(model, data=(x_test, y_test), threat_model="rotation-translation")  # doctest: +SKIP
>>> print(result)                                                           # doctest: +SKIP
rotation-translation (grid) on 1000 images: clean 98.9 % [98.1, 99.4], robust 31.2 % [28.4, 34.1] (95 % Wilson)

Conventions: images are ``(N, C, H, W)`` float tensors in ``[0, 1]`` (pixel space; a model that
expects normalised inputs gets ``preprocessing``, applied inside a wrapper so that attacks and the
re-verification stay in pixel space); labels are ``(N,)`` int64. The model stays where it is, is
evaluated in eval mode and left in the mode it came in (a result says when that was train mode); the
data moves to the model's device (``device=None``).
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn

from robustbench_geo._version import versions
from robustbench_geo.attacks import list_attacks
from robustbench_geo.check import check_device, check_images, check_labels, check_materialised, check_number
from robustbench_geo.checkpoint import load_checkpoint
from robustbench_geo.compose import evaluate_model
from robustbench_geo.data import load_dataset
from robustbench_geo.data.base import GraphDataset, ImageDataset
from robustbench_geo.evaluation.threat_models import ThreatModel, get_threat_model, list_threat_models
from robustbench_geo.models import create_model, list_models
from robustbench_geo.loading import evaluation_data, load_model
from robustbench_geo.models.predict import model_device
from robustbench_geo.models.preprocessing import Preprocessed, with_preprocessing
from robustbench_geo.results_schema import dumps, model_entry, result_row, write_json
from robustbench_geo.stats import accuracy_interval


def checked_kwargs(fn):
    """Unknown keyword arguments raise ``TypeError`` naming close matches and the valid ones."""
    sig = inspect.signature(fn)
    names = [p.name for p in sig.parameters.values() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_any = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not takes_any:
            for k in kwargs:
                if k not in names:
                    close = difflib.get_close_matches(k, names, n=2)
                    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                    raise TypeError(f"{fn.__name__}() got an unknown keyword argument {k!r}.{hint} "
                                    f"Valid keyword arguments: {', '.join(names)}")
        return fn(*args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class Accuracy:
    """An accuracy with its sample size and 95 % Wilson score interval (fractions in ``[0, 1]``)."""

    value: float
    n: int
    low: float
    high: float

    @classmethod
    def of(cls, value: float, n: int) -> "Accuracy":
        low, high = accuracy_interval(value, n)
        return cls(float(value), int(n), low, high)

    def __float__(self) -> float:
        return self.value

    def __str__(self) -> str:
        if math.isnan(self.value):
            return f"n/a (n={self.n})"
        return f"{100 * self.value:.1f} % [{100 * self.low:.1f}, {100 * self.high:.1f}] (n={self.n})"


@dataclass(frozen=True, eq=False)
class BenchmarkResult:
    """What :func:`benchmark` returns.

    Attributes:
        threat_model: the threat model's name (or the attack's, for a plain attack).
        attack: the registered attack that ran; params: its parameters (defaults filled in).
        clean_accuracy, robust_accuracy: :class:`Accuracy` (value, n, 95 % Wilson interval). For
            ``targeted`` the robust accuracy is over the attacked targets, the clean one over the test nodes.
        success_rate: fooled among the samples correct before the attack.
        metrics: every number the runner measured (work counts, flips, verification mismatches ...).
        rows: one row per image, test node or target (labels, predictions, parameters found).
        config: everything needed to reproduce the run: threat model, data, model, seed, versions.
        seconds: wall time of the evaluation.
    """

    threat_model: str
    attack: str
    params: dict
    clean_accuracy: Accuracy
    robust_accuracy: Accuracy
    success_rate: float
    metrics: dict
    rows: pd.DataFrame = field(repr=False)
    config: dict = field(repr=False)
    seconds: float = 0.0

    def __str__(self) -> str:
        name = self.threat_model if self.threat_model == self.attack else f"{self.threat_model} ({self.attack})"
        mode = ("; evaluated in eval mode, the model came in train mode and was put back"
                if self.config["model"].get("given_in_train_mode") else "")
        return (f"{name} on {self.config['data']['description']}: "
                f"clean {self.clean_accuracy}, robust {self.robust_accuracy} (95 % Wilson intervals{mode})")

    def to_dict(self) -> dict:
        """RobustBench-style entry (:mod:`robustbench_geo.results_schema`, kind ``"model"``, shared with the
        report's ``json/<model>.json``); fractions in ``[0, 1]``."""
        cfg, clean, robust = self.config, self.clean_accuracy, self.robust_accuracy
        row = result_row(dataset=cfg["data"]["name"], attack=self.threat_model, attack_name=self.attack,
                         setting=self.params, seeds=1, n=robust.n, clean_acc=clean.value, clean_ci=(clean.low, clean.high),
                         robust_acc=robust.value, robust_ci=(robust.low, robust.high), success_rate=self.success_rate)
        return model_entry(name=cfg["model"]["name"], model=cfg["model"]["class"], clean_acc=clean.value, results=[row],
                           seeds=[cfg["seed"]], versions=cfg["versions"], config=cfg)

    def to_json(self, path: str | Path | None = None, indent: int = 2) -> str:
        """The :meth:`to_dict` entry as JSON text (also written to ``path`` when given)."""
        doc = self.to_dict()
        return dumps(doc, indent) if path is None else write_json(path, doc, indent)


class AtMost(int):
    """The default ``n_examples``: this many images, or all of the given ones when there are fewer (an
    explicit ``n_examples`` larger than the data given is an error, never cut down to the data)."""

    def __repr__(self) -> str:
        return f"AtMost({int(self)})"


@checked_kwargs
def benchmark(model: nn.Module, data="mnist", threat_model: str = "rotation-translation", *,
              n_examples: int | None = AtMost(1000),
              device=None, batch_size: int | None = None, seed: int = 0, preprocessing=None, params: dict | None = None,
              data_root=None, progress: bool = False) -> BenchmarkResult:
    """Evaluate ``model`` under a named threat model (or any registered attack) and summarise.

    Args:
        model: an image classifier ``(B, C, H, W)`` in ``[0, 1]`` -> ``(B, num_classes)`` logits, or a
            graph model ``forward(x, edge_index, edge_weight=None)`` -> ``(N, num_classes)``.
        data: a dataset name or spec (``"mnist"``, ``"mnist-scaled"``, ``"cora"``; the test split, a
            seeded subset of ``n_examples`` images), an ``(x, y)`` pair of tensors, a
            ``torch.utils.data.Dataset`` of ``(image, label)`` (the first ``n_examples``), a PyG
            ``Data`` with ``train/val/test_mask`` or a loaded dataset.
        threat_model: a name of :func:`list_threat_models` or a registered attack (:func:`list_attacks`).
        n_examples: images evaluated (``None``: all); graphs use their test nodes. The default is 1000,
            or all of the images given when there are fewer; a number larger than the images given is an error.
        device: where the model runs; ``None``: where it is (a model elsewhere runs as a copy).
        batch_size: images per attack call (default 256; compute only).
        seed: the attack seed (and the subset seed for named image datasets).
        preprocessing: ``(mean, std)``, ``"mean=0.1307,std=0.3081"`` or a callable applied to ``[0, 1]``
            images inside the model (images only).
        params: attack parameters that override the threat model's.
        data_root: where named datasets live (default ``$RBGEO_DATA``).
        progress: show progress bars.

    Returns:
        :class:`BenchmarkResult`.

    Raises:
        UnknownNameError: an unknown threat model (listing the valid ones); TypeError: an unknown
            keyword argument; ValueError: data or a model output that does not fit.
    """
    tm = get_threat_model(threat_model)
    if params is not None and not isinstance(params, dict):
        raise TypeError(f"params: expected a dict of attack parameters such as {{'max_angle_deg': 30}}, got {params!r}")
    if device is not None:
        try:
            check_device(device)
        except (ValueError, RuntimeError) as e:
            raise type(e)(f"device: {e}") from None
    ds, described = _dataset(data, n_examples, seed, data_root)
    domain = "graph" if isinstance(ds, GraphDataset) else "image"
    if tm.domain not in (domain, "any"):
        raise ValueError(f"threat model {threat_model!r} is for {tm.domain} data but the data are {domain} data; "
                         f"{domain} threat models: {', '.join(list_threat_models(domain))}")
    net = _wrap(model, preprocessing, domain)
    num_classes = _check_model(net, ds)
    given_in_train_mode = net.training  # evaluated in eval mode (dropout off, batch-norm statistics fixed)
    options: dict = {"progress": progress, "device": device, **tm.options}
    if domain == "image":
        if batch_size is not None:
            options["batch_size"] = batch_size
    else:
        if batch_size is not None:
            raise ValueError("batch_size: applies to image data; graphs are evaluated full-batch")
        if options.get("mode") == "poisoning":
            options["fresh_model"] = functools.partial(_reinitialised, net)
    outcome = evaluate_model(net, ds, tm.attack, {**tm.params, **(params or {})}, seed=seed, **options)
    result = _result(tm, outcome, net, ds, described, num_classes, seed, device, batch_size, preprocessing, n_examples)
    result.config["model"].update(evaluated_in="eval mode", given_in_train_mode=given_in_train_mode)
    return result


@checked_kwargs
def evaluate(model: nn.Module, data, attack: str = "none", *, seed: int = 0, device=None, **params) -> BenchmarkResult:
    """Run one registered attack with ``params`` on all of ``data`` (a thin form of :func:`benchmark`).

    >>> rbg.evaluate(model, (x, y), "grid", max_angle_deg=10, angle_steps=11)   # doctest: +SKIP

    Unknown attack parameters raise ``ValueError`` listing the attack's parameters.
    """
    return benchmark(model, data, attack, n_examples=None, seed=seed, device=device, params=params)


def _dataset(data, n_examples, seed, data_root):
    """The data as an ``ImageDataset``/``GraphDataset`` and a JSON-ready description."""
    at_most = isinstance(n_examples, AtMost)
    if n_examples is not None:
        n_examples = check_number(n_examples, "n_examples (images; None: all)", integer=True, low=1)
    if isinstance(data, str):
        ds = evaluation_data(data, n=n_examples, seed=seed, root=data_root)
        return ds, {"name": data, "kind": "registered", "split": "test", "description": _describe(ds)}
    if isinstance(data, GraphDataset):
        return data, {"name": data.name, "kind": "graph", "description": _describe(data)}
    if hasattr(data, "edge_index") and hasattr(data, "x"):
        ds = GraphDataset.from_pyg(data)
        return ds, {"name": "pyg", "kind": "torch_geometric.data.Data", "description": _describe(ds)}
    if isinstance(data, ImageDataset):
        images, labels, name = data.images, data.labels, data.name
    elif isinstance(data, (tuple, list)) and len(data) == 2 and any(_array_like(t) for t in data):
        name = "tensors"
        images, labels = _as_tensor(data[0]), _as_tensor(data[1])
    elif isinstance(data, torch.utils.data.Dataset):
        _check_count(n_examples, len(data), at_most)
        (images, labels), name = _stack(data, n_examples), type(data).__name__
    elif isinstance(data, (tuple, list)) and len(data) == 2:  # e.g. two nested lists: which dtype is not ours to guess
        raise TypeError(f"data: expected an (x, y) pair of tensors or numpy arrays, got a {type(data).__name__} of "
                        f"({type(data[0]).__name__}, {type(data[1]).__name__}); pass (torch.tensor(x, dtype=torch.float32), "
                        "torch.tensor(y)): images (N, C, H, W) in [0, 1], labels (N,) class ids")
    else:
        raise TypeError("data: expected a dataset name, an (x, y) pair of tensors, a torch.utils.data.Dataset, "
                        f"or a PyG Data with masks, got {type(data).__name__}")
    _check_images(images, labels)
    _check_count(n_examples, len(labels), at_most)
    images, labels = images[:n_examples], labels[:n_examples]
    ds = ImageDataset(name, images.detach().float(), labels.detach().long(), [str(i) for i in range(int(labels.max()) + 1)]
                      if labels.numel() else [], {"source": name, "first": len(labels)})
    return ds, {"name": name, "kind": type(data).__name__, "description": _describe(ds)}


def _check_count(n_examples, available: int, at_most: bool) -> None:
    """An explicit ``n_examples`` must not exceed the samples given (it would be cut down to them in silence)."""
    if n_examples is not None and not at_most and available:
        check_number(n_examples, f"n_examples (images; None: all; {available} given)", integer=True, low=1,
                     high=available)


def _stack(dataset, n_examples):
    n = len(dataset) if n_examples is None else min(len(dataset), n_examples)
    xs, ys = [], []
    for i in range(n):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2 or not isinstance(item[0], torch.Tensor):
            raise TypeError(f"data[{i}]: expected an (image tensor (C, H, W), label) pair, got {type(item).__name__}")
        xs.append(item[0])
        ys.append(int(item[1]))
    if not xs:
        raise ValueError("data: expected at least one example, got an empty dataset")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def _check_images(images: torch.Tensor, labels: torch.Tensor) -> None:
    check_images(images, "images")
    check_labels(labels, images.shape[0], "labels")


def _array_like(value) -> bool:
    return isinstance(value, torch.Tensor) or type(value).__module__ == "numpy"


def _as_tensor(value):
    """numpy arrays become tensors (sharing memory); anything else is left for the checks to name."""
    return torch.from_numpy(value) if type(value).__module__ == "numpy" and hasattr(value, "dtype") else value


def _describe(ds) -> str:
    if isinstance(ds, GraphDataset):
        return f"{ds.name} ({ds.num_nodes} nodes, {len(ds.idx_test)} test nodes)"
    return f"{len(ds)} images of {ds.name}"


def _wrap(model: nn.Module, preprocessing, domain: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    check_materialised(model)
    if preprocessing is None:
        return model
    if domain != "image":
        raise ValueError("preprocessing: applies to image models only")
    net = with_preprocessing(model, preprocessing).to(model_device(model))  # moves the wrapper's buffers only
    return net.train(model.training)


@torch.no_grad()
def _check_model(model: nn.Module, ds) -> int:
    """One forward pass on two samples (eval mode, mode restored): logits of the right shape; returns the classes."""
    was = model.training
    dev = model_device(model)
    model.eval()
    try:
        if isinstance(ds, GraphDataset):
            out = model(ds.x.to(dev), ds.edge_index.to(dev))
            want, what = (ds.num_nodes, None), f"(num_nodes, num_classes) = ({ds.num_nodes}, C) logits for forward(x, edge_index)"
            labels = ds.y
        else:
            x = ds.images[:2].to(dev)
            out = model(x)
            want, what = (x.shape[0], None), f"(B, num_classes) logits for (B, C, H, W) = {tuple(x.shape)} images"
            labels = ds.labels
    except Exception as e:
        raise ValueError(f"model: failed on the data ({type(e).__name__}: {e}); expected a model taking "
                         f"{'forward(x, edge_index)' if isinstance(ds, GraphDataset) else '(B, C, H, W) images in [0, 1]'}") from e
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != want[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model: expected {what}, got {got}")
    k = out.shape[1]
    if labels.numel() and int(labels.max()) >= k:
        raise ValueError(f"model: expected logits for at least {int(labels.max()) + 1} classes (labels go up to "
                         f"{int(labels.max())}), got {k} outputs")
    return k


def _reinitialised(model: nn.Module) -> nn.Module:
    """An untrained copy of ``model`` (every submodule with ``reset_parameters`` re-initialised), for poisoning."""
    fresh = copy.deepcopy(model)
    reset = [m for m in fresh.modules() if callable(getattr(m, "reset_parameters", None))]
    if not reset:
        raise ValueError("structure poisoning retrains the model: expected submodules with reset_parameters() "
                         f"(torch / PyG layers have it), {type(model).__name__} has none")
    for m in reset:
        m.reset_parameters()
    return fresh


def _result(tm: ThreatModel, outcome, net, ds, described, num_classes, seed, device, batch_size, preprocessing,
            n_examples) -> BenchmarkResult:
    m = outcome.metrics
    if isinstance(ds, GraphDataset):
        n_clean = len(ds.idx_test)
        n_robust = int(m.get("targets", n_clean))
    else:
        n_clean = n_robust = len(ds)
    inner = net.model if isinstance(net, Preprocessed) else net
    config = {
        "threat_model": {"name": tm.name, "attack": tm.attack, "source": tm.source, "description": tm.description,
                         "options": {k: v for k, v in tm.options.items()}},
        "attack": outcome.attack, "params": outcome.params, "seed": seed, "n_examples": n_examples,
        "data": described, "device": str(model_device(net) if device is None else device), "batch_size": batch_size,
        "model": {"name": type(inner).__name__, "class": f"{type(inner).__module__}.{type(inner).__qualname__}",
                  "num_parameters": sum(p.numel() for p in inner.parameters()), "num_classes": num_classes},
        "preprocessing": net.describe() if isinstance(net, Preprocessed) else None,
        "runner": outcome.config, "versions": versions(),
    }
    return BenchmarkResult(tm.name, outcome.attack, dict(outcome.params), Accuracy.of(m["clean_accuracy"], n_clean),
                           Accuracy.of(m["robust_accuracy"], n_robust), float(m.get("success_rate", 0.0)), dict(m),
                           pd.DataFrame(outcome.rows), config, outcome.seconds)


__all__ = [
    "Accuracy", "BenchmarkResult", "benchmark", "create_model", "evaluate", "list_attacks", "list_models",
    "list_threat_models", "load_checkpoint", "load_dataset", "load_model",
]
