"""Robust GCN (Zhu, Zhang, Cui & Zhu, KDD 2019): Gaussian-based graph convolution, variance-based attention.

Every node is a Gaussian ``N(mean, diag(var))``. A layer maps means with ELU and variances with
ReLU, down-weights uncertain nodes by the attention ``att = exp(-gamma * var)`` and propagates
means with ``D^-1/2 (A + I) D^-1/2`` and variances with ``D^-1 (A + I) D^-1``::

    M' = A0 ((ELU(M W_M)) * att),   V' = A1 ((ReLU(V W_V)) * att^2)

The output is the sample ``M + eps * sqrt(V + 1e-8)``, ``eps ~ N(0, I)`` ``(N, C)``, in training and
in evaluation alike, and training adds the KL term ``reg_kl * sum_i mean_c 0.5 (M^2 + V - log(V + 1e-8))``
of the first layer (before propagation).

References: DeepRobust's ``RGCN`` (``deeprobust/graph/defense/r_gcn.py``: ``GGCL_F.forward``,
``GGCL_D.forward``, ``RGCN.forward``, ``RGCN._loss``, ``RGCN._normalize_adj``; a port of the authors'
TensorFlow code) and Mujkanovic et al.'s ``RGCN`` (``gb/model/rgcn.py``, ``RGCN.forward``,
``RGCNConv.forward``, ``fitting_regularizer``), which agree on the forward: both draw ``eps`` on every
call, evaluation included. Their normalisations differ only where a degree of ``A + I`` is below 1,
which a non-negative graph never has (DeepRobust maps ``0^-1/2`` to 0, Mujkanovic et al. clamp at 1e-5,
as here). In evaluation the draw here comes from a generator seeded with ``eval_noise_seed`` (0) on
every call, so a perturbed graph is judged by the same draw every time (Mujkanovic et al. seed their
evaluation draw too; DeepRobust draws from the global generator). ``eval_noise_seed=None`` is a
deliberate deviation: the mean ``M`` in evaluation (this package's RGCN before it followed the references).

Hyper-parameters: 16 hidden units, ``gamma`` 1, dropout 0.6, KL weight 5e-4, Adam lr 0.01 and
weight decay 5e-4: the "faithful" RGCN setting of Mujkanovic et al. 2022
(``ex_config/evasion_global.yml``, ``rgcn_faith``), which follows the authors' and DeepRobust's
``RGCN`` (``beta1`` = 5e-4 KL, ``beta2`` = 5e-4 L2 on the first layer, dropout 0.6, lr 0.01).
Early stopping as for every graph model here (validation loss, patience 100).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_geo.models.gnn import dense_gcn_propagate
from robustbench_geo.models.gnn_robust.common import (
    degree_scales, dense_degree_scale, edge_weights, scaled_propagate,
)
from robustbench_geo.models.registry import register_model


class GaussianConv(nn.Module):
    """The two linear maps of one Gaussian graph convolution (no bias, Xavier-uniform init)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.mean = nn.Linear(in_features, out_features, bias=False)
        self.var = nn.Linear(in_features, out_features, bias=False)
        nn.init.xavier_uniform_(self.mean.weight)
        nn.init.xavier_uniform_(self.var.weight)

    def forward(self, m: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.elu(self.mean(m)), F.relu(self.var(v))


@register_model("rgcn", task="graph")
class RGCN(nn.Module):
    """Robust GCN (Zhu et al. 2019): Gaussian node embeddings with variance-based attention, 16 hidden."""

    #: training settings that differ from the graph defaults (see the module docstring for sources)
    train_defaults = {"lr": 0.01, "weight_decay": 5e-4}

    def __init__(self, in_features: int, num_classes: int, hidden: int = 16, gamma: float = 1.0, dropout: float = 0.6,
                 reg_kl: float = 5e-4, eval_noise_seed: int | None = 0):
        super().__init__()
        if gamma < 0 or reg_kl < 0 or not 0 <= dropout < 1:
            raise ValueError(f"gamma, reg_kl >= 0 and dropout in [0, 1): expected, got {gamma}, {reg_kl}, {dropout}")
        self.conv1 = GaussianConv(in_features, hidden)
        self.conv2 = GaussianConv(hidden, num_classes)
        self.gamma, self.dropout, self.reg_kl, self.eval_noise_seed = gamma, dropout, reg_kl, eval_noise_seed

    def _run(self, x, prop_mean, prop_var):
        """``(logits, kl)``; ``prop_mean`` / ``prop_var`` apply the two normalised adjacencies to ``(N, C)``."""
        x = F.dropout(x, self.dropout, self.training)
        m, v = self.conv1(x, x)
        kl = 0.5 * (m.square() + v - (v + 1e-8).log()).mean(1).sum()
        att = torch.exp(-self.gamma * v)
        m, v = prop_mean(m * att), prop_var(v * att * att)
        m, v = self.conv2(F.dropout(m, self.dropout, self.training), F.dropout(v, self.dropout, self.training))
        att = torch.exp(-self.gamma * v)
        m, v = prop_mean(m * att), prop_var(v * att * att)
        if self.training:
            m = m + torch.randn_like(v) * (v + 1e-8).sqrt()
        elif self.eval_noise_seed is not None:
            gen = torch.Generator().manual_seed(self.eval_noise_seed)
            m = m + torch.randn(v.shape, generator=gen, dtype=v.dtype).to(v.device) * (v + 1e-8).sqrt()
        return m, kl

    def _sparse_props(self, x, edge_index, edge_weight):
        n, w = x.shape[0], edge_weights(edge_index, edge_weight, x)
        s_mean, s_var = degree_scales(edge_index, w, n, -0.5), degree_scales(edge_index, w, n, -1.0)
        return (lambda h: scaled_propagate(edge_index, w, h, s_mean)), (lambda h: scaled_propagate(edge_index, w, h, s_var))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        return self._run(x, *self._sparse_props(x, edge_index, edge_weight))[0]

    def dense_forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Same function on a dense ``(N, N)`` adjacency without self-loops (differentiable in ``adj``)."""
        s_mean, s_var = dense_degree_scale(adj, -0.5), dense_degree_scale(adj, -1.0)
        return self._run(x, lambda h: dense_gcn_propagate(adj, h, s_mean), lambda h: dense_gcn_propagate(adj, h, s_var))[0]

    def training_loss(self, x, edge_index, edge_weight, y, idx_train, epoch: int) -> torch.Tensor:
        """Cross-entropy on the sampled output plus ``reg_kl`` times the first layer's KL term."""
        out, kl = self._run(x, *self._sparse_props(x, edge_index, edge_weight))
        return F.cross_entropy(out[idx_train], y[idx_train]) + self.reg_kl * kl
