"""Running one cell (in any worker) and writing its artefacts (in the driver).

:func:`run_cell` is a plain function of JSON-ready arguments, so the local executor, worker
processes and Ray tasks all call the same code: it trains the cell's model or reuses the cached
checkpoint (keyed by the training hash, guarded by a file lock so parallel workers train a model
once), or, for a ``checkpoint =`` or pretrained ``factory =`` model, loads it as given (never
training it, and refusing weights that changed since the cell was keyed), loads the evaluation
data (:func:`robustbench_geo.loading.load_evaluated`), attacks or certifies it through the composer
(:func:`robustbench_geo.compose.evaluate_model`, as ``rbgeo attack`` does), and for
deformable models records where the deformable layers sample on a clean and an attacked image.
It returns plain data; only the driver writes files and the store (:func:`write_artefacts`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import traceback
from pathlib import Path

import torch

from robustbench_geo._version import versions
from robustbench_geo.checkpoint import CheckpointError, check_dataset_fit, load_checkpoint, weights_sha256
from robustbench_geo.compose import evaluate_model
from robustbench_geo.data import dataset_info
from robustbench_geo.data.root import CacheError, folder_writable, writable_cache
from robustbench_geo.models import set_deform_backend
from robustbench_geo.models.deformable import deformable_layers
from robustbench_geo.models.vote import MajorityVote
from robustbench_geo.loading import Evaluated, evaluation_data, load_evaluated
from robustbench_geo.sweep.cells import call_params
from robustbench_geo.training import fit

#: test images used for the clean accuracy recorded in a cached checkpoint's metadata
CHECKPOINT_EVAL_SUBSET = 200


def default_checkpoint_cache() -> Path:
    """``$RBGEO_CACHE/checkpoints`` (else ``~/.cache/robustbench_geo/checkpoints``), created and writable."""
    return writable_cache("checkpoints")


def checked_checkpoint_cache(path: str | Path) -> Path:
    """A sweep's ``checkpoint_cache`` folder, checked before the first cell (a file there, or a folder
    without write permission, would otherwise fail every cell that trains)."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise CacheError(f"checkpoint_cache {p} is a file, expected a folder; point it at a writable folder")
    if not folder_writable(p):
        raise CacheError(f"checkpoint_cache {p} is not writable; point it at a writable folder")
    return p


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def trained_model(cell_config: dict, train_hash: str, *, cache_dir: str | Path, data_root=None, device: str = "cpu",
                  progress: bool = False):
    """Load the cached checkpoint of a training config, or train and cache it.

    Returns:
        ``(model, checkpoint metadata, checkpoint path, seconds spent training (0 when cached))``.
    """
    t = cell_config["training"]
    stem = Path(cache_dir) / f"{t['model'].replace('/', '_').replace(':', '_')}-{train_hash[:16]}"
    with _file_lock(stem.with_suffix(".lock")):
        if stem.with_suffix(".json").exists():
            try:
                model, meta = load_checkpoint(stem, device=device, plugin=t["model"])  # the sweep file named it
                return model, meta, stem, 0.0
            except CheckpointError:
                pass  # a damaged cache entry is retrained and replaced
        tc = t["train"]
        image = _is_image(t["dataset"])
        res = fit(t["model"], t["dataset"], epochs=tc["epochs"], lr=tc["lr"], batch_size=tc["batch_size"],
                  seed=tc["seed"], augment=tc["augment"], device=device, out=stem, data_root=data_root,
                  subset=t["train_subset"], test_subset=CHECKPOINT_EVAL_SUBSET if image else None,
                  deform_backend=t["deform_backend"], trainable=tc["trainable"], model_kwargs=dict(t["model_params"]),
                  schedule=tc.get("schedule", "constant"), defense=tc.get("defense", "none"), progress=progress)
        return res.model.to(device).eval(), res.meta, stem, res.meta["train_seconds"]


def evaluated_model(cell_config: dict, *, data_root=None, device: str = "cpu") -> tuple[Evaluated, str]:
    """The model of a ``checkpoint =`` or ``factory = ... pretrained = true`` cell with its evaluation data,
    loaded as given (never trained), and where its weights came from.

    Its weights must still be the ones the cell was keyed by: changed weights are another cell.
    """
    m, seed, spec = cell_config["model"], cell_config["seed"], cell_config["dataset"]["spec"]
    n = cell_config["attack"]["runner"].get("n")
    if m["source"] == "checkpoint":
        loaded = load_evaluated(spec, m["plugin"], checkpoint=m["checkpoint"], n=n, seed=seed, data_root=data_root,
                                device=device)
        sha, where = weights_sha256(m["checkpoint"]), m["checkpoint"]
    else:
        loaded = load_evaluated(spec, m["name"], weights=m["weights"], n=n, seed=seed, data_root=data_root,
                                preprocessing=m["preprocessing"], params=m["params"], device=device)
        sha, where = loaded.meta["weights_sha256"], m["weights"] or m["name"]
    if sha != m["weights_sha256"]:
        raise ValueError(f"model {m['label']!r}: its weights changed since the sweep was expanded (sha256 "
                         f"{sha[:12]}... != {m['weights_sha256'][:12]}...): run the sweep again for new cells")
    return loaded, where


def _is_image(spec: str) -> bool:
    return dataset_info(spec).task == "image"


def run_cell(cell_config: dict, train_hash: str, *, cache_dir: str | Path, data_root=None, device: str = "cpu",
             deform_backend: str = "auto", threads: int | None = None, progress: bool = False) -> dict:
    """Train-or-load, attack and summarise one cell; never raises (errors are returned).

    Returns:
        A dict with ``ok``; when ok: ``metrics``, ``rows``, ``artefacts`` (tensors and plain data),
        ``config`` (the attack runner's), ``seconds``, ``train_seconds``, ``attack_seconds``,
        ``checkpoint`` and ``info`` (device, backend, versions, host); else ``error`` (traceback).
    """
    import socket

    t0, c0 = time.perf_counter(), time.process_time()
    try:
        if threads:
            torch.set_num_threads(int(threads))
        ds_cfg, att, seed = cell_config["dataset"], cell_config["attack"], cell_config["seed"]
        runner = dict(att["runner"])
        if cell_config["model"].get("source", "train") == "train":
            model, meta, stem, train_s = trained_model(cell_config, train_hash, cache_dir=cache_dir, data_root=data_root,
                                                       device=device, progress=progress)
            ds = evaluation_data(ds_cfg["spec"], n=runner.get("n"), seed=seed, root=data_root)
            check_dataset_fit(meta, ds, spec=ds_cfg["spec"])
        else:
            loaded, stem = evaluated_model(cell_config, data_root=data_root, device=device)
            model, meta, ds, train_s = loaded.model, loaded.meta, loaded.data, 0.0
        backend = set_deform_backend(model, deform_backend, device=device)
        vote = None
        if cell_config["model"].get("vote"):  # attacked as deployed: fresh draws on every call, seeded by the cell
            model = MajorityVote(model, votes=int(cell_config["model"]["vote"]), seed=seed, randomness="fresh")
            vote = model.describe()
        if meta.get("task") == "image":
            runner["n"] = len(ds)
        ta, ca = time.perf_counter(), time.process_time()
        if att["kind"] == "certificate":  # a [certify.LABEL] cell: TSS certificate + attack bracket
            outcome = evaluate_model(model, ds, certificate=att["params"], meta=meta, seed=seed, progress=progress)
        else:
            outcome = evaluate_model(model, ds, att["name"], call_params(att["name"], att["params"], runner), meta=meta, seed=seed, progress=progress,
                                     device=device, **runner)
        attack_s, attack_cpu = time.perf_counter() - ta, time.process_time() - ca
        metrics = dict(outcome.metrics)
        metrics.setdefault("n", float(len(outcome.rows)))  # samples behind the accuracies (one row per sample/node/target)
        if "targets" in metrics and hasattr(ds, "idx_test"):  # targeted: clean accuracy is over the test nodes
            metrics.setdefault("clean_n", float(ds.idx_test.numel()))
        artefacts = dict(outcome.artefacts)
        examples = artefacts.get("examples")
        if backend is not None and vote is None and isinstance(examples, dict) and "clean" in examples:
            artefacts["sampling"] = sampling_locations(model, examples["clean"][:1], examples["adversarial"][:1])
        return {
            "ok": True, "metrics": metrics, "rows": list(outcome.rows), "artefacts": _cpu(artefacts),
            "config": outcome.config, "params": outcome.params, "seconds": time.perf_counter() - t0,
            "train_seconds": train_s, "attack_seconds": attack_s, "checkpoint": str(stem),
            "info": {"device": str(device), "deform_backend": backend, "versions": versions(), "host": socket.gethostname(),
                     "threads": torch.get_num_threads(), "checkpoint_clean_accuracy": meta.get("clean_accuracy"),
                     "epochs_run": meta.get("epochs_run"), "model_cached": train_s == 0.0,
                     "model_source": meta.get("source", "train"), "weights_sha256": meta.get("weights_sha256"),
                     "defense": meta.get("defense"),  # the training defense the checkpoint records (None: none)
                     "vote": vote,  # the test-time majority vote the cell attacked (None: the model itself)
                     "num_parameters": meta.get("num_parameters"), "dataset_meta": getattr(ds, "meta", {}),
                     # CPU seconds of this process (all torch threads): comparable across machine loads
                     "cpu_seconds": time.process_time() - c0, "attack_cpu_seconds": attack_cpu},
        }
    except (Exception, SystemExit):  # noqa: BLE001 - a failed cell is recorded (sys.exit in a factory too), the sweep goes on
        return {"ok": False, "error": traceback.format_exc(), "seconds": time.perf_counter() - t0}


def _cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


@torch.no_grad()
def sampling_locations(model, clean: torch.Tensor, adversarial: torch.Tensor, positions: int = 3) -> dict:
    """Where each deformable layer samples, in image pixels, for one clean and one attacked image.

    For every deformable layer the ``positions`` output locations with the largest activation
    norm on the clean image are kept; their ``kh*kw`` taps are mapped from the layer's input grid
    to image pixels (``(u + 0.5) * H / H_in - 0.5``, pixel centres as in ``geometry.py``).

    Args:
        clean, adversarial: ``(1, C, H, W)`` images in ``[0, 1]``.

    Returns:
        ``{layer: {"clean": (P, K, 2), "adversarial": (P, K, 2), "regular": (P, K, 2)}}``, ``[y, x]`` pixels.
    """
    layers = deformable_layers(model)
    dev = next(model.parameters()).device
    shapes, outs = {}, {}
    def keep(name):
        def hook(module, inputs, output) -> None:  # returns None: the output is left unchanged
            shapes[name] = inputs[0].shape[-2:]
            outs[name] = output.detach()

        return hook

    hooks = [m.register_forward_hook(keep(n)) for n, m in layers]
    result: dict = {}
    try:
        for kind, img in (("clean", clean), ("adversarial", adversarial)):
            for _, m in layers:
                m.record = True
            model.eval()(img.to(dev))
            h_img = img.shape[-2]
            for n, m in layers:
                loc = m.sampling_locations(m.last_offset)[0, 0]  # (K, 2, Ho, Wo), first offset group
                reg = m.sampling_locations(torch.zeros_like(m.last_offset))[0, 0]
                if kind == "clean":
                    norm = outs[n][0].norm(dim=0).flatten()
                    result[n] = {"index": norm.topk(min(positions, norm.numel())).indices}
                scale = h_img / shapes[n][0]
                idx = result[n]["index"]
                for key, field in ((kind, loc), ("regular", reg)):
                    pts = field.flatten(2)[:, :, idx].permute(2, 0, 1)  # (P, K, 2)
                    result[n][key] = ((pts + 0.5) * scale - 0.5).float().cpu()
    finally:
        for h in hooks:
            h.remove()
        for _, m in layers:
            m.record, m.last_offset, m.last_mask = False, None, None
    for v in result.values():
        v.pop("index")
    return result


def write_artefacts(folder: Path, result: dict) -> None:
    """Driver side: ``rows.csv``, ``artefacts.safetensors`` (tensors) and ``artefacts.json`` (the rest)."""
    import pandas as pd
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}

    def split(obj, prefix):
        if isinstance(obj, torch.Tensor):
            tensors[prefix] = obj.contiguous()
            return {"__tensor__": prefix}
        if isinstance(obj, dict):
            return {str(k): split(v, f"{prefix}.{k}" if prefix else str(k)) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [split(v, f"{prefix}.{i}") for i, v in enumerate(obj)]
        return obj

    rest = split(result.get("artefacts", {}), "")
    if result.get("rows"):
        pd.DataFrame(result["rows"]).to_csv(folder / "rows.csv", index=False)
    tmp = folder / "artefacts.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, folder / "artefacts.safetensors")
    doc = {"artefacts": rest, "attack_config": result.get("config", {}), "params": result.get("params", {})}
    (folder / "artefacts.json").write_text(json.dumps(doc, indent=1, default=str))


def read_artefacts(folder: str | Path) -> dict:
    """Inverse of :func:`write_artefacts` for the report: artefacts with tensors restored."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "artefacts.json").exists():
        return {}
    doc = json.loads((folder / "artefacts.json").read_text())
    tensors = load_file(str(folder / "artefacts.safetensors")) if (folder / "artefacts.safetensors").exists() else {}

    def join(obj):
        if isinstance(obj, dict):
            if set(obj) == {"__tensor__"}:
                return tensors[obj["__tensor__"]]
            return {k: join(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [join(v) for v in obj]
        return obj

    return join(doc["artefacts"])
