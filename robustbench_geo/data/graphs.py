"""Node-classification graphs: PyG Planetoid and the attack-literature npz graphs.

====================  ======  ======  ========  =======  ==============================
name (split)          nodes   edges   features  classes  source
====================  ======  ======  ========  =======  ==============================
cora (public)         2,708   5,278   1,433     7        PyG ``Planetoid`` ``Cora/raw``
citeseer (public)     3,327   4,552   3,703     6        PyG ``Planetoid``
pubmed (public)       19,717  44,324  500       3        PyG ``Planetoid``
cora (prognn/nettack) 2,485   5,069   1,433     7        ``npz/cora.npz``, LCC
citeseer (lit.)       2,110   3,668   3,703     6        ``npz/citeseer.npz``, LCC
cora_ml (lit.)        2,810   7,981   2,879     7        ``npz/cora_ml.npz``, LCC
polblogs (lit.)       1,222   16,714  (none)    2        ``npz/polblogs.npz``, LCC
====================  ======  ======  ========  =======  ==============================

The literature graphs follow the Nettack/Metattack setting: symmetrised, binarised, no
self-loops, largest connected component (nodes kept in their original order). Splits:

* ``prognn``: the fixed Pro-GNN split (``prognn/<name>_prognn_splits.json``; indices into the LCC);
* ``nettack``: stratified 10 % / 10 % / 80 % train/val/test, seeded;
* ``public``: the Planetoid public split (20 per class / 500 / 1000).

npz files are read with ``allow_pickle=False`` (only the numeric keys).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from robustbench_geo.check import unknown_name_error
from robustbench_geo.data.base import GraphDataset
from robustbench_geo.data.root import prepare_files, resolve_data_root

PLANETOID_NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
LITERATURE_NAMES = ("cora", "citeseer", "cora_ml", "polblogs", "pubmed")
GRAPH_SPLITS = ("prognn", "nettack", "public")
DEFAULT_SPLIT = {"cora": "prognn", "citeseer": "prognn", "cora_ml": "prognn", "polblogs": "prognn", "pubmed": "public"}

_PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data/"
_NPZ_URL = "https://raw.githubusercontent.com/danielzuegner/gnn-meta-attack/master/data/{name}.npz"
_PROGNN_URL = "https://raw.githubusercontent.com/ChandlerBang/Pro-GNN/master/"

#: MD5s of the raw files we know (others are loaded unchecked).
KNOWN_MD5 = {
    "Cora/raw/ind.cora.allx": "c9083193a57057dd1238321e140194d7",
    "Cora/raw/ind.cora.ally": "125d70817fe1fdbfdcad991995e81579",
    "Cora/raw/ind.cora.graph": "b37c419cec179f45834467630c278e4c",
    "Cora/raw/ind.cora.test.index": "9b822cae1d01f41e8bf8782e20367c0e",
    "Cora/raw/ind.cora.tx": "b29c36916768e1d2f55391c1aa9317ac",
    "Cora/raw/ind.cora.ty": "48bf43f54fa5b86089a4bd0299795f10",
    "Cora/raw/ind.cora.x": "190831eee19d8f330d89d94b40a65c5a",
    "Cora/raw/ind.cora.y": "78344284e3ff7fd24eb9c307d51351eb",
    "npz/cora.npz": "96ac6a97f00d692ea16370c2550941bc",
    "prognn/cora_prognn_splits.json": "9e55ebd38726f654c4bfbc74a195aa6e",
    "prognn/cora_meta_adj_0.05.npz": "ae4720e45980e1a667fd7dcf11cca421",
    "prognn/cora_meta_adj_0.1.npz": "66f8cb00a97cd5d8bbb96def84d48204",
    "prognn/cora_meta_adj_0.15.npz": "5d56c940074f8025a434134b188f8cb7",
    "prognn/cora_meta_adj_0.2.npz": "dd52cf1f3fb55de682c75cbc7aa702ab",
    "prognn/cora_meta_adj_0.25.npz": "c888bfb54354a7cf61ae63eaea98e87d",
    "prognn/cora_nettack_adj_1.0.npz": "e484b1fd7b1daf3a34f2ab2c1657367a",
    "prognn/cora_nettack_adj_2.0.npz": "f03a924f930427217c275c81c416ef43",
    "prognn/cora_nettack_adj_3.0.npz": "b7eff4671ef3765fc20fbe075979095e",
    "prognn/cora_nettack_adj_4.0.npz": "b9dbe60d453442e9ba74f4b6f92dbd5e",
    "prognn/cora_nettack_adj_5.0.npz": "be905f3a73ad914942aa09a2c6228d12",
    "prognn/cora_nettacked_nodes.json": "b4249fe29deca8db1f215514f13006de",
}


def _file(rel: str, url: str | None) -> tuple[str, str | None, str | None]:
    return rel, KNOWN_MD5.get(rel), url


def load_graph(name: str, split: str | None = None, root=None, download: bool = True, seed: int = 0) -> GraphDataset:
    """Load a node-classification graph.

    Args:
        name: ``cora``, ``citeseer``, ``pubmed``, ``cora_ml`` or ``polblogs``.
        split: ``prognn``, ``nettack`` or ``public``; default per dataset (``cora`` -> ``prognn``).
        root: data root (see :mod:`robustbench_geo.data.root`).
        download: try to download missing files.
        seed: seed of the ``nettack`` split (ignored by fixed splits).
    """
    if name not in DEFAULT_SPLIT:
        raise unknown_name_error("graph dataset", name, DEFAULT_SPLIT)
    split = split or DEFAULT_SPLIT[name]
    if split not in GRAPH_SPLITS:
        raise unknown_name_error("graph split", split, GRAPH_SPLITS)
    if split == "public":
        if name not in PLANETOID_NAMES:
            raise ValueError(f"split 'public' exists only for {', '.join(PLANETOID_NAMES)}; use 'prognn' or 'nettack' for {name!r}")
        return _load_planetoid(name, root, download)
    x, adj, y, meta = load_literature_graph(name, root, download)
    if split == "prognn":
        idx = load_prognn_split(name, root, download)
        idx_train, idx_val, idx_test = (torch.as_tensor(idx[k], dtype=torch.long) for k in ("idx_train", "idx_val", "idx_test"))
        meta["split_file"] = f"prognn/{name}_prognn_splits.json"
    else:
        idx_train, idx_val, idx_test = stratified_split(y, (0.1, 0.1, 0.8), seed)
        meta["split_seed"] = seed
    if int(max(idx_train.max(), idx_val.max(), idx_test.max())) >= x.shape[0]:
        raise ValueError(f"split {split!r} of {name!r} indexes nodes beyond the LCC ({x.shape[0]} nodes): wrong split file?")
    return GraphDataset(name, split, x, adjacency_to_edge_index(adj), y, idx_train, idx_val, idx_test, meta)


def _load_planetoid(name: str, root, download: bool) -> GraphDataset:
    from torch_geometric.io import read_planetoid_data

    pyg = PLANETOID_NAMES[name]
    root = resolve_data_root(root)
    suffixes = ["x", "tx", "allx", "y", "ty", "ally", "graph", "test.index"]
    files = [_file(f"{pyg}/raw/ind.{name}.{s}", _PLANETOID_URL + f"ind.{name}.{s}") for s in suffixes]
    work = prepare_files(name, root, files, download_missing=download)
    # the checksummed raw files themselves: PyG's Planetoid would write and later read an unchecked
    # (pickled) processed/data.pt instead
    data = read_planetoid_data(str(work / pyg / "raw"), name)
    from torch_geometric.utils import coalesce, remove_self_loops, to_undirected

    ei = coalesce(to_undirected(remove_self_loops(data.edge_index)[0]), num_nodes=data.num_nodes)
    meta = {"dataset": name, "source": "Planetoid raw files (torch_geometric.io.read_planetoid_data)", "root": str(root),
            "lcc": False}
    ids = [m.nonzero().view(-1) for m in (data.train_mask, data.val_mask, data.test_mask)]
    return GraphDataset(name, "public", data.x.float(), ei, data.y.long(), *ids, meta=meta)


def load_literature_graph(name: str, root=None, download: bool = True):
    """Read ``npz/<name>.npz`` and return ``(x, adj, y, meta)`` on the largest connected component.

    ``adj`` is a symmetric binary ``scipy.sparse.csr_matrix`` without self-loops.
    """
    root = resolve_data_root(root)
    rel = f"npz/{name}.npz"
    work = prepare_files(name, root, [_file(rel, _NPZ_URL.format(name=name))], download_missing=download)
    with np.load(work / rel, allow_pickle=False) as f:
        adj = sp.csr_matrix((f["adj_data"], f["adj_indices"], f["adj_indptr"]), shape=tuple(f["adj_shape"]))
        if "attr_data" in f:
            attr = sp.csr_matrix((f["attr_data"], f["attr_indices"], f["attr_indptr"]), shape=tuple(f["attr_shape"]))
        elif "attr_matrix" in f:
            attr = sp.csr_matrix(f["attr_matrix"])
        else:  # polblogs has no features: identity, as in the literature
            attr = sp.identity(adj.shape[0], format="csr")
        labels = f["labels"]
    adj = symmetrize(adj)
    keep = largest_connected_component(adj)
    adj = adj[keep][:, keep].tocsr()
    attr = attr[keep]
    x = torch.from_numpy((attr.toarray() > 0).astype(np.float32))
    y = torch.from_numpy(np.asarray(labels)[keep].astype(np.int64))
    meta = {"dataset": name, "source": rel, "root": str(root), "lcc": True, "lcc_nodes": int(len(keep))}
    return x, adj, y, meta


def symmetrize(adj: sp.spmatrix) -> sp.csr_matrix:
    """Symmetric, binary, no self-loops."""
    adj = (adj + adj.T).tocsr()
    adj.setdiag(0)
    adj.eliminate_zeros()
    adj.data = np.ones_like(adj.data, dtype=np.float32)
    return adj


def largest_connected_component(adj: sp.spmatrix) -> np.ndarray:
    """Node ids of the largest connected component, in ascending order."""
    _, comp = sp.csgraph.connected_components(adj, directed=False)
    sizes = np.bincount(comp)
    return np.nonzero(comp == np.argmax(sizes))[0]


def adjacency_to_edge_index(adj: sp.spmatrix) -> torch.Tensor:
    coo = sp.coo_matrix(adj)
    ei = np.vstack([coo.row, coo.col]).astype(np.int64)
    order = np.lexsort((ei[1], ei[0]))
    return torch.from_numpy(ei[:, order]).contiguous()


def stratified_split(y: torch.Tensor, fractions=(0.1, 0.1, 0.8), seed: int = 0):
    """Seeded stratified split into train/val/test with the given fractions of every class."""
    g = torch.Generator().manual_seed(seed)
    parts = [[], [], []]
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().view(-1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        parts[0].append(idx[:n_train])
        parts[1].append(idx[n_train:n_train + n_val])
        parts[2].append(idx[n_train + n_val:])
    return tuple(torch.cat(p).sort().values for p in parts)


def load_prognn_split(name: str, root=None, download: bool = True) -> dict:
    root = resolve_data_root(root)
    rel = f"prognn/{name}_prognn_splits.json"
    work = prepare_files(name, root, [_file(rel, _PROGNN_URL + f"splits/{name}_prognn_splits.json")], download_missing=download)
    return json.loads(Path(work / rel).read_text())


PROGNN_RATES = {"meta": (0.05, 0.1, 0.15, 0.2, 0.25), "nettack": (1.0, 2.0, 3.0, 4.0, 5.0)}


def load_prognn_perturbed(name: str = "cora", attack: str = "meta", rate: float = 0.05, root=None,
                          download: bool = True) -> GraphDataset:
    """The Pro-GNN pre-attacked graph: the ``prognn`` split of ``name`` with the perturbed structure.

    Args:
        attack: ``meta`` (Metattack, ``rate`` = fraction of edges: 0.05-0.25) or ``nettack``
            (``rate`` = perturbations per target: 1.0-5.0; targets in ``meta["targets"]``).
    """
    if attack not in PROGNN_RATES:
        raise unknown_name_error("pre-attacked graph", attack, PROGNN_RATES)
    if float(rate) not in PROGNN_RATES[attack]:
        raise ValueError(f"rate: Pro-GNN {attack} graphs exist for {PROGNN_RATES[attack]}, got {rate}")
    clean = load_graph(name, "prognn", root, download)
    root_p = resolve_data_root(root)
    rel = f"prognn/{name}_{attack}_adj_{float(rate):g}.npz" if attack == "meta" else f"prognn/{name}_{attack}_adj_{float(rate):.1f}.npz"
    files = [_file(rel, _PROGNN_URL + f"{attack}/{Path(rel).name}")]
    nodes_rel = f"prognn/{name}_nettacked_nodes.json"
    if attack == "nettack":
        files.append(_file(nodes_rel, _PROGNN_URL + f"nettack/{name}_nettacked_nodes.json"))
    work = prepare_files(name, root_p, files, download_missing=download)
    with np.load(work / rel, allow_pickle=False) as f:
        adj = sp.csr_matrix((f["data"], f["indices"], f["indptr"]), shape=tuple(f["shape"]))
    if adj.shape[0] != clean.num_nodes:
        raise ValueError(f"{rel}: expected a {clean.num_nodes}-node adjacency (the LCC), got {adj.shape}")
    meta = {"perturbed": f"prognn-{attack}-{float(rate):g}", "perturbed_file": rel}
    if attack == "nettack":
        nodes = json.loads((work / nodes_rel).read_text())
        meta["targets"] = [int(i) for i in nodes.get("attacked_test_nodes", [])]
    return clean.with_edges(adjacency_to_edge_index(symmetrize(adj)), **meta)
