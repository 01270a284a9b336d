"""Model registry (timm-style): ``register_model``, ``create_model``, ``list_models``, plug-ins.

Every factory is called with keyword arguments only. Image factories receive
``in_channels``, ``num_classes`` and ``image_size`` (``(H, W)``) and return a module mapping
``(B, C, H, W)`` float images in ``[0, 1]`` to ``(B, num_classes)`` logits. Graph factories
receive ``in_features`` and ``num_classes`` and return a module with
``forward(x, edge_index, edge_weight=None)`` mapping ``(N, F)`` features to ``(N, num_classes)``
logits; it must be differentiable in ``edge_weight`` for gradient structure attacks.

Plug-ins follow the same protocol and are named ``package.module:factory``,
``path/to/file.py:factory`` or registered under the entry-point group ``robustbench_geo.models``.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import importlib.util
import inspect
import os
import threading
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from robustbench_geo.check import check_finite, check_materialised
from robustbench_geo.data import list_datasets
from robustbench_geo.registry import Registry

ENTRY_POINT_GROUP = "robustbench_geo.models"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    task: str  # "image", "graph", or "any" (plug-ins that did not say)
    description: str = ""
    defaults: dict = field(default_factory=dict)


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, *, task: str, description: str = "", **defaults):
    """Decorator registering a factory (function or class) under ``name``."""
    if task not in ("image", "graph"):
        raise ValueError(f"task: expected 'image' or 'graph', got {task!r}")

    def wrap(factory):
        doc = description or (inspect.getdoc(factory) or "").split("\n")[0]
        MODELS.add(name, ModelEntry(name, factory, task, doc, dict(defaults)))
        return factory

    return wrap


def list_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """Registered names matching a glob ``pattern`` (e.g. ``"deform*"``), optionally of one task."""
    _load_entry_points()
    return MODELS.names(pattern, None if task is None else (lambda e: e.task in (task, "any")))


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``, or a plug-in entry for ``module:factory`` specs."""
    if name in MODELS:
        return MODELS.get(name)
    if ":" in name:
        return _plugin_entry(name)
    _load_entry_points()
    return MODELS.get(name)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model (or a ``module:factory`` plug-in) with ``kwargs``."""
    entry = get_model_entry(name)
    check_parameter_names(name, kwargs)
    model = entry.factory(**{**entry.defaults, **kwargs})
    if not isinstance(model, nn.Module):
        raise TypeError(f"model {name!r}: the factory must return a torch.nn.Module, got {type(model).__name__}")
    return model


def check_parameter_names(name: str, kwargs: dict) -> None:
    """Raise ``TypeError`` for a keyword the factory of ``name`` does not take, naming close matches and the valid ones."""
    params = inspect.signature(get_model_entry(name).factory).parameters.values()
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        valid = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            close = [c for u in unknown for c in difflib.get_close_matches(u, valid, n=1)]
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise TypeError(f"model {name!r}: unknown parameter(s) {unknown}.{hint} Valid parameters: {', '.join(valid)}")


def check_task(name: str, info) -> str:
    """Check that model ``name`` fits the task of ``info`` (a ``DatasetInfo`` or loaded dataset); returns the task."""
    entry = get_model_entry(name)
    task = getattr(info, "task", None) or ("graph" if hasattr(info, "edge_index") else "image")
    if entry.task not in (task, "any"):
        raise ValueError(f"model {name!r} is for {entry.task} data but dataset {getattr(info, 'name', '?')!r} is {task} data; "
                         f"{entry.task} datasets: {', '.join(list_datasets(entry.task))}")
    return task


def model_kwargs_for(name: str, info, **kwargs) -> dict:
    """The kwargs a factory receives for a loaded dataset plus ``kwargs``."""
    task = check_task(name, info)
    if task == "image":
        base = {"in_channels": int(info.in_channels), "num_classes": int(info.num_classes),
                "image_size": tuple(int(s) for s in info.image_size)}
    else:
        base = {"in_features": int(info.num_features), "num_classes": int(info.num_classes)}
    for k, v in kwargs.items():  # the data fixes these: a model built otherwise cannot train or be evaluated on it
        if k in base and (tuple(v) if isinstance(v, list) else v) != base[k]:
            raise ValueError(f"{k}: dataset {getattr(info, 'name', '?')!r} has {k}={base[k]}, got {v!r} "
                             f"(set by the data; leave it out)")
    return {**base, **kwargs}


def build_model(name: str, dataset, **kwargs) -> tuple[nn.Module, dict]:
    """Build ``name`` for a loaded dataset, check its output shape, and return ``(model, kwargs used)``."""
    full = model_kwargs_for(name, dataset, **kwargs)
    model = create_model(name, **full)
    check_model_output(model, name, "image" if "image_size" in full else "graph", full)
    return model, full


def check_model_output(model: nn.Module, name: str, task: str, kwargs: dict, graph=None) -> None:
    """Run a tiny forward pass and check the logits' shape; raises with what was expected.

    ``graph`` (a loaded graph dataset): graph models are probed on it instead of on a 3-node graph; a
    trained model that holds per-node state (Pro-GNN's learned ``N x N`` graph) runs only on its own.
    """
    check_materialised(model, f"model {name!r}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(iter(model.parameters()), None)
            dev = p.device if p is not None else torch.device("cpu")
            if task == "image":
                x = torch.rand(2, kwargs["in_channels"], *kwargs["image_size"], device=dev)
                out = model(x)
                want = (2, kwargs["num_classes"])
                what = f"(B, {kwargs['num_classes']}) logits for (B, C, H, W) = {tuple(x.shape)} images"
            else:
                if graph is not None:
                    x, ei = graph.x.to(dev), graph.edge_index.to(dev)
                else:
                    x = torch.rand(3, kwargs["in_features"], device=dev)
                    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]], device=dev)
                out = model(x, ei)
                want = (x.shape[0], kwargs["num_classes"])
                what = f"(num_nodes, {kwargs['num_classes']}) logits for forward(x, edge_index, edge_weight=None)"
    except Exception as e:  # a plug-in that cannot even run on valid input
        raise ValueError(f"model {name!r} failed on a {task} input of the expected shape: {type(e).__name__}: {e}") from e
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model {name!r}: expected output {what}, i.e. shape {want}, got {got}")
    check_finite(out, f"model {name!r}: logits for a valid {task} input")


class PluginError(ValueError):
    """A plug-in model cannot be found or imported (missing file, error while importing, no factory)."""


def is_plugin_spec(name: str) -> bool:
    """Whether ``name`` is a plug-in spec (``module:factory`` or ``file.py:factory``) rather than a registered name.

    Using a plug-in imports and runs its code, so the package only does that for specs the user gave.
    """
    return ":" in name and name not in MODELS


def same_plugin(a: str, b: str) -> bool:
    """Whether two plug-in specs name the same factory (file paths compared after resolving them)."""
    ta, _, fa = a.rpartition(":")
    tb, _, fb = b.rpartition(":")
    if fa != fb:
        return False
    if _is_file_target(ta) and _is_file_target(tb):
        return Path(ta).expanduser().resolve() == Path(tb).expanduser().resolve()
    return ta == tb


def _is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target


class UserCodeExit(RuntimeError):
    """A plug-in tried to end the whole process (``os._exit``) while the toolkit ran it."""


@contextlib.contextmanager
def no_process_exit(what: str):
    """Run user code with ``os._exit`` raising :class:`UserCodeExit` in this thread (other threads, such as a
    worker's parent watchdog, still exit for real): a plug-in that calls it fails the command or the sweep
    cell with a message instead of ending the program with its exit code (0 looked like success)."""
    real, owner = os._exit, threading.get_ident()

    def refuse(code=0):
        if threading.get_ident() != owner:
            real(code)
        raise UserCodeExit(f"{what} called os._exit({code!r}), which would end the whole program; nothing was saved. "
                           "A factory should return a model or raise an exception")

    os._exit = refuse
    try:
        yield
    finally:
        os._exit = real


def _guarded(factory: Callable[..., nn.Module], spec: str) -> Callable[..., nn.Module]:
    @functools.wraps(factory)
    def call(*args, **kwargs):
        with no_process_exit(f"plug-in model {spec!r}"):
            return factory(*args, **kwargs)

    return call


def _plugin_entry(spec: str) -> ModelEntry:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise PluginError(f"plug-in model {spec!r}: expected 'package.module:factory' or 'path/to/file.py:factory'")
    if _is_file_target(target):
        path = Path(target).expanduser()
        if not path.is_file():
            raise PluginError(f"plug-in model {spec!r}: file {path} not found")
        mod_name = f"rbgeo_plugin_{abs(hash(str(path.resolve())))}"
        mod_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(mod_spec)
        try:
            with no_process_exit(f"plug-in model {spec!r} (importing {path})"):
                mod_spec.loader.exec_module(module)
        except UserCodeExit:
            raise
        except Exception as e:  # noqa: BLE001 - any error in the user's file is reported as bad input
            raise PluginError(f"plug-in model {spec!r}: importing {path} raised {type(e).__name__}: {e}") from e
    else:
        try:
            with no_process_exit(f"plug-in model {spec!r} (importing {target})"):
                module = importlib.import_module(target)
        except UserCodeExit:
            raise
        except ImportError as e:
            raise PluginError(f"plug-in model {spec!r}: cannot import {target!r}: {e}") from None
        except Exception as e:  # noqa: BLE001
            raise PluginError(f"plug-in model {spec!r}: importing {target!r} raised {type(e).__name__}: {e}") from e
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise PluginError(f"plug-in model {spec!r}: {target!r} has no callable {attr!r}")
    task = getattr(factory, "task", "any")  # a plug-in serves the task of the dataset it is built for
    return ModelEntry(spec, _guarded(factory, spec), task, (inspect.getdoc(factory) or "plug-in").split("\n")[0])


def _load_entry_points() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in MODELS:
            continue
        factory = ep.load()
        MODELS.add(ep.name, ModelEntry(ep.name, factory, getattr(factory, "task", "any"),
                                        (inspect.getdoc(factory) or "entry-point plug-in").split("\n")[0]))
