"""Pre-processing defenses wrapped around a GCN: ``gcn_jaccard`` and ``gcn_svd``.

Both rebuild the graph inside ``forward``, so they defend in evasion and in poisoning alike (a
poisoned graph is cleaned before every training step) and stay differentiable in ``edge_weight``
(gradient attacks see the defense; adaptive attacks are possible).

Adaptive attacks (``pgd``'s ``surrogate`` option) use the split every pre-processing defense offers:
``dense_forward(x, A) = dense_classifier(x, dense_preprocess(x, A))``, and ``sparse_classifier`` is
the classifier on a sparse graph (the model with the pre-processing dropped).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
import torch

from robustbench_geo.models.gnn import DEGREE_FLOOR, GCN
from robustbench_geo.models.registry import register_model
from robustbench_geo.models.tensor_cache import ContentCache, TensorCache


def jaccard_similarity(x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """Jaccard similarity ``|S_i & S_j| / |S_i | S_j|`` of the supports ``S_i = {f : x_if != 0}`` of each edge's endpoints.

    The formula of DeepRobust's ``dropedge_jaccard`` (``deeprobust/graph/defense/gcn_preprocess.py``):
    non-zero counts, so any feature matrix is read as its binary support. Returns ``(E,)`` in ``[0, 1]``,
    NaN where both feature vectors are zero (``0 / 0``, as there).
    """
    a, b = x[edge_index[0]] != 0, x[edge_index[1]] != 0
    inter = (a & b).sum(1)
    union = a.sum(1) + b.sum(1) - inter
    return inter.to(x.dtype) / union.to(x.dtype)


def dense_jaccard_similarity(x: torch.Tensor) -> torch.Tensor:
    """:func:`jaccard_similarity` of every pair of nodes, ``(N, N)`` (NaN for two empty supports).

    With binary supports ``s``: ``|S_i & S_j| = s_i . s_j`` (a matrix product) and
    ``|S_i | S_j| = |S_i| + |S_j| - |S_i & S_j|``.
    """
    a = (x != 0).to(torch.float64)
    inter = a @ a.T
    size = a.sum(1)
    return (inter / (size[:, None] + size[None, :] - inter)).to(x.dtype)


def jaccard_keep(similarity: torch.Tensor, threshold: float) -> torch.Tensor:
    """Which pairs GCN-Jaccard keeps: all but those with similarity ``< threshold``.

    DeepRobust's ``dropedge_jaccard`` drops an edge when ``J < threshold``; a NaN similarity (two nodes
    without features) compares false there, so such an edge is kept, and it is kept here.
    """
    return ~(similarity < threshold)


class PairSimilarities:
    """A per-pair similarity of the endpoints' features (:func:`jaccard_similarity` by default) for one feature
    matrix, each pair computed once.

    An attack evaluates the model on hundreds of perturbed graphs that share almost every edge; the
    similarity of an edge depends only on its two feature rows, so it is kept per unordered pair and only
    the pairs not seen before are computed (by ``similarity(x, pairs)`` on pairs ``(min(i, j), max(i, j))``,
    in chunks of ``chunk`` pairs, so the value of a pair is what a direct call gives for it). On the Cora
    LCC (1433 features) that turns 0.24 s per forward pass (gathering two ``E x F`` feature blocks) into a
    lookup. Graphs of at most ``dense_nodes`` nodes keep an ``N x N`` table (a lookup costs ``O(E)``, no
    sorting, however many pairs a block attack draws); larger ones keep sorted pair ids
    ``min(i, j) * N + max(i, j)`` (one ``searchsorted`` per call), at most ``max_pairs`` of them. Kept for
    the latest feature matrix only (:class:`~robustbench_geo.models.tensor_cache.TensorCache`).
    """

    def __init__(self, max_pairs: int = 1 << 22, similarity=None, prepare=None, dense_nodes: int = 4096,
                 chunk: int = 1 << 14):
        self.max_pairs, self.dense_nodes, self.chunk = max_pairs, dense_nodes, chunk
        self.similarity = jaccard_similarity if similarity is None else similarity
        self.prepare = prepare  # x -> what similarity reads (e.g. unit rows), once per batch of new pairs
        self._cache = TensorCache()

    def _compute(self, x: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
        if not ids.numel():
            return x.new_zeros(0)
        with torch.no_grad():
            feats = x.detach() if self.prepare is None else self.prepare(x.detach())
            return torch.cat([self.similarity(feats, torch.stack([c // n, c % n])) for c in ids.split(self.chunk)])

    def __call__(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        ids = torch.minimum(edge_index[0], edge_index[1]) * n + torch.maximum(edge_index[0], edge_index[1])
        if n <= self.dense_nodes:
            store = self._cache.get(x, lambda t: {"sims": torch.zeros(n * n, dtype=t.dtype, device=t.device),
                                                  "known": torch.zeros(n * n, dtype=torch.bool, device=t.device)})
            known = store["known"][ids]
            if not bool(known.all()):
                new = torch.unique(ids[~known])
                store["sims"][new] = self._compute(x, new, n).to(x.dtype)
                store["known"][new] = True
            return store["sims"][ids]
        store = self._cache.get(x, lambda t: {"ids": torch.zeros(0, dtype=torch.long, device=t.device),
                                               "sims": torch.zeros(0, dtype=t.dtype, device=t.device)})
        known, sims = store["ids"], store["sims"]
        pos = torch.searchsorted(known, ids).clamp_max(max(known.numel() - 1, 0))
        hit = known[pos] == ids if known.numel() else torch.zeros_like(ids, dtype=torch.bool)
        if not bool(hit.all()):
            new = torch.unique(ids[~hit])
            if known.numel() + new.numel() > self.max_pairs:  # start over with this call's pairs only
                known, sims, new = known[:0], sims[:0], torch.unique(ids)
            new_sims = self._compute(x, new, n).to(sims.dtype)
            known, order = torch.sort(torch.cat([known, new]))
            sims = torch.cat([sims, new_sims])[order]
            store["ids"], store["sims"] = known, sims
            pos = torch.searchsorted(known, ids)
        return sims[pos]

    def __deepcopy__(self, memo) -> "PairSimilarities":
        return PairSimilarities(self.max_pairs, self.similarity, self.prepare, self.dense_nodes, self.chunk)


class GCNJaccard(GCN):
    """GCN-Jaccard (Wu et al. 2019): edges whose endpoints' Jaccard feature similarity is below
    ``threshold`` are dropped (weight 0) before the GCN runs.

    Reference: DeepRobust, ``deeprobust/graph/defense/gcn_preprocess.py``, ``GCNJaccard.drop_dissimilar_edges``
    and ``dropedge_jaccard`` (similarity of the binary supports, an edge dropped iff ``J < threshold``,
    default 0.01; two featureless endpoints give NaN and keep their edge), with DeepRobust's ``GCN``
    behind it (``deeprobust/graph/defense/gcn.py``: dropout on the hidden layer only, ``D^-1/2 (A + I)
    D^-1/2``). Mujkanovic et al.'s ``jaccard_gcn`` (``gb/exutil.py``, ``make_attacked_model``) keeps
    ``J > 0.0``, the same edges on binary features with fewer than 100 words per pair (Cora), but drops
    the edge between two featureless nodes.
    """

    def __init__(self, in_features: int, num_classes: int, threshold: float = 0.01, hidden: int = 16, dropout: float = 0.5):
        super().__init__(in_features, num_classes, hidden, dropout, input_dropout=False)
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold: expected a Jaccard similarity in [0, 1], got {threshold}")
        self.threshold = threshold
        self._dense_keep = TensorCache()
        self._similarities = PairSimilarities()

    def keep_mask(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """``(E,)`` bool: edges the defense keeps."""
        return jaccard_keep(self._similarities(x, edge_index), self.threshold)

    def forward(self, x, edge_index, edge_weight=None):
        keep = self.keep_mask(x, edge_index)
        w = keep.to(x.dtype) if edge_weight is None else edge_weight * keep.to(edge_weight.dtype)
        return super().forward(x, edge_index, w)

    def dense_forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """The same function on a dense ``(N, N)`` adjacency: the GCN on the pairs the defense keeps."""
        return self.dense_classifier(x, self.dense_preprocess(x, adj))

    def dense_preprocess(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """The adjacency the GCN sees: ``adj`` without the pairs the Jaccard filter drops."""
        return adj * self.dense_keep_mask(x).to(adj.dtype)

    def dense_classifier(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """The GCN behind the defense, on a dense adjacency."""
        return GCN.dense_forward(self, x, adj)

    def sparse_classifier(self, x, edge_index, edge_weight=None):
        """The GCN behind the defense, on a sparse graph (no filter)."""
        return GCN.forward(self, x, edge_index, edge_weight)

    def dense_keep_mask(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, N)`` bool: the pairs the defense would keep as edges (cached per feature matrix)."""
        return self._dense_keep.get(x, lambda t: jaccard_keep(dense_jaccard_similarity(t), self.threshold),
                                self.threshold)


@register_model("gcn_jaccard", task="graph")
def gcn_jaccard(in_features: int, num_classes: int, threshold: float = 0.01, hidden: int = 16, dropout: float = 0.5) -> GCNJaccard:
    """GCN-Jaccard (Wu et al. 2019): drop edges between nodes with Jaccard similarity < threshold (0.01)."""
    return GCNJaccard(in_features, num_classes, threshold, hidden, dropout)


def top_eigenvectors(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n: int, k: int,
                     dense_below: int = 500) -> torch.Tensor:
    """``(N, k)`` float64 orthonormal eigenvectors of the ``k`` eigenvalues of largest magnitude of a
    symmetric ``N x N`` matrix given by its non-zeros ``(rows, cols, vals)``.

    For a symmetric matrix these span its top-``k`` singular subspace. From ``dense_below`` nodes on,
    ARPACK's Lanczos solver (``scipy.sparse.linalg.eigsh``, machine-precision tolerance) works on the
    sparse matrix: each of its iterations costs ``O(nnz k)`` products where the dense ``eigh`` costs
    ``O(N^3)`` for all ``N`` eigenpairs, of which ``k`` are kept. Smaller matrices, ones denser than
    10 %, and the rare case where ARPACK does not converge take the dense LAPACK solver; both compute the same subspace (the tests compare them).
    """
    k = min(k, n)
    if n >= dense_below and k < n - 1 and vals.numel() < 0.1 * n * n:
        m = sp.csr_matrix((vals.detach().double().cpu().numpy(), (rows.cpu().numpy(), cols.cpu().numpy())), shape=(n, n))
        try:
            _, vecs = sla.eigsh(m, k=k, which="LM", tol=0)
            return torch.from_numpy(np.ascontiguousarray(vecs)).to(vals.device)
        except sla.ArpackNoConvergence:
            pass
    a = torch.zeros(n, n, dtype=torch.float64, device=vals.device).index_put((rows, cols), vals.detach().double(), accumulate=True)
    lam, vecs = torch.linalg.eigh(a)
    return vecs[:, torch.argsort(lam.abs(), descending=True)[:k]]


def project_symmetric(av: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``A P + P A - P A P`` for ``P = V V^T``, from ``A V`` ``(N, k)`` and ``V`` ``(N, k)`` (``A`` symmetric).

    When ``V`` spans eigenvectors of ``A`` this equals the rank-``k`` reconstruction ``V Lambda V^T``
    (``= A P = P A = P A P``). Differentiated with ``V`` held fixed it is the first-order change of that
    reconstruction, exact up to the eigenvalue ratios ``lambda_j / (lambda_i - lambda_j)`` between the
    kept and the dropped eigenvalues (``A P`` alone would keep only one of the three terms).
    """
    vtav = v.T @ av
    return av @ v.T + v @ av.T - v @ vtav @ v.T


class GCNSVD(GCN):
    """GCN-SVD (Entezari et al. 2020): the GCN runs on the rank-``rank`` truncated SVD of the adjacency.

    Reference: Mujkanovic et al.'s ``svd_gcn`` (LoadingByte/are-gnn-defenses-robust, ``gb/exutil.py``,
    ``make_attacked_model``: ``gb/preprocess.py`` ``low_rank`` then ``gb/model/gcn.py`` ``GCN`` with
    ``add_loops`` and ``gcn_norm``), the model their adaptive attacks were run on. The GCN sees the whole
    low-rank matrix ``L`` (its diagonal included) plus ``I``, normalised by ``D^-1/2`` with
    ``D = rowsum(L) + 1`` clamped at ``degree_floor`` = 1e-5 (:data:`~robustbench_geo.models.gnn.DEGREE_FLOOR`);
    no dropout on the input features. DeepRobust's ``GCNSVD`` (``deeprobust/graph/defense/gcn_preprocess.py``,
    ``GCNSVD.truncatedSVD``, then ``deeprobust/graph/utils.py`` ``normalize_adj_tensor``) builds the same
    ``L + I`` but takes ``D^-1/2`` unclamped, mapping a zero degree to 0 and a negative one to NaN (NaN
    logits): both agree wherever every degree is positive, and only Mujkanovic et al.'s is defined
    everywhere else, which the attacks reach (``degree_collapse``).

    Deliberate deviations, as options: ``keep_diagonal=False`` drops ``L``'s diagonal (the
    normalisation's ``I`` is then the only self-loop; this package's GCN-SVD before it followed the
    reference), ``degree_floor`` another clamp (1e-12 was this package's earlier value).

    The low-rank matrix is dense (``N x N``), so this defense is for graphs of a few thousand nodes.
    A symmetric adjacency's truncated SVD is its projection onto the eigenvectors of the ``rank``
    eigenvalues of largest magnitude (:func:`top_eigenvectors`: sparse Lanczos on large graphs).
    Without ``edge_weight`` it is cached per structure (:class:`ContentCache`: keyed by the
    ``edge_index`` itself, so training and evaluation reuse it and two graphs never share it); with
    ``edge_weight`` it is recomputed; gradients flow through :func:`project_symmetric` with the
    subspace held fixed (exact SVD gradients are unstable on repeated singular values).

    For adaptive attacks the model splits into ``dense_preprocess`` (the low-rank reconstruction) and
    ``dense_classifier`` / ``sparse_classifier`` (the GCN behind it).
    """

    def __init__(self, in_features: int, num_classes: int, rank: int = 50, hidden: int = 16, dropout: float = 0.5,
                 keep_diagonal: bool = True, degree_floor: float = DEGREE_FLOOR):
        super().__init__(in_features, num_classes, hidden, dropout, input_dropout=False)
        if rank < 1:
            raise ValueError(f"rank: expected a positive rank, got {rank}")
        if not degree_floor > 0:
            raise ValueError(f"degree_floor: expected a positive degree, got {degree_floor}")
        self.rank, self.keep_diagonal, self.degree_floor = rank, keep_diagonal, degree_floor
        self.dense_below = 500
        self._structure_cache = ContentCache()  # the unweighted graph's low-rank matrix

    def eigenvectors(self, edge_index: torch.Tensor, edge_weight: torch.Tensor | None, n: int) -> torch.Tensor:
        """``(N, rank)`` float64 top eigenvectors of the (weighted) adjacency."""
        w = torch.ones(edge_index.shape[1], dtype=torch.float64, device=edge_index.device) if edge_weight is None else edge_weight
        return top_eigenvectors(edge_index[0], edge_index[1], w, n, self.rank, self.dense_below)

    def low_rank_adjacency(self, edge_index, edge_weight, n: int, dtype=torch.float32) -> torch.Tensor:
        w = torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device) if edge_weight is None else edge_weight.to(dtype)
        if not _is_symmetric(edge_index, w, n):
            a = torch.zeros(n, n, dtype=w.dtype, device=edge_index.device).index_put((edge_index[0], edge_index[1]), w, accumulate=True)
            return self._low_rank(a)
        v = self.eigenvectors(edge_index, w, n).to(dtype)
        av = torch.zeros(n, v.shape[1], dtype=dtype, device=v.device).index_add_(0, edge_index[0], w[:, None] * v[edge_index[1]])
        return project_symmetric(av, v)

    def _low_rank(self, a: torch.Tensor) -> torch.Tensor:
        """The rank-``rank`` truncated SVD ``U_k S_k V_k^T`` of a dense ``(N, N)`` matrix.

        A symmetric ``A`` (every undirected graph, and the relaxed graphs of PGD) takes its top
        eigenvectors (sparse Lanczos when it is large and sparse; LAPACK's symmetric solver converges
        where the SVD driver can fail on such ill-conditioned matrices) and :func:`project_symmetric`.
        """
        k = min(self.rank, a.shape[0])
        m = a.detach()
        if torch.equal(m, m.T):
            nz = m.nonzero().T
            v = top_eigenvectors(nz[0], nz[1], m[nz[0], nz[1]], m.shape[0], k, self.dense_below).to(a.dtype)
            return project_symmetric(a @ v, v)
        with torch.no_grad():
            v = torch.linalg.svd(m)[2][:k].T
        return (a @ v) @ v.T

    def forward(self, x, edge_index, edge_weight=None):
        n = x.shape[0]
        if edge_weight is None:
            a = self._structure_cache.get((edge_index,), lambda ei: self.low_rank_adjacency(ei, None, n, x.dtype), n, x.dtype)
        else:
            a = self.low_rank_adjacency(edge_index, edge_weight, n, x.dtype)
        return self.dense_classifier(x, self._diagonal(a))

    def dense_forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """The same function on a dense ``(N, N)`` adjacency: the GCN on its rank-``rank`` approximation."""
        return self.dense_classifier(x, self.dense_preprocess(x, adj))

    def dense_preprocess(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """The matrix the GCN sees (before its ``+ I``): the rank-``rank`` reconstruction (without its
        diagonal if ``keep_diagonal`` is off)."""
        return self._diagonal(self._low_rank(adj))

    def dense_classifier(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """The GCN behind the defense on a dense matrix (``I`` added, degrees clamped at ``degree_floor``)."""
        return GCN.dense_forward(self, x, adj, self.degree_floor)

    def sparse_classifier(self, x, edge_index, edge_weight=None):
        """The GCN behind the defense, on a sparse graph."""
        return GCN.forward(self, x, edge_index, edge_weight)

    def _diagonal(self, a: torch.Tensor) -> torch.Tensor:
        """``a`` as the GCN sees it: unchanged (the reference), or without its diagonal (``keep_diagonal=False``)."""
        return a if self.keep_diagonal else a - torch.diag(torch.diagonal(a))


def _is_symmetric(edge_index: torch.Tensor, w: torch.Tensor, n: int) -> bool:
    fwd = edge_index[0] * n + edge_index[1]
    rev = edge_index[1] * n + edge_index[0]
    of, orv = torch.argsort(fwd), torch.argsort(rev)
    return bool(torch.equal(fwd[of], rev[orv]) and torch.equal(w[of], w[orv]))


@register_model("gcn_svd", task="graph")
def gcn_svd(in_features: int, num_classes: int, rank: int = 50, hidden: int = 16, dropout: float = 0.5,
            keep_diagonal: bool = True, degree_floor: float = DEGREE_FLOOR) -> GCNSVD:
    """GCN-SVD (Entezari et al. 2020): GCN on the rank-50 truncated SVD of the adjacency (dense)."""
    return GCNSVD(in_features, num_classes, rank, hidden, dropout, keep_diagonal, degree_floor)
