"""Pro-GNN (Jin, Ma, Liu, Tang, Wang & Tang, KDD 2020): a GCN trained jointly with the graph it runs on.

Training alternates one step on the learned (symmetric) adjacency ``S`` (initialised to the training graph
``A``) with GCN steps on ``S`` (``graph_every`` = 2: one graph step per two GCN steps, as the
authors' ``outer_steps`` 1 / ``inner_steps`` 2). A graph step is SGD with momentum 0.9 and learning
rate ``adj_lr`` on::

    ||S - A||_F^2 + gnn_weight * CE(GCN(S)) + smooth * tr(X^T L_hat X)

(``L_hat`` the normalised Laplacian of ``(S + S^T) / 2`` with degrees + 1e-3), followed by the
proximal operators of ``nuclear * ||S||_*`` (singular-value soft-thresholding) and ``l1 * ||S||_1``
and the projection onto ``[0, 1]``. ``S`` is kept symmetric (the authors' ``--symmetric`` option:
the GCN sees ``(S + S^T) / 2``, whose gradient is the symmetrised one), which makes the nuclear
proximal step an eigendecomposition instead of an SVD (exact for symmetric ``S``). The GCN (two
layers, 16 hidden units, dropout on the hidden layer only) runs on ``D^-1/2 (S + I) D^-1/2``. The weights and ``S`` of the epoch with the lowest validation loss are kept.

At inference on a graph ``A'`` the model runs on ``S`` with the pairs that differ between ``A'`` and
``A`` flipped, ``S' = S + |A' - A| * (1 - 2 S)`` (Mujkanovic et al. 2022 perturb the learned graph
the same way in evasion); on the training graph this is ``S`` itself. ``|A' - A|`` is computed as
``(A' - A)(1 - 2A)``, linear in ``A'``, so the dense forward is differentiable in the adjacency.
Before training (no ``S`` yet) the model is a plain GCN on its input graph, which is where Pro-GNN
starts. ``S`` and ``A`` are dense ``(N, N)`` buffers saved with the weights.

References: DeepRobust's ``ProGNN`` (by the authors; ``deeprobust/graph/defense/prognn.py``: ``ProGNN.fit``,
``train_adj``, ``train_gcn``, ``feature_smoothing``; ``EstimateAdj.normalize``; ``PGD`` and
``ProxOperators`` in ``deeprobust/graph/defense/pgd.py``) with DeepRobust's ``GCN``
(``deeprobust/graph/defense/gcn.py``: no dropout on the input features). ``EstimateAdj.normalize``
maps a zero degree's ``d^-1/2`` to 0; ``S`` lies in ``[0, 1]``, so every degree of ``S + I`` is at least 1
and the clamp at 1e-5 here never applies. With ``symmetric=True`` that method normalises ``S + S^T``
(twice a symmetric ``S``), without it ``S``; the GCN here sees the symmetric ``S`` itself, DeepRobust's
default (``symmetric=False``) on a symmetric matrix.

Hyper-parameters: the authors' Cora script (Pro-GNN ``scripts/meta/cora_meta.sh``: ``alpha`` (l1)
5e-4, ``beta`` (nuclear) 1.5, ``gamma`` (gnn_weight) 1, ``lambda`` (smooth) 1e-3, ``lr_adj`` 0.01,
400 epochs of one graph step + two GCN steps) with the GCN learning rate 0.01 and weight decay 5e-4
of their ``train.py`` defaults and of Mujkanovic et al.'s ``pro_gnn`` runs (the script's 1e-3
trains the GCN far more slowly). Every graph step costs one full eigendecomposition of ``S``
(``N x N``; seconds for the Cora LCC), so the default schedule is reduced from 400 graph steps to
100 (``epochs`` 200 GCN steps, no early stopping): ``docs/gnn-defenses.md`` has the measured cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustbench_geo.models.gnn import GCN
from robustbench_geo.models.gnn_robust.common import edge_weights, to_dense
from robustbench_geo.models.registry import register_model

_STATE = ("learned_adj", "train_adj")


def nuclear_prox_symmetric(s: torch.Tensor, threshold: float) -> torch.Tensor:
    """Proximal operator of ``threshold * ||S||_*`` for a symmetric ``S`` ``(N, N)``: singular-value soft-thresholding.

    With ``S = Q diag(lambda) Q^T`` the singular values are ``|lambda|``, so the SVD-based operator is
    ``Q diag(sign(lambda) max(|lambda| - threshold, 0)) Q^T``; the symmetric eigendecomposition is
    about three times faster than an SVD and the result is symmetrised against rounding.
    """
    lam, q = torch.linalg.eigh(s)
    out = (q * (lam.sign() * (lam.abs() - threshold).clamp_min(0))) @ q.T
    return (out + out.T) / 2


@register_model("prognn", task="graph")
class ProGNN(GCN):
    """Pro-GNN (Jin et al. 2020): GCN + learned low-rank, sparse, feature-smooth graph (dense)."""

    train_defaults = {"lr": 0.01, "weight_decay": 5e-4, "epochs": 200, "patience": 200}

    def __init__(self, in_features: int, num_classes: int, hidden: int = 16, dropout: float = 0.5,
                 adj_lr: float = 0.01, adj_momentum: float = 0.9, l1: float = 5e-4, nuclear: float = 1.5,
                 smooth: float = 1e-3, gnn_weight: float = 1.0, graph_every: int = 2):
        super().__init__(in_features, num_classes, hidden, dropout, input_dropout=False)
        if adj_lr <= 0 or not 0 <= adj_momentum < 1 or min(l1, nuclear, smooth, gnn_weight) < 0 or graph_every < 1:
            raise ValueError(f"adj_lr > 0, adj_momentum in [0, 1), non-negative weights and graph_every >= 1: expected, "
                             f"got {adj_lr}, {adj_momentum}, {(l1, nuclear, smooth, gnn_weight)}, {graph_every}")
        self.adj_lr, self.adj_momentum, self.graph_every = adj_lr, adj_momentum, graph_every
        self.l1, self.nuclear, self.smooth, self.gnn_weight = l1, nuclear, smooth, gnn_weight
        self.register_buffer("learned_adj", torch.zeros(0, 0))
        self.register_buffer("train_adj", torch.zeros(0, 0))
        self._momentum: torch.Tensor | None = None
        self._gram: torch.Tensor | None = None

    # -- inference ---------------------------------------------------------------------------------
    def effective_adjacency(self, adj: torch.Tensor) -> torch.Tensor:
        """The graph the GCN runs on for an input adjacency ``adj`` ``(N, N)`` (see the module docstring)."""
        if self.learned_adj.numel() == 0:
            return adj
        if adj.shape != self.learned_adj.shape:
            raise ValueError(f"Pro-GNN learned its graph on {self.learned_adj.shape[0]} nodes: expected an adjacency of "
                             f"shape {tuple(self.learned_adj.shape)}, got {tuple(adj.shape)}")
        a, s = self.train_adj, self.learned_adj
        flips = (adj - a) * (1 - 2 * a)
        return s + flips * (1 - 2 * s)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        adj = to_dense(edge_index, edge_weights(edge_index, edge_weight, x), x.shape[0])
        return super().dense_forward(x, self.effective_adjacency(adj))

    def dense_forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Same function on a dense ``(N, N)`` adjacency without self-loops (differentiable in ``adj``)."""
        return super().dense_forward(x, self.effective_adjacency(adj))

    # -- training ----------------------------------------------------------------------------------
    def training_loss(self, x, edge_index, edge_weight, y, idx_train, epoch: int) -> torch.Tensor:
        """Cross-entropy of the GCN on ``S``, after a graph step every ``graph_every`` epochs (``S := A`` at epoch 0)."""
        if epoch == 0:
            with torch.no_grad():
                a = to_dense(edge_index, edge_weights(edge_index, edge_weight, x), x.shape[0]).detach()
            self.train_adj, self.learned_adj = a, a.clone()
            self._momentum = torch.zeros_like(a)
            xd = x.detach()
            self._gram = xd @ xd.T if self.smooth else None
        if epoch % self.graph_every == 0:
            self.graph_step(x, y, idx_train)
        out = super().dense_forward(x, self.learned_adj)
        return F.cross_entropy(out[idx_train], y[idx_train])

    def graph_step(self, x: torch.Tensor, y: torch.Tensor, idx_train: torch.Tensor) -> None:
        """One proximal-gradient step on the learned adjacency (the module docstring has the objective)."""
        s = self.learned_adj.clone().requires_grad_(True)
        loss = (s - self.train_adj).square().sum()
        if self.gnn_weight:
            out = super().dense_forward(x, s)
            loss = loss + self.gnn_weight * F.cross_entropy(out[idx_train], y[idx_train])
        if self.smooth:
            loss = loss + self.smooth * self.feature_smoothness(s)
        (grad,) = torch.autograd.grad(loss, s)
        with torch.no_grad():
            self._momentum.mul_(self.adj_momentum).add_((grad + grad.T) / 2)
            s = self.learned_adj - self.adj_lr * self._momentum
            if self.nuclear:
                s = nuclear_prox_symmetric(s, self.adj_lr * self.nuclear)
            if self.l1:
                s = s.sign() * (s.abs() - self.adj_lr * self.l1).clamp_min(0)
            self.learned_adj = s.clamp_(0, 1)

    def feature_smoothness(self, s: torch.Tensor) -> torch.Tensor:
        """``tr(X^T L_hat X)`` for ``L_hat = R (D - S_sym) R``, ``R = (D + 1e-3)^-1/2``, via the Gram matrix ``X X^T``."""
        sym = (s + s.T) / 2
        deg = sym.sum(1)
        r = (deg + 1e-3).rsqrt()
        g = self._gram
        return (r.square() * deg * g.diagonal()).sum() - (r[:, None] * sym * r[None, :] * g).sum()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in _STATE:  # the learned graph's size is only known once trained
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
