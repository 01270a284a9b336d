"""Dense differentiable forward passes shared by the gradient attacks on small graphs."""

from __future__ import annotations

import math

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


def symmetrize(g: torch.Tensor, tile: int = 512) -> torch.Tensor:
    """``g + g.T`` of a square matrix, tile by tile.

    A plain ``g + g.T`` reads the transpose across rows and runs several times slower than a copy
    on large matrices; square tiles keep both reads in cache. Each pair of tiles is summed once
    and mirrored, so the result is exactly symmetric.
    """
    n = g.shape[0]
    out = torch.empty_like(g)
    for i in range(0, n, tile):
        for j in range(i, n, tile):
            t = g[i:i + tile, j:j + tile] + g[j:j + tile, i:i + tile].T
            out[i:i + tile, j:j + tile] = t
            if j != i:
                out[j:j + tile, i:i + tile] = t.T
    return out


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


def uniform_init(shape, g: torch.Generator) -> torch.Tensor:
    """``U(-1/sqrt(out), 1/sqrt(out))`` weights of shape ``(in, out)`` (the surrogates' initialisation)."""
    stdv = 1.0 / math.sqrt(shape[1])
    return (torch.rand(shape, generator=g) * 2 - 1) * stdv


def train_linear_gcn(x, adj, y, idx_train, idx_val=None, hidden: int = 16, seed: int = 0, epochs: int = 200) -> torch.Tensor:
    """Train the linearised GCN ``A_hat^2 X W1 W2`` (Adam 0.01, weight decay 5e-4) and return ``W1 W2`` ``(F, C)``.

    With ``idx_val`` the weights of the epoch with the lowest validation loss are returned, else the last ones.
    """
    from robustbench_geo.models.gnn import dense_gcn_norm

    g = torch.Generator().manual_seed(seed)
    w1 = uniform_init((x.shape[1], hidden), g).requires_grad_(True)
    w2 = uniform_init((hidden, int(y.max()) + 1), g).requires_grad_(True)
    a = dense_gcn_norm(adj)
    with torch.no_grad():
        z = a @ (a @ x)
    opt = torch.optim.Adam([w1, w2], lr=0.01, weight_decay=5e-4)
    best, best_w = float("inf"), None
    for _ in range(epochs):
        loss = F.cross_entropy(z[idx_train] @ w1 @ w2, y[idx_train])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if idx_val is not None:
            with torch.no_grad():
                val = F.cross_entropy(z[idx_val] @ w1 @ w2, y[idx_val]).item()
                if val < best:
                    best, best_w = val, (w1 @ w2).detach().clone()
    return best_w if idx_val is not None else (w1 @ w2).detach()
