"""Checkpoints: ``<name>.safetensors`` (weights) + ``<name>.json`` (metadata). Loading never unpickles.

The JSON records the model name and kwargs, the dataset and its transform, seed, epochs, clean
accuracy, package and torch versions, the deformable backend, and the SHA-256 of the weights file;
the weights file's header records the SHA-256 of the JSON's content in turn (``meta_sha256``), so
neither file can be edited alone. Loading checks both hashes (a truncated or edited file is a clear
error: a ``cnn`` checkpoint whose JSON is edited to say ``atrous_cnn``, which has the same parameter
shapes, is refused instead of evaluated as the wrong model) and rebuilds the model
from the recorded name and kwargs, loading the weights strictly. When the recorded name is a
plug-in (``module:factory`` or ``file.py:factory``), rebuilding would import and run that code, so
loading refuses unless the caller passes exactly that plug-in as ``plugin`` (the user named it on
the command line or in a sweep file): a checkpoint's metadata never chooses code to run. Files are written to temporary
names and renamed into place, so a failed save never leaves a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from robustbench_geo._version import __version__, versions  # noqa: F401  (versions: re-exported)
from robustbench_geo.models.registry import create_model, is_plugin_spec, same_plugin

FORMAT_VERSION = 2
#: keys of the JSON that its content hash leaves out (the hashes themselves, and the weights file's name,
#: so that renaming a checkpoint's two files keeps it valid)
_UNHASHED = ("meta_sha256", "weights_sha256", "weights_file")
#: the safetensors header key holding the JSON's content hash (format 2 on)
_HEADER_KEY = "rbgeo_meta_sha256"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match the model it describes."""


class PluginNotAllowedError(CheckpointError):
    """A checkpoint names a plug-in model that the user did not name; loading it would run that code."""


def check_plugin_allowed(meta: dict, plugin: str | None, where: str = "checkpoint") -> None:
    """Refuse metadata whose ``model`` is a plug-in other than ``plugin`` (the one the user named).

    Args:
        meta: checkpoint metadata (its ``model`` is a registered name or a plug-in spec).
        plugin: the plug-in spec the user gave explicitly (``--model`` or a sweep file's ``model``), or None.
        where: what the metadata belongs to, for the message.

    Raises:
        PluginNotAllowedError: ``meta["model"]`` is a plug-in and not the same as ``plugin``.
    """
    name = meta.get("model")
    if not isinstance(name, str):
        raise CheckpointError(f"{where}: expected 'model' to be a model name, got {name!r}")
    if not is_plugin_spec(name) or (plugin is not None and same_plugin(name, plugin)):
        return
    given = f"; you gave {plugin!r}" if plugin else ""
    raise PluginNotAllowedError(
        f"{where} names the plug-in model {name!r}; loading it would import and run that code, which a checkpoint "
        f"never does on its own{given}. If you trust it, name it yourself: --model {name} (CLI) or model = \"{name}\" "
        f"(sweep file)")


def trained_label(meta: dict, name: str | None = None) -> str:
    """A checkpoint's model as reports name it: the architecture and its training defense's label.

    >>> trained_label({"model": "cnn", "defense": {"name": "worst_of_k", "label": "wo10"}})
    'cnn+wo10'
    >>> trained_label({"model": "p4cnn"}, name="my_models.py:net")
    'my_models.py:net'
    """
    defense = (meta.get("defense") or {}).get("label")
    name = name or meta["model"]
    return f"{name}+{defense}" if defense else name


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_regular(path: Path) -> None:
    """A checkpoint file must be a regular file (a link to ``/dev/zero`` or a FIFO would hang the hash)."""
    st = path.stat()  # follows symlinks: what would be read
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"checkpoint file {path} is not a regular file"
                              f"{f' (it points to {os.path.realpath(path)})' if path.is_symlink() else ''}; refusing to read it")


def meta_sha256(meta: dict) -> str:
    """SHA-256 of a checkpoint's JSON content (canonical JSON, keys sorted), without the keys in ``_UNHASHED``."""
    content = {k: v for k, v in _jsonable(meta).items() if k not in _UNHASHED}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _header_meta_sha256(weights: Path) -> str | None:
    """The JSON content hash recorded in a weights file's header (``None`` when it records none)."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            return (f.metadata() or {}).get(_HEADER_KEY)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"checkpoint weights {weights} cannot be read: {e}") from None


def weights_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a checkpoint's weights file as it is on disk now (not the value its metadata records)."""
    weights, meta_path = _paths(path)
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights {weights} not found (next to {meta_path.name})")
    return sha256_file(weights)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict) -> Path:
    """Save ``model``'s state dict and ``meta`` (must hold ``model`` and ``model_kwargs``).

    Args:
        path: checkpoint stem (``out/cnn_mnist`` -> ``out/cnn_mnist.safetensors`` + ``.json``).

    Returns:
        The path of the JSON file.
    """
    for key in ("model", "model_kwargs"):
        if key not in meta:
            raise ValueError(f"meta: expected key {key!r} (needed to rebuild the model), got keys {sorted(meta)}")
    weights, meta_path = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp_w = weights.with_name(weights.name + ".tmp")
    tmp_m = meta_path.with_name(meta_path.name + ".tmp")
    try:
        full = _jsonable({**meta, "format_version": FORMAT_VERSION, "versions": meta.get("versions", versions()),
                          "num_parameters": int(sum(p.numel() for p in model.parameters()))})
        digest = meta_sha256(full)
        save_file(state, str(tmp_w), metadata={_HEADER_KEY: digest})  # the weights vouch for the JSON ...
        full.update({"weights_file": weights.name, "weights_sha256": sha256_file(tmp_w),  # ... and the JSON for them
                     "meta_sha256": digest})
        tmp_m.write_text(json.dumps(full, indent=2, sort_keys=True))
        os.replace(tmp_w, weights)
        os.replace(tmp_m, meta_path)
    finally:
        tmp_w.unlink(missing_ok=True)
        tmp_m.unlink(missing_ok=True)
    return meta_path


def read_metadata(path: str | os.PathLike) -> dict:
    """Read and validate a checkpoint's JSON metadata (no weights)."""
    weights, meta_path = _paths(path)
    if not meta_path.exists():
        raise CheckpointError(f"checkpoint metadata {meta_path} not found (a checkpoint is {weights.name} + {meta_path.name})")
    _check_regular(meta_path)
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint metadata {meta_path} is not valid JSON ({e}); the file is truncated or edited") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint metadata {meta_path}: expected a JSON object, got {type(meta).__name__}")
    missing = [k for k in ("model", "model_kwargs", "weights_sha256") if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint metadata {meta_path} lacks {missing}; not a robustbench_geo checkpoint?")
    if meta.get("task", "image") not in ("image", "graph") or not isinstance(meta["model_kwargs"], dict) \
            or not isinstance(meta["model"], str):
        raise CheckpointError(f"checkpoint metadata {meta_path}: expected task 'image' or 'graph', a model name and a "
                              f"model_kwargs table, got task={meta.get('task')!r}, model={meta['model']!r}, "
                              f"model_kwargs={meta['model_kwargs']!r}; the file was edited")
    kw = meta["model_kwargs"]
    if "task" in meta and ({"image": "in_features", "graph": "image_size"}[meta["task"]] in kw):
        raise CheckpointError(f"checkpoint metadata {meta_path}: task {meta.get('task')!r} does not match its model "
                              f"kwargs {sorted(kw)} (image models take image_size, graph models in_features); "
                              f"the file was edited")
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"checkpoint metadata {meta_path}: expected an integer format_version, got {version!r}; "
                              f"the file was edited")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {meta_path} has format {meta['format_version']}, newer than this package reads ({FORMAT_VERSION})")
    if version >= 2:
        _check_meta_hash(meta, meta_path, weights)
    return meta


def _check_weights(meta: dict, meta_path: Path, weights: Path) -> None:
    """The weights file exists, is a regular file and hashes to the JSON's ``weights_sha256``."""
    if not weights.exists():
        raise CheckpointError(f"checkpoint weights {weights} not found (next to {meta_path.name})")
    _check_regular(weights)
    digest = sha256_file(weights)
    if digest != meta["weights_sha256"]:
        raise CheckpointError(f"checkpoint weights {weights} do not match their metadata (sha256 {digest[:12]}... != "
                              f"{meta['weights_sha256'][:12]}...): the file was truncated, edited or replaced")


def _check_meta_hash(meta: dict, meta_path: Path, weights: Path) -> None:
    """Format 2: the JSON's content must hash to the value recorded in the weights file's header.

    Checkpoints written before format 2 record no such hash; they are loaded as before (their
    weights hash and strict parameter shapes are still checked).
    """
    _check_weights(meta, meta_path, weights)
    recorded = _header_meta_sha256(weights)
    digest = meta_sha256(meta)
    if recorded is None:
        raise CheckpointError(f"checkpoint weights {weights} record no hash of their metadata, which format "
                              f"{meta['format_version']} requires: the file was replaced")
    if digest != recorded or meta.get("meta_sha256", recorded) != recorded:
        raise CheckpointError(f"checkpoint metadata {meta_path} was edited after it was saved (content sha256 "
                              f"{digest[:12]}... != {recorded[:12]}... recorded in {weights.name}): its model, "
                              f"data or settings may not be what the weights were trained as. Restore the original "
                              f"file, or retrain")


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu", *, plugin: str | None = None,
                    **override_kwargs) -> tuple[nn.Module, dict]:
    """Rebuild the model from a checkpoint; returns ``(model in eval mode, metadata)``.

    Args:
        path: checkpoint stem, or its ``.json`` / ``.safetensors`` file.
        device: where the model goes.
        plugin: the plug-in spec the user named explicitly; a checkpoint of a plug-in model loads
            only when it is this one (see :func:`check_plugin_allowed`). Registered models need none.
        override_kwargs: factory kwargs replacing the recorded ones.

    Raises:
        CheckpointError: missing, corrupt or mismatching files; :class:`PluginNotAllowedError` when
            the metadata names a plug-in that ``plugin`` does not allow (nothing is imported then).
    """
    weights, meta_path = _paths(path)
    meta = read_metadata(meta_path)
    check_plugin_allowed(meta, plugin, f"checkpoint {meta_path}")
    if meta.get("format_version", 0) < 2:  # format 2 on: read_metadata checked the weights with the JSON
        _check_weights(meta, meta_path, weights)
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"checkpoint weights {weights} cannot be read: {e}") from None
    kwargs = _restore(meta["model_kwargs"])
    kwargs.update(override_kwargs)
    model = create_model(meta["model"], **kwargs)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {weights} does not fit model {meta['model']!r} built with {kwargs}: {e}") from None
    return model.to(device).eval(), meta


class DatasetMismatchError(CheckpointError):
    """A checkpoint is evaluated on another dataset variant or split than it was trained on."""


def data_fingerprint(dataset) -> dict:
    """What a checkpoint must agree with to be evaluated on ``dataset`` (recorded as ``trained_on``).

    Graphs: the graph variant (name, split, node and feature counts) and the split's node ids
    (``cora:public`` is the full Planetoid graph, ``cora`` the literature LCC with other node and
    class ids; another split of the same graph puts training nodes into the test set). Images:
    the class names, channels and image size (``mnist`` -> ``mnist-rotated`` is a valid shift;
    ``mnist`` -> ``fashion-mnist`` is not).
    """
    if hasattr(dataset, "edge_index"):
        return {"task": "graph", "name": dataset.name, "split": dataset.split, "num_nodes": int(dataset.num_nodes),
                "num_features": int(dataset.num_features), "split_hash": dataset.split_hash}
    return {"task": "image", "classes": [str(c) for c in dataset.classes], "in_channels": int(dataset.images.shape[1]),
            "image_size": [int(s) for s in dataset.images.shape[2:]]}


def check_dataset_fit(meta: dict, dataset, *, spec: str | None = None, force: bool = False) -> list[str]:
    """Refuse to evaluate a checkpoint on a dataset variant or split it was not trained on.

    Args:
        meta: the checkpoint's metadata (``trained_on`` from :func:`data_fingerprint`; checkpoints
            written before it was recorded are compared on the graph split hash only).
        dataset: the loaded evaluation dataset.
        spec: the dataset spec for the message.
        force: return the differences instead of raising (``--force``).

    Returns:
        The differences found (empty when the data fits).

    Raises:
        DatasetMismatchError: on any difference unless ``force``.
    """
    now = data_fingerprint(dataset)
    was = meta.get("trained_on")
    if was is None:  # older checkpoints: graphs recorded their split only
        was = {"split_hash": meta["split_hash"]} if now["task"] == "graph" and "split_hash" in meta else {}
    diff = [f"{k} {was[k]!r} != {now.get(k)!r}" for k in sorted(was) if k in now and was[k] != now[k]]
    if diff and not force:
        raise DatasetMismatchError(
            f"checkpoint was trained on {meta.get('dataset', '?')!r} but {spec or getattr(dataset, 'name', '?')!r} "
            f"differs ({'; '.join(diff)}): its accuracy there would not mean what it says. Evaluate on the training "
            f"variant and split, or pass --force to evaluate anyway")
    return diff


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _restore(kwargs: dict) -> dict:
    # JSON turns tuples into lists; factories accept both, but image_size is compared as a tuple
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
