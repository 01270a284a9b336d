"""Few-shot learning with graph neural networks (Garcia & Bruna, ICLR 2018).

An *episode* is a graph: node 0 is the query image, nodes ``1 .. N*K`` the support images of an
``N``-way ``K``-shot task. Node features are a CNN embedding of the image concatenated with the
label: one-hot for support nodes, uniform ``1/N`` for the query. Each GNN layer

1. *learns the adjacency*: ``A_ij = softmax_j(MLP(|x_i - x_j|))`` over the neighbours ``j != i``
   (self-loops excluded; the identity is a separate operator),
2. applies a graph convolution over the operator family ``{I, A}``:
   ``h = LeakyReLU(BN([x, A x] W))``,
3. concatenates: ``x <- [x, h]`` (dense connections).

A last adjacency + graph convolution maps every node to ``N`` logits; the query node's are the
episode's prediction. Everything is permutation-equivariant in the support nodes.

Protocol for the registry: ``forward(images (B, C, H, W)) -> (B, N)`` classifies each image as the
query of the episode set with :meth:`FewShotGNN.set_support` (one support set for all queries,
``(S, C, H, W)``, embedded once in eval mode, or one per query, ``(B, S, C, H, W)``). With no support set each image is a
zero-shot episode of one node. Image attacks therefore apply unchanged to query images;
:meth:`FewShotGNN.episode` is the explicit call (and takes an ``edge_mask`` for structure attacks).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_geo.models.registry import register_model


def embedding_cnn(in_channels: int = 1, width: int = 64, out_features: int = 64) -> nn.Sequential:
    """4 x (3x3 conv, BN, max-pool 2, LeakyReLU 0.2) + linear: the paper's Omniglot embedding."""
    layers, cin = [], in_channels
    for _ in range(4):
        layers += [nn.Conv2d(cin, width, 3, padding=1), nn.BatchNorm2d(width), nn.MaxPool2d(2, ceil_mode=True),
                   nn.LeakyReLU(0.2, inplace=True)]
        cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, out_features))


class LearnedAdjacency(nn.Module):
    """``A = softmax_j(MLP(|x_i - x_j|))`` over ``j != i`` (and ``edge_mask``); ``(E, n, d) -> (E, n, n)``."""

    def __init__(self, in_features: int, hidden: int = 96):
        super().__init__()
        dims = [in_features, 2 * hidden, 2 * hidden, hidden, hidden]
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2, inplace=True)]
        self.mlp = nn.Sequential(*layers, nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, edge_mask: torch.Tensor | None = None) -> torch.Tensor:
        n = x.shape[1]
        score = self.mlp((x.unsqueeze(2) - x.unsqueeze(1)).abs()).squeeze(-1)  # (E, n, n)
        allowed = ~torch.eye(n, dtype=torch.bool, device=x.device)
        weight = allowed.to(x.dtype) if edge_mask is None else allowed.to(x.dtype) * edge_mask.to(x.dtype)
        score = score.masked_fill(weight <= 0, float("-inf"))
        a = torch.softmax(score, dim=-1) * weight  # a fractional mask scales an edge's weight
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
        return torch.nan_to_num(a, nan=0.0)  # nodes without neighbours aggregate nothing


class GraphConv(nn.Module):
    """``[x, A x] W`` (+ BN over nodes and LeakyReLU unless ``last``): ``(E, n, d) -> (E, n, out)``."""

    def __init__(self, in_features: int, out_features: int, last: bool = False):
        super().__init__()
        self.linear = nn.Linear(2 * in_features, out_features)
        self.norm = None if last else nn.BatchNorm1d(out_features)

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        h = self.linear(torch.cat([x, a @ x], dim=-1))
        if self.norm is None:
            return h
        return F.leaky_relu(self.norm(h.transpose(1, 2)).transpose(1, 2), 0.2)


class FewShotGNN(nn.Module):
    """Garcia & Bruna's few-shot GNN for ``num_classes``-way episodes.

    Args:
        in_channels, num_classes, image_size: image protocol; ``num_classes`` is the number of ways ``N``.
        embedding: CNN embedding size; nf: adjacency MLP width and base width of the GNN.
        layers: hidden graph-convolution layers (each adds ``nf // 2`` features).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 5, image_size=(28, 28), embedding: int = 64,
                 nf: int = 96, layers: int = 2):
        super().__init__()
        self.n_way = num_classes
        self.embed = embedding_cnn(in_channels, 64, embedding)
        d = embedding + num_classes
        self.adjacency, self.convs = nn.ModuleList(), nn.ModuleList()
        for _ in range(layers):
            self.adjacency.append(LearnedAdjacency(d, nf))
            self.convs.append(GraphConv(d, nf // 2))
            d += nf // 2
        self.adjacency.append(LearnedAdjacency(d, nf))
        self.convs.append(GraphConv(d, num_classes, last=True))
        self.support: torch.Tensor | None = None
        self.support_labels: torch.Tensor | None = None
        self._support_emb: tuple[torch.Tensor, int] | None = None
        self.record = False
        self.last_adjacency: list[torch.Tensor] = []

    def set_support(self, images: torch.Tensor | None, labels: torch.Tensor | None = None) -> None:
        """Fix the support set used by :meth:`forward`: ``(S, C, H, W)`` + ``(S,)`` or ``(B, S, ...)`` + ``(B, S)``."""
        if images is None:
            self.support = self.support_labels = self._support_emb = None
            return
        if labels is None or labels.shape != images.shape[:labels.dim()] or labels.dim() not in (1, 2):
            raise ValueError(f"labels: expected shape {tuple(images.shape[:-3])} (one label per support image), "
                             f"got {None if labels is None else tuple(labels.shape)}")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.n_way):
            raise ValueError(f"labels: expected episode labels in [0, {self.n_way - 1}], got [{int(labels.min())}, {int(labels.max())}]")
        self.support, self.support_labels = images, labels.long()
        self._support_emb = None
        if not self.training and images.dim() == 4:  # embed a shared support set once (attacks query it often)
            with torch.no_grad():
                self._support_emb = (self.embed(images), self._weights_version())

    def _weights_version(self) -> int:
        return sum(t._version for t in [*self.embed.parameters(), *self.embed.buffers()])

    def node_features(self, query: torch.Tensor, support: torch.Tensor, support_labels: torch.Tensor,
                      support_emb: torch.Tensor | None = None) -> torch.Tensor:
        """``(E, 1 + S, embedding + N)``: query first, with a uniform label (``support_emb``: ``(E, S, D)`` precomputed)."""
        e, s = support.shape[:2]
        if support_emb is None:
            imgs = torch.cat([query.unsqueeze(1), support], dim=1).flatten(0, 1)
            emb = self.embed(imgs).view(e, 1 + s, -1)
        else:
            emb = torch.cat([self.embed(query).unsqueeze(1), support_emb], dim=1)
        lab = torch.cat([torch.full((e, 1, self.n_way), 1.0 / self.n_way, device=emb.device, dtype=emb.dtype),
                         F.one_hot(support_labels, self.n_way).to(emb.dtype)], dim=1)
        return torch.cat([emb, lab], dim=-1)

    def episode(self, query: torch.Tensor, support: torch.Tensor, support_labels: torch.Tensor,
                edge_mask: torch.Tensor | None = None, support_emb: torch.Tensor | None = None) -> torch.Tensor:
        """Query logits ``(E, N)``.

        Args:
            query: ``(E, C, H, W)``; support: ``(E, S, C, H, W)``; support_labels: ``(E, S)`` in ``[0, N)``.
            edge_mask: optional ``(E, 1 + S, 1 + S)`` weights in ``[0, 1]`` multiplying the learned
                adjacency of every layer before renormalisation (0 deletes an edge); node 0 = query.
            support_emb: optional precomputed support embeddings ``(E, S, D)`` (then ``support`` is not embedded).
        """
        x = self.node_features(query, support, support_labels, support_emb)
        self.last_adjacency = []
        for adj, conv in zip(self.adjacency[:-1], self.convs[:-1]):
            a = adj(x, edge_mask)
            if self.record:
                self.last_adjacency.append(a.detach())
            x = torch.cat([x, conv(x, a)], dim=-1)
        a = self.adjacency[-1](x, edge_mask)
        if self.record:
            self.last_adjacency.append(a.detach())
        return self.convs[-1](x, a)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if self.support is None:
            sup = x.new_zeros(b, 0, *x.shape[1:])
            lab = torch.zeros(b, 0, dtype=torch.long, device=x.device)
        elif self.support.dim() == 4:
            sup = self.support.to(x.device).unsqueeze(0).expand(b, *self.support.shape)
            lab = self.support_labels.to(x.device).unsqueeze(0).expand(b, -1)
            cached = self._support_emb
            if cached is not None and not self.training and cached[1] == self._weights_version():
                emb = cached[0].to(x.device).unsqueeze(0).expand(b, *cached[0].shape)
                return self.episode(x, sup, lab, support_emb=emb)
        else:
            if self.support.shape[0] != b:
                raise ValueError(f"input: expected {self.support.shape[0]} queries (one per stored episode), got {b}")
            sup, lab = self.support.to(x.device), self.support_labels.to(x.device)
        return self.episode(x, sup, lab)


@register_model("fewshot_gnn", task="image")
def fewshot_gnn(in_channels=1, num_classes=5, image_size=(28, 28), embedding: int = 64, nf: int = 96,
                layers: int = 2) -> FewShotGNN:
    """Few-shot GNN (Garcia & Bruna 2018): learned adjacency over CNN embeddings + labels; num_classes = N ways."""
    return FewShotGNN(in_channels, num_classes, image_size, embedding, nf, layers)
