"""Datasets: one registry for image and graph data.

>>> from robustbench_geo.data import load_dataset
>>> test = load_dataset("mnist-scaled", split="test", seed=0)      # doctest: +SKIP
>>> cora = load_dataset("cora")                                      # doctest: +SKIP

A dataset *spec* string may carry options after a colon: ``cora:public`` (graph split),
``mnist-rotated:max_angle_deg=30``, ``sbm:nodes=100000,avg_degree=20`` (a generated graph).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from typing import Callable

from robustbench_geo.check import check_like, parse_value
from robustbench_geo.data.base import GraphDataset, ImageDataset, split_hash
from robustbench_geo.data.cluttered import load_mnist_cluttered
from robustbench_geo.data.geometric import load_mnist_rotated, load_mnist_scaled
from robustbench_geo.data.graphs import load_graph, load_prognn_perturbed
from robustbench_geo.data.images import load_cifar10, load_fashion_mnist, load_mnist
from robustbench_geo.data.sbm import load_sbm
from robustbench_geo.data.root import ChecksumError, DataMissingError, resolve_data_root
from robustbench_geo.registry import Registry


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is, known without loading it (used to check a model fits before training)."""

    name: str
    task: str  # "image" or "graph"
    num_classes: int
    in_channels: int | None = None
    image_size: tuple[int, int] | None = None
    description: str = ""


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: what it is and how to load it (``None`` for the stored graphs: :func:`load_graph`).

    ``classes_option`` names the loader option that sets the number of classes (generated graphs).
    """

    info: DatasetInfo
    loader: Callable | None = None
    classes_option: str | None = None


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(info: DatasetInfo, loader: Callable | None = None, classes_option: str | None = None) -> DatasetInfo:
    """Register a dataset; image datasets (and generated graphs) need ``loader(split, root, download, **options)``.

    ``classes_option``: the loader option that sets the number of classes (``info.num_classes`` is its default).
    """
    if info.task not in ("image", "graph"):
        raise ValueError(f"task: expected 'image' or 'graph', got {info.task!r}")
    if info.task == "image" and loader is None:
        raise ValueError(f"dataset {info.name!r}: image datasets need a loader")
    DATASETS.add(info.name, DatasetEntry(info, loader, classes_option))
    return info


for _info, _loader in (
    (DatasetInfo("mnist", "image", 10, 1, (28, 28), "MNIST digits (torchvision)"), load_mnist),
    (DatasetInfo("fashion-mnist", "image", 10, 1, (28, 28), "Fashion-MNIST (torchvision)"), load_fashion_mnist),
    (DatasetInfo("cifar10", "image", 10, 3, (32, 32), "CIFAR-10 (torchvision)"), load_cifar10),
    (DatasetInfo("mnist-scaled", "image", 10, 1, (28, 28),
                 "MNIST zoomed by Keras zoom in [1, 2.5] and shifted <= 20 % (seeded)"), load_mnist_scaled),
    (DatasetInfo("mnist-rotated", "image", 10, 1, (28, 28),
                 "MNIST rotated uniformly in +-max_angle_deg (default 45, seeded)"), load_mnist_rotated),
    (DatasetInfo("mnist-cluttered", "image", 10, 1, (56, 56),
                 "MNIST digit at a random scale (0.7-1.5) and position on a 56x56 canvas, 4 clutter "
                 "pieces (seeded)"), load_mnist_cluttered),
    (DatasetInfo("cora", "graph", 7, description="Cora: literature LCC (prognn/nettack splits) or Planetoid (public)"), None),
    (DatasetInfo("citeseer", "graph", 6, description="CiteSeer: literature LCC or Planetoid (public)"), None),
    (DatasetInfo("pubmed", "graph", 3, description="PubMed: Planetoid (public) or literature LCC"), None),
    (DatasetInfo("cora_ml", "graph", 7, description="Cora-ML: literature LCC"), None),
    (DatasetInfo("polblogs", "graph", 2, description="Political blogs: literature LCC, identity features"), None),
):
    register_dataset(_info, _loader)
del _info, _loader
register_dataset(DatasetInfo("sbm", "graph", 10, description="Seeded stochastic block model with class-conditional "
                             "binary features, any size (sbm:nodes=100000,avg_degree=20); generated locally"),
                 load_sbm, classes_option="classes")


def list_datasets(task: str | None = None, pattern: str = "*") -> list[str]:
    """Registered dataset names matching the glob ``pattern``, optionally only ``image`` or ``graph`` ones."""
    return DATASETS.names(pattern, None if task is None else (lambda e: e.info.task == task))


def parse_spec(spec: str) -> tuple[str, dict]:
    """Split ``name:key=value,key=value`` (or ``graph:split``) into a name and options."""
    name, _, rest = spec.partition(":")
    opts: dict = {}
    for part in filter(None, rest.split(",")):
        if "=" in part:
            k, v = part.split("=", 1)
            opts[k.strip()] = parse_value(v.strip())
        elif name in DATASETS and DATASETS.get(name).info.task == "graph":
            opts["split"] = part.strip()
        else:
            raise ValueError(f"dataset spec {spec!r}: expected name:key=value[,key=value], got {part!r}")
    return name, opts


def dataset_info(spec: str) -> DatasetInfo:
    """What the dataset of ``spec`` is (its number of classes follows a ``classes=`` option of generated graphs)."""
    name, opts = parse_spec(spec)
    entry = DATASETS.get(name)
    if entry.classes_option and entry.classes_option in opts:
        k = check_like(opts[entry.classes_option], entry.info.num_classes, f"dataset {name!r}: {entry.classes_option}")
        return replace(entry.info, num_classes=k)
    return entry.info


def load_dataset(spec: str, *, split: str | None = None, root=None, download: bool = True, seed: int = 0,
                 subset: int | None = None, **options):
    """Load an image or graph dataset by spec.

    Args:
        spec: registry name, optionally with options (see module docstring).
        split: ``train``/``test`` for images; ``prognn``/``nettack``/``public`` for graphs.
        root: data root (``--data-root``; else ``RBGEO_DATA``; else ``~/.cache/robustbench_geo``).
        download: try to download missing files (offline: a clear error names the files).
        seed: seed of geometric variants / random graph splits / subsets.
        subset: for images, a seeded random subset of this many samples.
        options: dataset-specific options (``max_angle_deg``, ``isotropic``, ...).

    Returns:
        :class:`ImageDataset` or :class:`GraphDataset`.
    """
    name, opts = parse_spec(spec)
    opts.update(options)
    info = dataset_info(name)
    loader = DATASETS.get(name).loader
    if info.task == "graph":
        if split is None:
            split = opts.pop("split", None)
        if loader is None:
            if opts:
                raise ValueError(f"dataset {name!r}: unknown options {sorted(opts)}; graph datasets take split only")
            return load_graph(name, split, root=root, download=download, seed=seed)
    else:
        split = split or "train"
        if split not in ("train", "test"):
            raise ValueError(f"split: expected 'train' or 'test' for image dataset {name!r}, got {split!r}")
    options = _loader_options(loader)
    unknown = sorted(set(opts) - set(options))
    if unknown:
        raise ValueError(f"dataset {name!r}: unknown options {unknown}; valid options: "
                         f"{', '.join(f'{k}={v!r}' for k, v in options.items()) or '(none)'}")
    opts = {k: check_like(v, options[k], f"dataset {name!r}: {k}") for k, v in opts.items()}
    if "seed" in options:
        opts["seed"] = seed
    ds = loader(split, root, download, **opts)
    return ds if info.task == "graph" else ds.subset(subset, seed)


def _loader_options(loader) -> dict:
    """The keyword options of an image loader (after ``split, root, download``) with their defaults."""
    params = list(inspect.signature(loader).parameters.values())[3:]
    return {p.name: p.default for p in params}


__all__ = [
    "DATASETS", "ChecksumError", "DataMissingError", "DatasetEntry", "DatasetInfo", "GraphDataset", "ImageDataset", "dataset_info", "list_datasets",
    "load_dataset", "load_graph", "load_prognn_perturbed", "load_sbm", "parse_spec", "register_dataset", "resolve_data_root",
    "split_hash",
]
