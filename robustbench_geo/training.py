"""Training loops: mini-batch for images, full-batch with early stopping for graphs.

One protocol each, used everywhere (CLI, sweeps, benchmarks), because model selection alone moves
robustness results by points:

* images: Adam (``lr`` 1e-3), batch 128, cross-entropy, optional geometric augmentation drawn by
  the same samplers as the dataset variants, then an optional spatial defense (random-transform
  augmentation over a box, worst-of-k or first-order adversarial training; see
  :mod:`robustbench_geo.train_defenses`), fixed number of epochs, last epoch kept;
* graphs: Adam (``lr`` 0.01, weight decay 5e-4), full batch, up to ``epochs`` (1000) epochs,
  early stopping on the validation loss with ``patience`` (100) and the weights of the epoch with
  the lowest validation loss restored (ties keep the earlier epoch).

Training is deterministic on the CPU for a fixed seed.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from robustbench_geo.check import check_cost, check_finite, check_number, check_positive_int, unknown_name_error
from robustbench_geo.checkpoint import data_fingerprint, load_checkpoint, save_checkpoint, versions
from robustbench_geo.data import dataset_info, load_dataset
from robustbench_geo.data.base import GraphDataset, ImageDataset
from robustbench_geo.geometry import get_augmentation
from robustbench_geo.models import build_model, set_deform_backend
from robustbench_geo.models.predict import accuracy
from robustbench_geo.models.registry import check_task, get_model_entry
from robustbench_geo.threads import graph_threads
from robustbench_geo.train_defenses import get_defense


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


#: learning rates above this diverge for every model here (Adam steps of this size are not training)
MAX_LR = 10.0

#: learning-rate schedules for image training (graphs train at a constant rate with early stopping)
SCHEDULES = ("constant", "cosine")

#: which parameters an image model trains: all of them; the deformable offset predictors only (batch norm
#: frozen in inference mode, the fine-tuning of Dai et al.'s experiment as we run it); or the offsets and
#: every batch-norm layer (scale, shift and running statistics, normalising with batch statistics), as the
#: Keras reference of the Scaled MNIST experiment fine-tunes
TRAINABLE = ("all", "offsets", "offsets+bn")


@dataclass
class TrainConfig:
    """Training settings recorded in checkpoints (defaults per task are filled by :func:`default_config`)."""

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    weight_decay: float = 0.0
    seed: int = 0
    augment: str = "none"
    patience: int = 100  # graphs only
    trainable: str = "all"  # one of TRAINABLE
    schedule: str = "constant"  # images: "constant" lr, or "cosine" annealing to 0 over all steps
    defense: str = "none"  # images: spatial defense spec, stored canonical (every parameter written out)

    def __post_init__(self):
        self.epochs = check_number(self.epochs, "epochs", integer=True, low=1)  # 0 would save an untrained model
        self.lr = check_number(self.lr, "lr", low=0.0, low_open=True, high=MAX_LR)
        self.batch_size = check_positive_int(self.batch_size, "batch_size")
        self.weight_decay = check_number(self.weight_decay, "weight_decay", low=0.0)
        self.seed = check_number(self.seed, "seed", integer=True)
        self.patience = check_positive_int(self.patience, "patience")
        if self.schedule not in SCHEDULES:
            raise unknown_name_error("learning-rate schedule", self.schedule, SCHEDULES)
        if self.trainable not in TRAINABLE:
            raise unknown_name_error("trainable parameter set", self.trainable, TRAINABLE)
        get_augmentation(self.augment)  # validates the name
        self.defense = get_defense(self.defense).spec

    def record(self) -> dict:
        """The settings as stored in checkpoints and hashed by sweeps. ``defense`` is left out when it is
        ``none``, so a configuration without a defense keeps the hash it had before defenses existed."""
        out = asdict(self)
        if out["defense"] == "none":
            del out["defense"]
        return out


def default_config(task: str, model: str | nn.Module | None = None, **overrides) -> TrainConfig:
    """The task's defaults, then the model's own ``train_defaults`` (graph models), then ``overrides`` (``None`` skipped).

    ``model`` is a registry name / plug-in spec or a built module; a model class (or factory) may
    carry ``train_defaults``, e.g. ``{"weight_decay": 1e-3, "patience": 200}`` (its authors' settings).
    """
    base = {"epochs": 1000, "lr": 0.01, "weight_decay": 5e-4} if task == "graph" else {}
    if model is not None and task == "graph":
        base.update(model_train_defaults(model))
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


def model_train_defaults(model: str | nn.Module) -> dict:
    """A model's ``train_defaults`` (``{}`` when it has none)."""
    owner = get_model_entry(model).factory if isinstance(model, str) else model
    return dict(getattr(owner, "train_defaults", None) or {})


def _trainable_parameters(model: nn.Module, which: str) -> list[nn.Parameter]:
    if which == "all":
        return [p for p in model.parameters() if p.requires_grad]
    params = [p for n, p in model.named_parameters() if "offset_conv" in n]
    if not params:
        raise ValueError(f"trainable={which!r} needs a model with deformable layers (offset predictors); this one has none")
    if which == "offsets+bn":
        params += [p for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()]
    return params


def check_training_cost(cfg: TrainConfig, size: int, unit: str) -> None:
    """Refuse a number of epochs no machine could finish (one line with the estimate, before any step).

    Every epoch counts at least 100 samples, the time of one optimiser step and its Python overhead.
    """
    check_cost(f"training for epochs={cfg.epochs} on {size} {unit}", samples=cfg.epochs * max(size, 100),
               hint="use fewer epochs")


def train_image_model(model: nn.Module, train: ImageDataset, cfg: TrainConfig, *, device="cpu",
                      progress: bool = True, on_epoch: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Train in place; returns per-epoch history (loss, accuracy, seconds)."""
    check_training_cost(cfg, len(train), "images")
    seed_everything(cfg.seed)
    model.to(device)
    params = _trainable_parameters(model, cfg.trainable)
    if cfg.trainable != "all":  # no gradients for the frozen weights: the same steps, less backward work
        trainable_ids = {id(p) for p in params}
        frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in trainable_ids]
        for p in frozen:
            p.requires_grad_(False)
        try:
            return _train_image_model(model, train, cfg, params, device, progress, on_epoch)
        finally:
            for p in frozen:
                p.requires_grad_(True)
    return _train_image_model(model, train, cfg, params, device, progress, on_epoch)


def _train_image_model(model, train, cfg, params, device, progress, on_epoch) -> list[dict]:
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * -(-len(train) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1)) if cfg.schedule == "cosine" else None
    sampler = get_augmentation(cfg.augment)
    defense = get_defense(cfg.defense)
    g_order = torch.Generator().manual_seed(cfg.seed)
    g_aug = torch.Generator().manual_seed(cfg.seed + 1)
    g_def = torch.Generator().manual_seed(cfg.seed + 2)  # its own stream: a defense leaves the augmentation's draws alone
    n, history = len(train), []
    for epoch in range(cfg.epochs):
        model.train()
        if cfg.trainable == "offsets":  # fine-tune offsets only: keep BN statistics fixed
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        order = torch.randperm(n, generator=g_order)
        t0, tot_loss, correct = time.perf_counter(), 0.0, 0
        bar = tqdm(range(0, n, cfg.batch_size), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False, unit="batch")
        for i in bar:
            idx = order[i:i + cfg.batch_size]
            x, y = train.images[idx], train.labels[idx]
            if sampler is not None:
                x = sampler(x, g_aug)  # geometric samplers clamp to [0, 1]; smoothing noise is not clamped
            x, y = x.to(device), y.to(device)
            if defense.name != "none":
                x = defense(model, x, y, g_def)
            logits = model(x)
            loss = check_finite(F.cross_entropy(logits, y), f"training loss (epoch {epoch + 1})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            tot_loss += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        rec = {"epoch": epoch + 1, "loss": tot_loss / max(n, 1), "train_accuracy": correct / max(n, 1),
               "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        history.append(rec)
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}: loss {rec['loss']:.4f}, train acc {rec['train_accuracy']:.4f} ({rec['seconds']:.1f} s)")
        if on_epoch:
            on_epoch(epoch, rec)
    model.eval()
    return history


def train_graph_model(model: nn.Module, graph: GraphDataset, cfg: TrainConfig, *, device="cpu",
                      edge_index: torch.Tensor | None = None, edge_weight: torch.Tensor | None = None,
                      progress: bool = True) -> list[dict]:
    """Full-batch training with early stopping on validation loss; restores the best weights.

    A model with ``training_loss(x, edge_index, edge_weight, y, idx_train, epoch=...)`` is trained on
    that loss instead of the cross-entropy of ``model(x, edge_index, edge_weight)`` on the training
    nodes (consistency losses, regularisers, jointly learned graphs); everything else is the same.
    Runs with :func:`~robustbench_geo.threads.graph_threads` (one intra-op thread on small graphs unless
    the user chose a number; ``RBGEO_GRAPH_THREADS`` overrides).
    """
    with graph_threads(graph):
        return _train_graph_model(model, graph, cfg, device, edge_index, edge_weight, progress)


def _train_graph_model(model, graph, cfg, device, edge_index, edge_weight, progress) -> list[dict]:
    check_training_cost(cfg, graph.num_nodes, "nodes")
    seed_everything(cfg.seed)
    model.to(device)
    g = graph.to(device)
    ei = g.edge_index if edge_index is None else edge_index.to(device)
    ew = None if edge_weight is None else edge_weight.to(device)
    opt = torch.optim.Adam(_trainable_parameters(model, cfg.trainable), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_state, since, history = float("inf"), copy.deepcopy(model.state_dict()), 0, []
    bar = tqdm(range(cfg.epochs), desc="train", disable=not progress, leave=False, unit="epoch")
    custom_loss = getattr(model, "training_loss", None)  # models with their own objective (GRAND, Pro-GNN, ...)
    for epoch in bar:
        model.train()
        if custom_loss is not None:
            loss = custom_loss(g.x, ei, ew, g.y, g.idx_train, epoch=epoch)
        else:
            out = model(g.x, ei, ew)
            loss = F.cross_entropy(out[g.idx_train], g.y[g.idx_train])
        check_finite(loss, f"training loss (epoch {epoch + 1})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            out = model(g.x, ei, ew)
            val_loss = F.cross_entropy(out[g.idx_val], g.y[g.idx_val]).item()
            val_acc = (out[g.idx_val].argmax(1) == g.y[g.idx_val]).float().mean().item()
        history.append({"epoch": epoch + 1, "loss": loss.item(), "val_loss": val_loss, "val_accuracy": val_acc})
        bar.set_postfix(loss=f"{loss.item():.3f}", val_loss=f"{val_loss:.3f}", val_acc=f"{val_acc:.3f}")
        if val_loss < best:
            best, best_state, since = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            since += 1
            if since >= cfg.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return history


@dataclass
class TrainResult:
    """What :func:`fit` produced: the model, its checkpoint metadata and where it was saved."""

    model: nn.Module
    meta: dict
    checkpoint: Path | None = None
    history: list = field(default_factory=list)


def fit(model: str, dataset: str, *, epochs: int | None = None, lr: float | None = None, batch_size: int | None = None,
        seed: int = 0, augment: str = "none", device: str = "cpu", out: str | Path | None = None,
        data_root=None, subset: int | None = None, test_subset: int | None = None, deform_backend: str = "auto",
        trainable: str = "all", init_from: str | Path | None = None, model_kwargs: dict | None = None,
        schedule: str = "constant", defense: str = "none", progress: bool = True, download: bool = True) -> TrainResult:
    """Train a registered (or plug-in) model on a dataset and optionally save a checkpoint.

    This is what ``rbgeo train`` runs. The model/dataset fit (channels, classes, image size, task)
    is checked before any training.

    Args:
        model: registry name or plug-in spec.
        dataset: dataset spec (``mnist``, ``mnist-scaled``, ``cora``, ``cora:public``, ...).
        epochs, lr, batch_size: override the task's defaults (see module docstring).
        seed: seed of initialisation, batch order, augmentation and dataset variants.
        augment: ``none``, ``scale``, ``rotate``, ``affine`` or a smoothing augmentation such as
            ``rotate-noise:angle_deg=35,sigma=0.5`` (images; see :func:`~robustbench_geo.geometry.get_augmentation`).
        out: checkpoint stem to save to (``None``: do not save).
        subset, test_subset: seeded random subsets of the train/test images.
        deform_backend: deformable-convolution backend for deformable models.
        trainable: ``all`` or ``offsets`` (fine-tune only deformable offsets).
        init_from: checkpoint to start from (same model name and kwargs).
        model_kwargs: extra factory kwargs (``num_deform``, ``deform``, ``hidden``, ...).
        schedule: image learning-rate schedule, ``constant`` or ``cosine`` (annealed to 0 per step).
        defense: image spatial defense ``NAME[:key=value,...]``: ``none``, ``augment``, ``worst_of_k``
            (e.g. ``worst_of_k:k=10``) or ``affine_pgd`` (see :mod:`robustbench_geo.train_defenses`); applied
            after ``augment``. The checkpoint records it under ``train.defense`` (canonical spec) and
            ``defense`` (name, parameters and the report label such as ``wo10``).
    """
    info = dataset_info(dataset)
    check_task(model, info)  # fails before loading data on a task mismatch
    cfg = default_config(info.task, model, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, augment=augment,
                         trainable=trainable, schedule=schedule, defense=defense)
    if info.task == "graph" and (subset is not None or test_subset is not None):
        raise ValueError("subset, test_subset: apply to image datasets only; graphs train full-batch on their whole split")
    if info.task == "graph" and augment != "none":
        raise ValueError("augment: geometric augmentation applies to image datasets only")
    if info.task == "graph" and cfg.defense != "none":
        raise ValueError("defense: spatial defenses apply to image datasets only")
    if info.task == "graph" and schedule != "constant":
        raise ValueError("schedule: graphs train at a constant learning rate with early stopping; expected 'constant'")
    t0 = time.perf_counter()
    if info.task == "image":
        train = load_dataset(dataset, split="train", root=data_root, seed=seed, subset=subset, download=download)
        test = load_dataset(dataset, split="test", root=data_root, seed=seed, subset=test_subset, download=download)
    else:
        train = test = load_dataset(dataset, root=data_root, seed=seed, download=download)
    seed_everything(seed)  # the initialisation depends on the seed only, not on what ran before
    net, kwargs = build_model(model, train, **(model_kwargs or {}))
    if init_from is not None:
        net, init_meta = load_checkpoint(init_from, plugin=model)  # imports no plug-in other than `model`
        if init_meta["model"] != model:
            raise ValueError(f"init_from: checkpoint is a {init_meta['model']!r}, not a {model!r}")
        kwargs = init_meta["model_kwargs"]
    backend = set_deform_backend(net, deform_backend, device=device)  # the backend training runs with
    if info.task == "image":
        history = train_image_model(net, train, cfg, device=device, progress=progress)
    else:
        history = train_graph_model(net, train, cfg, device=device, progress=progress)
    net.cpu()
    acc = accuracy(net, test)
    meta = {
        "model": model, "model_kwargs": kwargs, "task": info.task, "dataset": dataset,
        "dataset_meta": {k: v for k, v in test.meta.items() if k != "params"}, "train": cfg.record(),
        "seed": seed, "epochs": cfg.epochs, "epochs_run": len(history), "clean_accuracy": acc,
        "deform_backend": backend, "device": str(device), "train_seconds": time.perf_counter() - t0,
        "init_from": str(init_from) if init_from else None, "versions": versions(), "trained_on": data_fingerprint(test),
    }
    if info.task == "image":
        meta["train_images"], meta["test_images"] = len(train), len(test)
    if cfg.defense != "none":
        meta["defense"] = get_defense(cfg.defense).describe()
    if info.task == "graph":
        meta["split"] = train.split
        meta["split_hash"] = train.split_hash
    path = save_checkpoint(out, net, meta) if out is not None else None
    return TrainResult(net, meta, path, history)
