"""Small graphs and quickly trained models for the structure-attack tests."""

from __future__ import annotations

import pytest
import torch

from robustbench_geo.data.base import GraphDataset
from robustbench_geo.data.graphs import stratified_split


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    """The CI machine has 2 shared cores: one intra-op thread is much faster than two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sbm_graph(n: int = 60, classes: int = 3, features: int = 24, p_in: float = 0.15, p_out: float = 0.02,
              seed: int = 0) -> GraphDataset:
    """A small stochastic block model with class-correlated binary features; every node has an edge."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    p = torch.where(y[:, None] == y[None, :], p_in, p_out)
    a = (torch.rand(n, n, generator=g) < p).triu(1)
    for i in range(n):  # a ring inside each class keeps every node connected
        j = (i + classes) % n
        a[min(i, j), max(i, j)] = True
    a = a | a.T
    a.fill_diagonal_(False)
    ei = a.nonzero().T.contiguous()
    proto = torch.rand(classes, features, generator=g) < 0.3
    x = ((torch.rand(n, features, generator=g) < 0.1) | (proto[y] & (torch.rand(n, features, generator=g) < 0.7))).float()
    tr, va, te = stratified_split(y, (0.3, 0.2, 0.5), seed)
    return GraphDataset("sbm", "test", x, ei, y, tr, va, te, {})


def pendant_graph(n: int = 40, pendants: int = 10, seed: int = 0) -> GraphDataset:
    """:func:`sbm_graph` plus ``pendants`` degree-1 nodes, each attached to one node and copying its class,
    features and split (the minimum degree of :func:`sbm_graph` is 2, which hides isolation rules)."""
    base = sbm_graph(n=n, seed=seed)
    anchors = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:pendants]
    new = torch.arange(n, n + pendants)
    ei = torch.cat([base.edge_index, torch.stack([anchors, new]), torch.stack([new, anchors])], 1)
    ei = ei[:, torch.argsort(ei[0] * (n + pendants) + ei[1])].contiguous()
    x, y = torch.cat([base.x, base.x[anchors]]), torch.cat([base.y, base.y[anchors]])
    test = torch.cat([base.idx_test, new])
    return GraphDataset("sbm+pendants", "test", x, ei, y, base.idx_train, base.idx_val, test, {})


@pytest.fixture(scope="package")
def small_graph() -> GraphDataset:
    return sbm_graph()


def train_small(name: str, graph: GraphDataset, seed: int = 0, epochs: int = 100):
    from robustbench_geo.models import build_model
    from robustbench_geo.training import TrainConfig, seed_everything, train_graph_model

    seed_everything(seed)
    model, kwargs = build_model(name, graph)
    cfg = TrainConfig(epochs=epochs, lr=0.01, weight_decay=5e-4, seed=seed, patience=epochs)
    train_graph_model(model, graph, cfg, progress=False)
    meta = {"model": name, "model_kwargs": kwargs, "train": {"epochs": epochs, "lr": 0.01, "weight_decay": 5e-4,
                                                             "seed": seed, "patience": epochs}}
    return model, meta


@pytest.fixture(scope="package")
def small_gcn(small_graph):
    return train_small("gcn", small_graph)
