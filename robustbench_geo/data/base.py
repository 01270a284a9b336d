"""Dataset containers shared by the image and graph loaders."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import torch
from torch.utils.data import Dataset

from robustbench_geo.check import check_labels, check_number


class ImageDataset(Dataset):
    """In-memory image classification data: ``images`` ``(N, C, H, W)`` float32 in ``[0, 1]``.

    Attributes:
        name: registry name (``mnist-scaled``, ...).
        images: ``(N, C, H, W)`` float32 in ``[0, 1]``.
        labels: ``(N,)`` int64.
        classes: class names.
        meta: how the data was made (split, subset, seed, variant parameters): recorded in results.
    """

    def __init__(self, name: str, images: torch.Tensor, labels: torch.Tensor, classes: list[str], meta: dict):
        if images.dim() != 4:
            raise ValueError(f"images: expected shape (N, C, H, W), got {tuple(images.shape)}")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"labels: expected {images.shape[0]} labels, got {labels.shape[0]}")
        self.name, self.images, self.labels, self.classes, self.meta = name, images, labels.long(), list(classes), meta

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i], self.labels[i]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])

    def subset(self, n: int | None, seed: int = 0) -> "ImageDataset":
        """A seeded random subset of ``n`` samples, ``1 <= n <= len`` (all when ``n`` is None)."""
        if n is None:
            return self
        n = check_number(n, f"subset of {self.name} ({len(self)} samples)", integer=True, low=1, high=len(self))
        if n == len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n].sort().values
        meta = {**self.meta, "subset": n, "subset_seed": seed}
        if isinstance(meta.get("params"), dict):  # per-sample transforms follow their samples
            meta["params"] = {k: v[idx] if torch.is_tensor(v) and v.shape[:1] == (len(self),) else v
                              for k, v in meta["params"].items()}
        return ImageDataset(self.name, self.images[idx], self.labels[idx], self.classes, meta)

    def __repr__(self) -> str:
        return f"ImageDataset({self.name!r}, n={len(self)}, shape={tuple(self.images.shape[1:])}, classes={self.num_classes})"


@dataclass(frozen=True)
class GraphDataset:
    """One graph for node classification.

    Attributes:
        name: dataset name (``cora``, ...).
        split: split name (``prognn``, ``nettack``, ``public``).
        x: ``(N, F)`` float32 node features.
        edge_index: ``(2, E)`` int64, both directions of every undirected edge, no self-loops,
            sorted and coalesced.
        y: ``(N,)`` int64 labels.
        idx_train, idx_val, idx_test: int64 node ids.
        meta: provenance (source files, LCC, split seed and hash).
    """

    name: str
    split: str
    x: torch.Tensor
    edge_index: torch.Tensor
    y: torch.Tensor
    idx_train: torch.Tensor
    idx_val: torch.Tensor
    idx_test: torch.Tensor
    meta: dict = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def num_features(self) -> int:
        return self.x.shape[1]

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1

    @property
    def num_edges(self) -> int:
        """Number of undirected edges."""
        return self.edge_index.shape[1] // 2

    @property
    def split_hash(self) -> str:
        return split_hash(self.idx_train, self.idx_val, self.idx_test)

    def with_edges(self, edge_index: torch.Tensor, x: torch.Tensor | None = None, **meta) -> "GraphDataset":
        """A copy with another structure (and optionally other features)."""
        return replace(self, edge_index=edge_index, x=self.x if x is None else x, meta={**self.meta, **meta})

    def to(self, device) -> "GraphDataset":
        return replace(
            self, x=self.x.to(device), edge_index=self.edge_index.to(device), y=self.y.to(device),
            idx_train=self.idx_train.to(device), idx_val=self.idx_val.to(device), idx_test=self.idx_test.to(device),
        )

    def dense_adjacency(self) -> torch.Tensor:
        a = torch.zeros(self.num_nodes, self.num_nodes, device=self.x.device)
        a[self.edge_index[0], self.edge_index[1]] = 1.0
        return a

    @classmethod
    def from_pyg(cls, data, name: str | None = None, split: str | None = None) -> "GraphDataset":
        """A graph from a PyG ``Data`` with ``x``, ``edge_index``, ``y`` and ``train/val/test_mask``.

        Split semantics: the masks say which nodes are in which part (``(N,)`` bool each; the parts
        may overlap or leave nodes out, and are taken as given). Masks carry no order, so the
        indices come out in ascending node order, unless ``data`` also carries ``idx_train`` /
        ``idx_val`` / ``idx_test`` holding exactly the masks' nodes (as :meth:`to_pyg` writes them):
        then their order is kept, and with it the split's hash and the 40-target draw. Node ids,
        features and labels are kept as they are. The structure is made canonical (both directions of
        every edge, no self-loops, sorted, without duplicates), as every attack expects; edge
        attributes and weights are not read (the graph is binary).

        Args:
            name, split: the graph's name and split name; ``None`` takes ``data.name`` / ``data.split``
                when present (as :meth:`to_pyg` writes them), else ``"graph"`` / ``"masks"``.
        """
        missing = [k for k in ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask")
                   if getattr(data, k, None) is None]
        if missing:
            raise ValueError(f"data: expected a PyG Data with x, edge_index, y, train_mask, val_mask and test_mask, "
                             f"missing {', '.join(missing)}")
        x, y, ei = data.x.detach().float().cpu(), data.y.detach().cpu(), data.edge_index.detach().long().cpu()
        n = x.shape[0]
        if x.dim() != 2:
            raise ValueError(f"data.x: expected node features (N, F), got {tuple(x.shape)}")
        y = check_labels(y, n, "data.y").long()
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"data.x: expected finite node features, got {int((~torch.isfinite(x)).sum())} "
                             f"NaN/infinite of {x.numel()}")
        if ei.dim() != 2 or ei.shape[0] != 2 or (ei.numel() and (ei.min() < 0 or ei.max() >= n)):
            raise ValueError(f"data.edge_index: expected (2, E) node ids in [0, {n}), got shape {tuple(ei.shape)}")
        idx = {}
        for part in ("train", "val", "test"):
            mask = getattr(data, f"{part}_mask").detach().cpu()
            if mask.dtype != torch.bool or mask.shape != (n,):
                raise ValueError(f"data.{part}_mask: expected a ({n},) bool mask, got {mask.dtype} {tuple(mask.shape)}")
            idx[part] = mask.nonzero().squeeze(1)
            order = getattr(data, f"idx_{part}", None)
            if isinstance(order, torch.Tensor) and order.dim() == 1 and order.numel() == idx[part].numel() \
                    and torch.equal(torch.sort(order.detach().cpu().long()).values, idx[part]):
                idx[part] = order.detach().cpu().long()
        ei = ei[:, ei[0] != ei[1]]
        ids = torch.unique(torch.cat([ei[0] * n + ei[1], ei[1] * n + ei[0]]))
        edge_index = torch.stack([ids // n, ids % n])
        meta = dict(getattr(data, "meta", None) or {}) if isinstance(getattr(data, "meta", None), dict) else {}
        meta.setdefault("source", "torch_geometric.data.Data")
        name = name if name is not None else str(getattr(data, "name", None) or "graph")
        split = split if split is not None else str(getattr(data, "split", None) or "masks")
        return cls(name, split, x, edge_index, y, idx["train"], idx["val"], idx["test"], meta)

    def to_pyg(self):
        """This graph as a PyG ``torch_geometric.data.Data``.

        ``x``, ``edge_index`` (both directions of every edge, sorted) and ``y`` as they are;
        ``train_mask`` / ``val_mask`` / ``test_mask`` ``(N,)`` bool marking the split's nodes; and,
        so that :meth:`from_pyg` gives this graph back exactly, ``idx_train`` / ``idx_val`` /
        ``idx_test`` (the split in its order), ``name``, ``split`` and ``meta``. Tensors stay on
        their device.
        """
        from torch_geometric.data import Data

        n = self.num_nodes

        def mask(idx):
            m = torch.zeros(n, dtype=torch.bool, device=self.x.device)
            m[idx] = True
            return m

        return Data(x=self.x, edge_index=self.edge_index, y=self.y, train_mask=mask(self.idx_train),
                    val_mask=mask(self.idx_val), test_mask=mask(self.idx_test), idx_train=self.idx_train,
                    idx_val=self.idx_val, idx_test=self.idx_test, name=self.name, split=self.split, meta=dict(self.meta))

    def __repr__(self) -> str:
        return (f"GraphDataset({self.name!r}, split={self.split!r}, nodes={self.num_nodes}, edges={self.num_edges}, "
                f"features={self.num_features}, classes={self.num_classes}, train/val/test="
                f"{len(self.idx_train)}/{len(self.idx_val)}/{len(self.idx_test)})")


def split_hash(*indices: torch.Tensor) -> str:
    """Short hash of a split's node ids, recorded with graph results."""
    h = hashlib.sha256()
    for idx in indices:
        h.update(idx.detach().cpu().to(torch.int64).numpy().tobytes())
        h.update(b"|")
    return h.hexdigest()[:12]
