"""Graph neural networks for node classification: ``forward(x, edge_index, edge_weight=None)``.

Every model maps ``(N, F)`` features to ``(N, C)`` logits and is differentiable in
``edge_weight`` (``(E,)``, one weight per directed edge of ``edge_index``; ``None`` = all ones), so
gradient structure attacks work on all of them. Models whose propagation is a normalised adjacency
(``gcn``, ``sgc``) also offer ``dense_forward(x, adj)`` on a dense ``(N, N)`` weighted adjacency
without self-loops; it computes the same function (the tests compare both paths) and is what dense
attacks (PGD, GradArgMax) differentiate on small graphs.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_geo.models.registry import register_model
from robustbench_geo.models.tensor_cache import ContentCache, TensorCache


def scatter(src: torch.Tensor, index: torch.Tensor, dim: int, dim_size: int | None = None,
            reduce: str = "sum") -> torch.Tensor:
    """PyG's ``torch_geometric.utils.scatter``, imported on first use so that image-only work never loads PyG."""
    from torch_geometric.utils import scatter as pyg_scatter

    return pyg_scatter(src, index, dim, dim_size=dim_size, reduce=reduce)


#: Degrees of ``A + I`` below this count as this value in the dense GCN normalisation. Mujkanovic et
#: al.'s ``gcn_norm`` (LoadingByte/are-gnn-defenses-robust, ``gb/preprocess.py``) clamps at 1e-5, which
#: is what the defenses evaluated with their adaptive attacks run on. It only matters where a
#: pre-processing step can make a degree zero or negative (GCN-SVD's low-rank matrix); every
#: non-negative graph has degrees of at least 1.
DEGREE_FLOOR = 1e-5


def dense_gcn_norm(adj: torch.Tensor, degree_floor: float = DEGREE_FLOOR) -> torch.Tensor:
    """``D^-1/2 (A + I) D^-1/2`` of a dense ``(N, N)`` adjacency, degrees clamped at ``degree_floor``.

    ``adj``'s own diagonal (if any) is kept and ``I`` added on top of it.
    """
    a = adj + torch.eye(adj.shape[0], dtype=adj.dtype, device=adj.device)
    d = a.sum(1).clamp_min(degree_floor).pow(-0.5)
    return d[:, None] * a * d[None, :]


def dense_gcn_scale(adj: torch.Tensor, degree_floor: float = DEGREE_FLOOR) -> torch.Tensor:
    """``(N, 1)`` column ``D^-1/2`` of ``A + I`` (degrees clamped at ``degree_floor``) for :func:`dense_gcn_propagate`."""
    return (adj.sum(1) + 1).clamp_min(degree_floor).pow(-0.5)[:, None]


def dense_gcn_propagate(adj: torch.Tensor, h: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``D^-1/2 (A + I) D^-1/2 h`` without forming the normalised ``(N, N)`` matrix.

    Scaling the ``(N, C)`` operand instead of the ``(N, N)`` one saves several full passes over
    the adjacency, forward and backward, which is what dominates dense gradient attacks.
    """
    h = scale * h
    return scale * (adj @ h + h)


def _nonzeros(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(2, nnz)`` indices and ``(nnz,)`` values of the non-zeros of ``x``, and whether it is sparse (< 10 %)."""
    idx = (x != 0).nonzero().T
    return idx, x[idx[0], idx[1]], idx.shape[1] < 0.1 * x.numel()


def normalized_adjacency_csr(edge_index: torch.Tensor, edge_weight: torch.Tensor | None, num_nodes: int,
                             dtype: torch.dtype) -> torch.Tensor:
    """``A_hat = D^-1/2 (A + I) D^-1/2`` of PyG's ``gcn_norm`` as an ``(N, N)`` CSR matrix, rows = destinations.

    ``A_hat @ H`` is then the message passing ``out[dst] += w * H[src]`` of ``GCNConv.propagate``
    (duplicate edges sum in both), but it walks the edges destination by destination, writing
    each output row once, instead of scattering them to random rows.
    """
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    ei, w = gcn_norm(edge_index, edge_weight, num_nodes, add_self_loops=True, dtype=dtype)
    coo = torch.sparse_coo_tensor(ei.flip(0), w, (num_nodes, num_nodes), check_invariants=False)
    with warnings.catch_warnings():  # torch's "Sparse CSR tensor support is in beta state" is not the user's concern
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support", category=UserWarning)
        return coo.coalesce().to_sparse_csr()


class _RepeatedGraph:
    """A graph's CSR ``A_hat``, built the second time the graph is asked for (``None`` the first time).

    Building it sorts the edges, which costs about one message passing: worth it for a graph that
    comes back (training epochs), not for one an attack evaluates once.
    """

    def __init__(self, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None, *, num_nodes: int,
                 dtype: torch.dtype):
        self._graph, self._calls, self._csr = (edge_index, edge_weight, num_nodes, dtype), 0, None

    def matrix(self) -> torch.Tensor | None:
        self._calls += 1
        if self._csr is None and self._calls > 1:
            with torch.inference_mode(False), torch.no_grad():
                self._csr = normalized_adjacency_csr(*self._graph)
        return self._csr


def _weights(edge_index: torch.Tensor, edge_weight: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if edge_weight is None:
        return torch.ones(edge_index.shape[1], dtype=x.dtype, device=x.device)
    return edge_weight.to(x.dtype)


class GCN(nn.Module):
    """Two-layer GCN (Kipf & Welling 2017): ``A_hat ReLU(A_hat X W1) W2`` with dropout.

    ``A_hat`` is the symmetric normalisation of ``A + I`` built by PyG's ``GCNConv`` from
    ``edge_index`` and (optional) ``edge_weight``; the output is differentiable in ``edge_weight``.
    ``input_dropout`` applies the dropout to ``X`` as well (Kipf & Welling's and PyG's GCN do); the
    GCN of DeepRobust (``deeprobust/graph/defense/gcn.py``, ``GCN.forward``) and of Mujkanovic et al.
    (``gb/model/gcn.py``, ``GCN.forward``), which the defenses built on it follow, drops only the
    hidden layer.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 16, dropout: float = 0.5,
                 input_dropout: bool = True):
        from torch_geometric.nn import GCNConv

        super().__init__()
        self.conv1 = GCNConv(in_features, hidden)
        self.conv2 = GCNConv(hidden, num_classes)
        self.dropout = dropout
        self.input_dropout = input_dropout
        self._nz = TensorCache()  # non-zeros of the latest feature matrix
        self._adj = ContentCache()  # A_hat of the latest graph whose edge weights need no gradient

    def _first_linear(self, x: torch.Tensor) -> torch.Tensor:
        """``dropout(X) W1`` through the non-zeros of ``X`` when it is sparse (bag-of-words features).

        Dropout only changes non-zero entries, so sampling the mask on them (as Kipf & Welling's
        sparse dropout does) is the same distribution, and ``X W1`` costs O(nnz) instead of O(N F).
        """
        p = self.dropout if self.input_dropout else 0.0
        idx, vals, sparse = self._nz.get(x, _nonzeros)
        if not sparse or x.requires_grad:
            return self.conv1.lin(F.dropout(x, p, self.training))
        if self.training and p > 0:
            vals = vals * (torch.rand(vals.shape, device=vals.device) >= p) / (1 - p)
        xs = torch.sparse_coo_tensor(idx, vals, x.shape, is_coalesced=True, check_invariants=False)
        return torch.sparse.mm(xs, self.conv1.lin.weight.T)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Logits; differentiable in ``x``, the parameters and (when it requires a gradient) ``edge_weight``.

        A graph seen again with edge weights that need no gradient (training's epochs, the evaluation
        after it) is propagated as a CSR ``A_hat`` built on its second call
        (:func:`normalized_adjacency_csr`): the random-order scatter of the message passing costs
        more per edge once the graph outgrows the cache (3 training epochs at 100k nodes: 1.8 s
        scattered, 0.6 s in CSR order). A graph seen once (an attack's candidate) and an attack's
        weighted edges take the message passing, whose gradient reaches each edge weight.
        """
        from torch_geometric.nn.conv.gcn_conv import gcn_norm

        if edge_weight is None or not (edge_weight.requires_grad and torch.is_grad_enabled()):
            n, dtype = x.shape[0], x.dtype
            graph = (edge_index,) if edge_weight is None else (edge_index, edge_weight.detach())
            adj = self._adj.get(graph, lambda *t: _RepeatedGraph(*t, num_nodes=n, dtype=dtype), n, dtype).matrix()
            if adj is not None:
                h = F.relu(torch.sparse.mm(adj, self._first_linear(x)) + self.conv1.bias)
                h = F.dropout(h, self.dropout, self.training)
                return torch.sparse.mm(adj, self.conv2.lin(h)) + self.conv2.bias
        ei, w = gcn_norm(edge_index, edge_weight, x.shape[0], add_self_loops=True, dtype=x.dtype)
        x = F.relu(self.conv1.propagate(ei, x=self._first_linear(x), edge_weight=w) + self.conv1.bias)
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2.propagate(ei, x=self.conv2.lin(x), edge_weight=w) + self.conv2.bias

    def dense_forward(self, x: torch.Tensor, adj: torch.Tensor, degree_floor: float = DEGREE_FLOOR) -> torch.Tensor:
        """Same function on a dense ``(N, N)`` adjacency (``I`` is added; degrees clamped at ``degree_floor``)."""
        scale = dense_gcn_scale(adj, degree_floor)
        x = F.dropout(x, self.dropout if self.input_dropout else 0.0, self.training)
        h = F.relu(dense_gcn_propagate(adj, self.conv1.lin(x), scale) + self.conv1.bias)
        h = F.dropout(h, self.dropout, self.training)
        return dense_gcn_propagate(adj, self.conv2.lin(h), scale) + self.conv2.bias


@register_model("gcn", task="graph")
def gcn(in_features: int, num_classes: int, hidden: int = 16, dropout: float = 0.5) -> GCN:
    """Two-layer GCN (Kipf & Welling 2017), 16 hidden units, dropout 0.5."""
    return GCN(in_features, num_classes, hidden, dropout)


class SGC(nn.Module):
    """Simplified graph convolution (Wu et al. 2019): ``A_hat^K X W`` (no non-linearity, no cache)."""

    def __init__(self, in_features: int, num_classes: int, k: int = 2):
        super().__init__()
        if k < 1:
            raise ValueError(f"k: expected at least one propagation step, got {k}")
        self.lin = nn.Linear(in_features, num_classes)
        self.k = k

    def forward(self, x, edge_index, edge_weight=None):
        from torch_geometric.nn.conv.gcn_conv import gcn_norm

        ei, w = gcn_norm(edge_index, edge_weight, x.shape[0], add_self_loops=True, dtype=x.dtype)
        h = self.lin(x)  # W first: propagating C channels instead of F is the same linear map
        for _ in range(self.k):
            h = scatter(h[ei[0]] * w[:, None], ei[1], 0, dim_size=x.shape[0], reduce="sum")
        return h

    def dense_forward(self, x, adj):
        scale = dense_gcn_scale(adj)
        h = self.lin(x)
        for _ in range(self.k):
            h = dense_gcn_propagate(adj, h, scale)
        return h


@register_model("sgc", task="graph")
def sgc(in_features: int, num_classes: int, k: int = 2) -> SGC:
    """SGC (Wu et al. 2019): K=2 propagation steps of the normalised adjacency, then a linear layer."""
    return SGC(in_features, num_classes, k)


class WeightedGATConv(nn.Module):
    """GAT layer whose attention is re-weighted by edge weights.

    ``alpha_ij = w_ij exp(e_ij) / sum_k w_ik exp(e_ik)`` over ``j`` in ``N(i) + {i}`` (self-loops
    weight 1). With binary weights this is exactly GAT (Velickovic et al. 2018) on the edges of weight
    1; a weight of 0 removes the edge, so the layer is differentiable in ``edge_weight``.
    """

    def __init__(self, in_features: int, out_features: int, heads: int = 1, concat: bool = True, dropout: float = 0.0):
        super().__init__()
        self.lin = nn.Linear(in_features, heads * out_features, bias=False)
        self.att_src = nn.Parameter(torch.empty(heads, out_features))
        self.att_dst = nn.Parameter(torch.empty(heads, out_features))
        self.bias = nn.Parameter(torch.zeros(heads * out_features if concat else out_features))
        self.heads, self.out, self.concat, self.dropout = heads, out_features, concat, dropout
        nn.init.xavier_uniform_(self.lin.weight)
        nn.init.xavier_uniform_(self.att_src)
        nn.init.xavier_uniform_(self.att_dst)

    def forward(self, x, edge_index, edge_weight=None):
        from torch_geometric.utils import add_remaining_self_loops

        n = x.shape[0]
        w = _weights(edge_index, edge_weight, x)
        ei, w = add_remaining_self_loops(edge_index, w, fill_value=1.0, num_nodes=n)
        h = self.lin(x).view(n, self.heads, self.out)
        src, dst = ei
        e = F.leaky_relu((h * self.att_src).sum(-1)[src] + (h * self.att_dst).sum(-1)[dst], 0.2)  # (E, H)
        e = e - scatter(e.detach(), dst, 0, dim_size=n, reduce="max")[dst]
        num = w[:, None] * e.exp()
        alpha = num / (scatter(num, dst, 0, dim_size=n, reduce="sum")[dst] + 1e-16)
        alpha = F.dropout(alpha, self.dropout, self.training)
        out = scatter(h[src] * alpha[..., None], dst, 0, dim_size=n, reduce="sum")
        out = out.reshape(n, -1) if self.concat else out.mean(1)
        return out + self.bias


class GAT(nn.Module):
    """Two-layer GAT: 8 heads x 8 hidden units (ELU), one output head, dropout 0.6."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 8, heads: int = 8, dropout: float = 0.6):
        super().__init__()
        self.conv1 = WeightedGATConv(in_features, hidden, heads, True, dropout)
        self.conv2 = WeightedGATConv(hidden * heads, num_classes, 1, False, dropout)
        self.dropout = dropout

    def forward(self, x, edge_index, edge_weight=None):
        x = F.dropout(x, self.dropout, self.training)
        x = F.elu(self.conv1(x, edge_index, edge_weight))
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2(x, edge_index, edge_weight)


@register_model("gat", task="graph")
def gat(in_features: int, num_classes: int, hidden: int = 8, heads: int = 8, dropout: float = 0.6) -> GAT:
    """GAT (Velickovic et al. 2018) with edge-weighted attention, 8x8 hidden, dropout 0.6."""
    return GAT(in_features, num_classes, hidden, heads, dropout)


class GIN(nn.Module):
    """Two GIN layers (Xu et al. 2019) for node classification: ``MLP((1 + eps) x_i + sum_j w_ij x_j)``."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 64, dropout: float = 0.5):
        super().__init__()
        self.mlp1 = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.mlp2 = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        self.eps = nn.Parameter(torch.zeros(2))
        self.dropout = dropout

    def _agg(self, x, edge_index, w, i):
        s = scatter(x[edge_index[0]] * w[:, None], edge_index[1], 0, dim_size=x.shape[0], reduce="sum")
        return (1 + self.eps[i]) * x + s

    def forward(self, x, edge_index, edge_weight=None):
        w = _weights(edge_index, edge_weight, x)
        x = F.dropout(x, self.dropout, self.training)
        h = F.relu(self.mlp1(self._agg(x, edge_index, w, 0)))
        h = F.dropout(h, self.dropout, self.training)
        return self.mlp2(self._agg(h, edge_index, w, 1))


@register_model("gin", task="graph")
def gin(in_features: int, num_classes: int, hidden: int = 64, dropout: float = 0.5) -> GIN:
    """GIN (Xu et al. 2019), two layers of 2-layer MLPs, 64 hidden units, sum aggregation."""
    return GIN(in_features, num_classes, hidden, dropout)
