"""Dense differentiable forward passes shared by the gradient attacks on small graphs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustbench_geo.check import unknown_name_error


def dense_logits(model, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
    """Logits ``(N, C)`` of ``model`` on a dense weighted adjacency ``adj`` ``(N, N)`` (no self-loops).

    Uses the model's ``dense_forward`` when it has one (GCN, SGC, GCN-SVD); otherwise runs
    ``forward`` on every ordered pair ``i != j`` with ``adj`` as edge weights (exact but heavier).
    """
    if hasattr(model, "dense_forward"):
        return model.dense_forward(x, adj)
    n = adj.shape[0]
    ii, jj = torch.meshgrid(torch.arange(n, device=adj.device), torch.arange(n, device=adj.device), indexing="ij")
    off = ii != jj
    ei = torch.stack([ii[off], jj[off]])
    return model(x, ei, adj[ei[0], ei[1]])


def dense_matrices(model) -> float:
    """Extra ``N x N`` float matrices a forward/backward pass of ``model`` costs on the dense path."""
    return 8.0 if hasattr(model, "dense_forward") else 48.0


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (to be maximised by the attacker)."""
    return F.cross_entropy(logits, labels)


def cw_loss(logits: torch.Tensor, labels: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
    """Mean Carlini-Wagner margin ``min(max_{c != y} z_c - z_y, kappa)`` (to be maximised)."""
    return _margin(logits, labels).clamp(max=kappa).mean()


def tanh_margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean ``tanh(max_{c != y} z_c - z_y)`` (Geisler et al. 2021; bounded, so no node dominates)."""
    return torch.tanh(_margin(logits, labels)).mean()


def prob_margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean margin of the softmax probabilities ``max_{c != y} p_c - p_y`` (bounded in [-1, 1])."""
    return _margin(logits.softmax(1), labels).mean()


def masked_ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the nodes still classified as ``labels`` (Geisler et al. 2021's MCE)."""
    ok = logits.argmax(1) == labels
    if not ok.any():
        return logits.sum() * 0
    return F.cross_entropy(logits[ok], labels[ok], reduction="sum") / labels.numel()


def _margin(logits, labels):
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).max(1).values
    return other - z_y


LOSSES = {"ce": ce_loss, "cw": cw_loss, "tanh_margin": tanh_margin_loss, "prob_margin": prob_margin_loss, "mce": masked_ce_loss}


def get_loss(name: str):
    if name not in LOSSES:
        raise unknown_name_error("loss", name, LOSSES)
    return LOSSES[name]
