"""Load a trained model to evaluate: a checkpoint, a factory, or a factory plus a weights file.

:func:`load_evaluated` loads a model with the data it is evaluated on, for ``rbgeo eval``,
``rbgeo attack``, ``rbgeo certify`` and a sweep's evaluated models; :func:`load_model` loads the model
alone, and :func:`evaluation_data` the data alone (the Python API's named datasets, a sweep's trained
models). A model is one of:

* ``checkpoint="runs/cnn"``: ``runs/cnn.safetensors`` + ``runs/cnn.json`` written by training;
* ``spec="my_models.py:trained_net"`` (or ``package.module:factory``): a factory that returns an
  already-trained ``nn.Module``. For images it may take the keyword arguments ``in_channels``,
  ``num_classes`` and ``image_size``, for graphs ``in_features`` and ``num_classes`` (it receives
  the ones it names, or all with ``**kwargs``), or none;
* ``spec`` plus ``weights="net.safetensors"``: the factory (or a registered name such as ``cnn``)
  builds the architecture and the file's state dict is loaded strictly. A weights file is
  safetensors, or a state dict saved with ``torch.save(model.state_dict(), FILE)`` and read with
  ``torch.load(weights_only=True)``: a pickled module or any other pickle is refused.

Security: a plug-in is code. It is imported only when the user names it (``spec``); a checkpoint
whose metadata names a plug-in loads only when ``spec`` is that same plug-in
(:func:`robustbench_geo.checkpoint.check_plugin_allowed`).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file

from robustbench_geo.check import check_materialised
from robustbench_geo.checkpoint import (
    check_dataset_fit, check_plugin_allowed, load_checkpoint, read_metadata, sha256_file,
)
from robustbench_geo.data import dataset_info, load_dataset
from robustbench_geo.models.preprocessing import Preprocessed, with_preprocessing
from robustbench_geo.models.registry import UserCodeExit, check_model_output, get_model_entry, is_plugin_spec

_SIZE_KEYS = ("in_channels", "num_classes", "image_size", "in_features")
_EXPECTED = ("expected a safetensors file, or a state dict saved with torch.save(model.state_dict(), FILE)")


class WeightsError(ValueError):
    """A weights file cannot be read safely, or does not fit the model it is loaded into."""


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a safetensors file or a plain ``torch.save``-d state dict, never unpickling code.

    Raises:
        WeightsError: missing or unreadable file, a pickle holding more than tensors (a whole
            module, an optimizer, arbitrary objects), or anything other than names -> tensors.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file {p} not found (or not a regular file); {_EXPECTED}")
    with open(p, "rb") as f:
        head = f.read(9)
    if p.suffix == ".safetensors" or _looks_like_safetensors(head, p.stat().st_size):
        try:
            return load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"weights {p}: not a readable safetensors file ({e})") from None
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # torch.save: a zip archive or a pickle
        raise WeightsError(f"weights {p}: cannot be read: neither safetensors nor a torch.save file; {_EXPECTED}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(f"weights {p}: refused: the pickle holds more than tensors (e.g. a whole model saved with "
                           f"torch.save(model)), and unpickling it could run code; {_EXPECTED}") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for foreign files
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise WeightsError(f"weights {p}: cannot be read as safetensors or as a torch state dict "
                           f"({type(e).__name__}: {first}); {_EXPECTED}") from None
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                          for k, v in obj.items()):
        what = type(obj).__name__ if not isinstance(obj, Mapping) else f"a mapping with keys {list(obj)[:4]}"
        inner = next((k for k in ("state_dict", "model_state_dict", "model") if isinstance(obj, Mapping) and k in obj), None)
        hint = f" (for a training checkpoint: torch.save(ckpt[{inner!r}], FILE))" if inner else ""
        raise WeightsError(f"weights {p}: expected a state dict (parameter names -> tensors), got {what}; "
                           f"{_EXPECTED}{hint}")
    return dict(obj)


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    # an 8-byte little-endian header length, then the JSON header
    return len(head) == 9 and head[8:9] == b"{" and 0 < struct.unpack("<Q", head[:8])[0] <= size - 8


def state_sha256(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str, name: str) -> None:
    """Load ``state`` strictly; a mismatch is one line naming missing, unexpected and misshapen entries."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{len(v)} {what} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})"
                 for v, what in ((missing, "missing"), (unexpected, "unexpected"), (shapes, "of another shape (file vs model)"))
                 if v]
        raise WeightsError(f"weights {source} do not match model {name!r}: {'; '.join(parts)}; expected the state dict "
                           f"of this architecture built with the same arguments")
    model.load_state_dict(state, strict=True)


def data_kwargs(data) -> dict:
    """Size kwargs a factory may receive for ``data`` (a ``DatasetInfo``, a loaded dataset or a spec string)."""
    if isinstance(data, str):
        data = dataset_info(data)
    task = getattr(data, "task", None) or ("graph" if hasattr(data, "edge_index") else "image")
    if task == "image":
        return {"in_channels": int(data.in_channels), "num_classes": int(data.num_classes),
                "image_size": tuple(int(s) for s in data.image_size)}
    out = {"num_classes": int(data.num_classes)}
    if getattr(data, "num_features", None) is not None:
        out["in_features"] = int(data.num_features)
    return out


def _task_of(data) -> str:
    return "image" if "image_size" in data_kwargs(data) else "graph"


def _factory_kwargs(spec: str, entry, data, params: dict) -> dict:
    """Registered models get every size kwarg; plug-ins the ones their signature names (all with ``**kwargs``)."""
    base = data_kwargs(data) if data is not None else {}
    if not is_plugin_spec(spec):
        if "image_size" not in base and "in_features" not in base:
            raise ValueError(f"model {spec!r}: expected data to read its size arguments from (an image dataset, or a "
                             f"loaded graph dataset for in_features)")
        return {**entry.defaults, **base, **params}
    try:
        sig = inspect.signature(entry.factory)
    except (TypeError, ValueError):  # builtins without a signature: give everything
        return {**base, **params}
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return {**base, **params}
    return {**{k: v for k, v in base.items() if k in sig.parameters}, **params}


def check_model_source(spec: str | None, weights=None) -> None:
    """Refuse, before anything is read or built, a model that is not a trained model: no spec, a plug-in file
    without its factory, or a registered architecture without ``weights`` (it would be untrained)."""
    if spec is None:
        raise ValueError("expected a checkpoint, or --model module:factory (optionally with --weights FILE), got neither"
                         if weights is None else "--weights: expected --model naming the architecture to load them into")
    if ":" not in spec and (spec.endswith(".py") or "/" in spec):
        raise ValueError(f"model {spec!r}: expected a plug-in as FILE.py:FACTORY (the function that returns the "
                         f"model, e.g. {spec}:build_model) or a registered name")
    if weights is None and not is_plugin_spec(spec):
        raise ValueError(f"model {spec!r} is a registered architecture and would be untrained: expected --weights FILE "
                         f"(or a checkpoint, or a plug-in factory that returns a trained model)")


def load_model(spec: str | None = None, checkpoint: str | os.PathLike | None = None,
               weights: str | os.PathLike | None = None, *, data=None, preprocessing=None,
               params: dict | None = None, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load a trained model from a checkpoint, a factory, or a factory plus a weights file.

    Args:
        spec: registered model name or plug-in (``module:factory``, ``file.py:factory``). Alone it
            must be a factory returning a trained model; with ``weights`` it builds the architecture.
            With ``checkpoint`` it only allows the checkpoint's plug-in (it must be the same one).
        checkpoint: checkpoint stem written by training (or its ``.json``/``.safetensors``).
        weights: safetensors file or ``torch.save``-d state dict to load into ``spec``'s model.
        data: the dataset the model is evaluated on (``DatasetInfo``, loaded dataset or spec): it
            gives the factory's size kwargs and the shape check. Graph factories that take
            ``in_features`` need a loaded graph dataset.
        preprocessing: ``(mean, std)``, ``"mean=...,std=..."`` or a callable, for models that expect
            normalised images (see :mod:`robustbench_geo.models.preprocessing`); not for checkpoints.
        params: extra factory kwargs (not with ``checkpoint``).
        device: where the model goes.

    Returns:
        ``(model in eval mode, metadata)``; metadata has ``model``, ``model_kwargs``, ``task``,
        ``source`` (``checkpoint``, ``factory`` or ``weights``) and ``weights_sha256``.

    Raises:
        ValueError: an impossible combination, a model that does not fit ``data``;
            :class:`WeightsError` for bad weights; ``CheckpointError`` for bad checkpoints;
            ``PluginError`` for plug-ins that cannot be imported.
    """
    params = dict(params or {})
    if checkpoint is not None:
        if weights is not None:
            raise ValueError("expected a checkpoint or --weights, got both (a checkpoint holds its own weights)")
        if preprocessing is not None or params:
            raise ValueError("--preprocessing and model parameters apply to --model/--weights models; a checkpoint "
                             "trained here takes [0, 1] images and records its own parameters")
        return _from_checkpoint(checkpoint, spec, data, device)
    check_model_source(spec, weights)
    if preprocessing is not None and data is not None and _task_of(data) == "graph":
        raise ValueError("--preprocessing applies to image models (mean/std per channel), got a graph dataset")
    state = read_weights(weights) if weights is not None else None  # bad files fail before any plug-in runs
    entry = get_model_entry(spec)  # a plug-in's file is imported here, once
    kwargs = _factory_kwargs(spec, entry, data, params)
    try:
        model = entry.factory(**kwargs)
    except UserCodeExit:
        raise
    except Exception as e:  # noqa: BLE001 - the user's factory: any failure is bad input, reported in one line
        raise ValueError(f"model {spec!r}: calling the factory with {sorted(kwargs) or 'no arguments'} raised "
                         f"{type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise TypeError(f"model {spec!r}: the factory must return a torch.nn.Module, got {type(model).__name__}")
    if state is not None:
        load_state(model, state, str(weights), spec)
    check_materialised(model, f"model {spec!r}")
    meta = {"model": spec, "model_kwargs": kwargs, "source": "weights" if weights is not None else "factory",
            "weights_sha256": sha256_file(weights) if weights is not None else state_sha256(model)}
    if weights is not None:
        meta["weights_file"] = str(weights)
    model = with_preprocessing(model, preprocessing)
    if isinstance(model, Preprocessed):
        meta["preprocessing"] = model.describe()
    model = model.to(device).eval()
    if data is not None:
        meta["task"] = _task_of(data)
        full = {**data_kwargs(data), **{k: v for k, v in kwargs.items() if k in _SIZE_KEYS}}
        if meta["task"] == "image" or "in_features" in full:
            check_model_output(model, spec, meta["task"], full)
    return model, meta


def _from_checkpoint(checkpoint, spec, data, device) -> tuple[nn.Module, dict]:
    meta = read_metadata(checkpoint)
    check_plugin_allowed(meta, spec, f"checkpoint {checkpoint}")  # before anything is imported
    if spec is not None and spec != meta["model"] and not is_plugin_spec(meta["model"]):  # plug-ins: checked above
        raise ValueError(f"--model {spec!r} does not match checkpoint {checkpoint}, a {meta['model']!r}; with a "
                         f"checkpoint, --model only allows the plug-in it names")
    if data is not None:
        check_fits(meta, data, f"checkpoint {checkpoint}")
    model, meta = load_checkpoint(checkpoint, device=device, plugin=spec)
    meta = {**meta, "source": "checkpoint"}
    if data is not None:
        stored = {k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["model_kwargs"].items()}
        task = meta.get("task", "image")
        check_model_output(model, meta["model"], task, {**data_kwargs(data), **stored},
                           graph=data if task == "graph" and hasattr(data, "edge_index") else None)
    return model, meta


def check_fits(meta: dict, data, what: str) -> None:
    """Refuse evaluating a model recorded in ``meta`` on data of another task, shape or class count."""
    task = _task_of(data)
    name = getattr(data, "name", "?")
    if meta.get("task", "image") != task:
        raise ValueError(f"model {meta['model']!r} ({what}) is for {meta.get('task', 'image')} data but dataset "
                         f"{name!r} is {task} data")
    stored = {k: (tuple(v) if isinstance(v, list) else v) for k, v in meta.get("model_kwargs", {}).items()}
    for k, v in data_kwargs(data).items():
        if k in stored and stored[k] != v:
            raise ValueError(f"{what} was built for {k}={stored[k]} but dataset {name!r} has {k}={v}")


def evaluation_data(dataset: str, *, n: int | None = None, seed: int = 0, root=None):
    """The data a model is evaluated on: an image dataset's test split (a subset of ``n`` images drawn with
    ``seed``; all with ``None``), or a whole graph dataset (evaluated on its test nodes; ``n`` is unused)."""
    if dataset_info(dataset).task == "image":
        return load_dataset(dataset, split="test", root=root, seed=seed, subset=n)
    return load_dataset(dataset, root=root, seed=seed)


@dataclass(frozen=True, eq=False)
class Evaluated:
    """A model loaded for evaluation with its data.

    Attributes:
        model: in eval mode, on the requested device. meta: :func:`load_model`'s metadata.
        data: the evaluation data (:func:`evaluation_data`).
        differences: how ``data`` differs from what a checkpoint was trained on, accepted with ``force``.
    """

    model: nn.Module
    meta: dict
    data: object
    differences: list[str] = field(default_factory=list)


def load_evaluated(dataset: str, spec: str | None = None, checkpoint: str | os.PathLike | None = None,
                   weights: str | os.PathLike | None = None, *, n: int | None = None, seed: int = 0, data_root=None,
                   preprocessing=None, params: dict | None = None, device: str | torch.device = "cpu",
                   force: bool = False) -> Evaluated:
    """Load a model (a checkpoint, a factory, or a registered name or factory with ``weights``) and its data.

    An image model is checked against the dataset's shape before any image is read; a graph model is
    built after the graph is loaded (its factory may need ``in_features``). A checkpoint evaluated on
    another dataset variant or split than it was trained on is refused unless ``force``.

    Args:
        dataset: the dataset spec; ``n`` and ``seed`` as in :func:`evaluation_data`.
        spec, checkpoint, weights, preprocessing, params, device: as in :func:`load_model`.
        data_root: where datasets live (default ``$RBGEO_DATA``).
        force: record the differences from the training data instead of refusing.

    Raises:
        DatasetMismatchError: data the checkpoint was not trained on, unless ``force``; and everything
            :func:`load_model` raises.
    """
    info = dataset_info(dataset)
    if info.task == "image":
        model, meta = load_model(spec, checkpoint, weights, data=info, preprocessing=preprocessing, params=params,
                                 device=device)
        data = evaluation_data(dataset, n=n, seed=seed, root=data_root)
    else:
        data = evaluation_data(dataset, seed=seed, root=data_root)
        model, meta = load_model(spec, checkpoint, weights, data=data, preprocessing=preprocessing, params=params,
                                 device=device)
    return Evaluated(model, meta, data, check_dataset_fit(meta, data, spec=dataset, force=force))
