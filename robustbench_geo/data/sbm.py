"""Seeded synthetic graphs: a stochastic block model with class-conditional features (``sbm``).

Graphs of any size, generated locally (nothing to download), for measuring how attacks scale:

    sbm:nodes=100000,classes=10,avg_degree=20,features=128

* **Classes**: ``nodes`` nodes, labels balanced (``i mod classes`` after a seeded permutation).
* **Edges**: a stochastic block model. ``homophily`` is the expected share of edges inside a
  class; the rest fall between classes. Every block (a class with itself, or a pair of classes) gets
  ``Binomial(pairs in the block, p_block)`` edges, where ``p_block`` makes the expected average
  degree ``avg_degree``; the edges of a block are uniformly random pairs of it (the rare duplicate
  drawn twice is merged, so a block has at most that many edges). No self-loops.
* **Features**: binary, class-conditional (bag-of-words-like, as the citation graphs): each class
  has a random prototype of ``features // classes`` feature ids (drawn independently per class);
  a node switches on each feature of its class's prototype with probability ``signal`` and every
  other feature with probability ``noise``.
* **LCC**: the largest connected component is kept (nodes in their original order); at the default
  ``avg_degree`` it is the whole graph up to a few nodes.
* **Split** ``random``: stratified 10 % / 10 % / 80 % train/val/test of the LCC, seeded.

The seed (``load_dataset(spec, seed=...)``) fixes everything; the same spec and seed give the same
graph on every machine (numpy's PCG64 generator). Generation at 100k nodes and 1M edges takes a
few seconds.

======================  =======  =========  ========  =======
spec (seed 0)           nodes    edges      features  classes
======================  =======  =========  ========  =======
``sbm:nodes=1000``      1,000    9,719      128       10
``sbm:nodes=10000``     10,000   99,776     128       10
``sbm:nodes=100000``    100,000  1,000,270  128       10
======================  =======  =========  ========  =======
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from robustbench_geo.check import check_number
from robustbench_geo.data.base import GraphDataset
from robustbench_geo.data.graphs import largest_connected_component, stratified_split

SBM_SPLITS = ("random",)


def load_sbm(split: str | None = None, root=None, download: bool = True, seed: int = 0, *, nodes: int = 1000,
             classes: int = 10, avg_degree: float = 20.0, features: int = 128, homophily: float = 0.35,
             signal: float = 0.25, noise: float = 0.05) -> GraphDataset:
    """Generate the ``sbm`` graph (see the module docstring); ``root`` and ``download`` are unused.

    Args:
        split: ``random`` (the default and only split: stratified 10/10/80, seeded).
        seed: seed of the graph, the features and the split.
        nodes: nodes before the LCC is taken; classes: number of classes (>= 2).
        avg_degree: expected average degree (undirected edges per node x 2).
        features: binary features per node; homophily: expected share of edges inside a class in ``[0, 1]``.
        signal, noise: probability that a node has a feature of its class's prototype / any other feature.
    """
    if split not in (None, *SBM_SPLITS):
        raise ValueError(f"split: the sbm graphs have one split, 'random' (stratified 10/10/80), got {split!r}")
    nodes = check_number(nodes, "sbm: nodes", integer=True, low=2, high=50_000_000)
    classes = check_number(classes, "sbm: classes", integer=True, low=2, high=nodes)
    avg_degree = check_number(avg_degree, "sbm: avg_degree", low=0.0, low_open=True, high=nodes - 1)
    features = check_number(features, "sbm: features", integer=True, low=classes, high=100_000)
    homophily = check_number(homophily, "sbm: homophily", low=0.0, high=1.0)
    signal = check_number(signal, "sbm: signal", low=0.0, high=1.0)
    noise = check_number(noise, "sbm: noise", low=0.0, high=1.0)
    if nodes * features > 2_000_000_000:
        raise ValueError(f"sbm: nodes x features = {nodes * features} float32 entries; expected at most 2e9")
    rng = np.random.Generator(np.random.PCG64(seed))
    y = np.empty(nodes, dtype=np.int64)
    y[rng.permutation(nodes)] = np.arange(nodes) % classes
    pairs = _block_edges(rng, y, classes, avg_degree, homophily)
    x = _features(rng, y, classes, features, signal, noise)
    adj = sp.coo_matrix((np.ones(pairs.shape[1], dtype=np.float32), (pairs[0], pairs[1])), shape=(nodes, nodes))
    keep = largest_connected_component(adj)
    new_id = np.full(nodes, -1, dtype=np.int64)
    new_id[keep] = np.arange(len(keep))
    pairs = new_id[pairs]
    pairs = pairs[:, (pairs >= 0).all(0)]
    n = len(keep)
    ids = np.sort(np.concatenate([pairs[0] * n + pairs[1], pairs[1] * n + pairs[0]]))
    edge_index = torch.from_numpy(np.stack([ids // n, ids % n])).contiguous()
    y_t = torch.from_numpy(y[keep])
    idx_train, idx_val, idx_test = stratified_split(y_t, (0.1, 0.1, 0.8), seed)
    params = {"nodes": nodes, "classes": classes, "avg_degree": avg_degree, "features": features,
              "homophily": homophily, "signal": signal, "noise": noise}
    meta = {"dataset": "sbm", "source": "generated (robustbench_geo.data.sbm, numpy PCG64)", "params": params,
            "seed": seed, "split_seed": seed, "lcc": True, "lcc_nodes": n}
    return GraphDataset("sbm", "random", torch.from_numpy(x[keep]), edge_index, y_t, idx_train, idx_val, idx_test, meta)


def _block_edges(rng: np.random.Generator, y: np.ndarray, classes: int, avg_degree: float,
                 homophily: float) -> np.ndarray:
    """``(2, E)`` distinct undirected pairs ``i < j`` of the block model (see the module docstring)."""
    members = [np.nonzero(y == c)[0] for c in range(classes)]
    sizes = np.array([len(m) for m in members], dtype=np.float64)
    inside = float((sizes * (sizes - 1) / 2).sum())
    between = float((sizes.sum() ** 2 - (sizes ** 2).sum()) / 2)
    edges = avg_degree * sizes.sum() / 2
    p_in = min(1.0, homophily * edges / inside) if inside else 0.0
    p_out = min(1.0, (1 - homophily) * edges / between) if between else 0.0
    out = []
    for a in range(classes):
        for b in range(a, classes):
            ma, mb = members[a], members[b]
            total = len(ma) * (len(ma) - 1) // 2 if a == b else len(ma) * len(mb)
            k = int(rng.binomial(total, p_in if a == b else p_out)) if total else 0
            if k == 0:
                continue
            i = ma[rng.integers(0, len(ma), k)]
            if a == b:  # a uniformly random other member: shift by 1..len-1
                j = ma[(np.searchsorted(ma, i) + rng.integers(1, len(ma), k)) % len(ma)]
            else:
                j = mb[rng.integers(0, len(mb), k)]
            out.append(np.stack([np.minimum(i, j), np.maximum(i, j)]))
    if not out:
        return np.zeros((2, 0), dtype=np.int64)
    pairs = np.concatenate(out, 1)
    n = len(y)
    ids = np.unique(pairs[0] * n + pairs[1])
    return np.stack([ids // n, ids % n])


def _features(rng: np.random.Generator, y: np.ndarray, classes: int, features: int, signal: float,
              noise: float) -> np.ndarray:
    """``(N, F)`` float32 binary features: each class's prototype features on with ``signal``, others with ``noise``."""
    per_class = max(1, features // classes)
    proto = np.zeros((classes, features), dtype=bool)
    for c in range(classes):
        proto[c, rng.choice(features, per_class, replace=False)] = True
    p = np.where(proto[y], np.float32(signal), np.float32(noise))
    return (rng.random((len(y), features), dtype=np.float32) < p).astype(np.float32)
