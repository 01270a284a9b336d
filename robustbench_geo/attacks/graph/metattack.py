"""Metattack (Zügner & Günnemann 2019, "Adversarial Attacks on Graph Neural Networks via Meta Learning").

Global poisoning: flips are chosen one at a time by the meta-gradient of an attack loss with
respect to the adjacency, taken through the unrolled training (``train_iters`` steps of SGD with
momentum) of a linearised two-layer GCN surrogate ``A_hat^2 X W1 W2``. Variants:

* Meta-Self (``lambda_train=0``): loss on the unlabeled nodes with self-training labels (the
  predictions of a surrogate trained on the clean graph);
* Meta-Train (``lambda_train=1``): loss on the labeled nodes; values in between mix both;
* A-Meta-Self (``approximate=True``): the sum over training steps of the first-order gradients
  (no differentiation through the training dynamics).

Filters: no flip may leave a node without edges (singletons), and with ``ll_constraint`` every
flip keeps the degree power law (likelihood-ratio test, :mod:`.constraints`).

Speed: the surrogate is linear, so training sees the graph only through
``Z_train = (A_hat^2 X)[train]`` (``|train| x F``). The unrolled training runs on these small
matrices and the meta-gradient reaches the ``N x N`` adjacency through one product with the
(sparse) features, instead of differentiating ``N x N`` products at every training step. The
result is the same meta-gradient (the tests compare it with the direct unrolled computation).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from robustbench_geo.attacks.base import register_attack
from robustbench_geo.attacks.graph.base import GraphAttack, GraphPerturbation, check_dense_memory, edge_budget, finalize
from robustbench_geo.attacks.graph.constraints import loglik_mask, singleton_mask
from robustbench_geo.attacks.graph.dense import train_linear_gcn, uniform_init as _uniform
from robustbench_geo.data.base import GraphDataset
from robustbench_geo.models.gnn import dense_gcn_norm


@register_attack("metattack", domain="graph")
class Metattack(GraphAttack):
    """Metattack (Zügner & Günnemann 2019): meta-gradient poisoning; Meta-Self/Train, A-Meta-Self."""

    uses_model = False
    param_docs = {
        "budget_edge_fraction": "flips as a fraction of the clean graph's edges",
        "lambda_train": "weight of the labeled-node loss: 0 = Meta-Self, 1 = Meta-Train",
        "approximate": "A-Meta-Self: first-order approximation of the meta-gradient",
        "train_iters": "unrolled surrogate training steps per flip",
        "lr": "surrogate SGD learning rate", "momentum": "surrogate SGD momentum",
        "hidden": "surrogate hidden units", "ll_constraint": "keep the degree power law (likelihood-ratio test)",
        "ll_cutoff": "likelihood-ratio cutoff", "max_memory_gb": "refuse graphs whose dense matrices need more (GiB)",
    }

    def __init__(self, model=None, *, budget_edge_fraction: float = 0.05, lambda_train: float = 0.0,
                 approximate: bool = False, train_iters: int = 100, lr: float = 0.1, momentum: float = 0.9,
                 hidden: int = 16, ll_constraint: bool = True, ll_cutoff: float = 0.004, max_memory_gb: float = 8.0):
        super().__init__(model)
        if not 0 <= lambda_train <= 1:
            raise ValueError(f"lambda_train: expected a weight in [0, 1], got {lambda_train}")
        if train_iters < 1:
            raise ValueError(f"train_iters: expected a positive number of steps, got {train_iters}")
        self.budget_edge_fraction, self.lambda_train, self.approximate = budget_edge_fraction, lambda_train, approximate
        self.train_iters, self.lr, self.momentum, self.hidden = train_iters, lr, momentum, hidden
        self.ll_constraint, self.ll_cutoff, self.max_memory_gb = ll_constraint, ll_cutoff, max_memory_gb
        self.progress = True

    def __call__(self, graph: GraphDataset, *, seed: int = 0) -> GraphPerturbation:
        budget = edge_budget(graph, self.budget_edge_fraction)
        n = graph.num_nodes
        mem = check_dense_memory("metattack", n, 14, self.max_memory_gb)
        t0 = time.perf_counter()
        graph = graph.to("cpu")
        x, y = graph.x, graph.y
        adj = graph.dense_adjacency()
        deg0 = adj.sum(1)
        train = graph.idx_train
        unlabeled = torch.cat([graph.idx_val, graph.idx_test]).sort().values
        a_hat = dense_gcn_norm(adj)
        self_labels = (a_hat @ (a_hat @ x) @ train_linear_gcn(x, adj, y, train, None, self.hidden, seed)).argmax(1)
        self_labels[train] = y[train]
        x_sp_t = x.T.to_sparse()  # (F, N) sparse, for A_hat X = (X^T A_hat)^T
        x_sp = x.to_sparse()
        g = torch.Generator().manual_seed(seed)
        flipped = torch.zeros(n, n, dtype=torch.bool)
        upper = torch.ones(n, n, dtype=torch.bool).triu(1)
        chosen = []
        bar = tqdm(range(budget), desc="metattack", disable=not self.progress, leave=False, unit="flip")
        for _ in bar:
            a_mod = adj.clone().requires_grad_(True)
            grad = self._meta_gradient(a_mod, x_sp, x_sp_t, y, train, unlabeled, self_labels, g)
            with torch.no_grad():
                score = (grad + grad.T.contiguous()) * (1 - 2 * adj)  # a copied transpose: 3x faster than adding a strided view
                allowed = upper & ~flipped & singleton_mask(adj)
                if self.ll_constraint:
                    allowed &= loglik_mask(deg0, adj, ll_cutoff=self.ll_cutoff)
                score = score.masked_fill(~allowed, float("-inf"))
                k = int(torch.argmax(score))
                if score.view(-1)[k] == float("-inf"):
                    break  # nothing left that the constraints allow
                i, j = divmod(k, n)
                adj[i, j] = adj[j, i] = 1 - adj[i, j]
                flipped[i, j] = True
                chosen.append((i, j))
        flips = torch.tensor(chosen, dtype=torch.long).reshape(-1, 2).T
        work = {"flips_chosen": len(chosen), "meta_gradients": len(chosen), "train_iters": self.train_iters,
                "flip_sequence": chosen,  # greedy order: a prefix is the attack with a smaller budget
                "variant": "A-Meta-Self" if self.approximate else ("Meta-Self" if self.lambda_train == 0 else
                                                                    f"Meta(lambda={self.lambda_train:g})"),
                "dense_memory_gib": mem, "seconds": time.perf_counter() - t0}
        return finalize(graph, flips, budget, work=work)

    def _meta_gradient(self, a_mod, x_sp, x_sp_t, y, train, unlabeled, self_labels, g) -> torch.Tensor:
        """``dL_attack / dA`` (``N x N``, not symmetrised) through the unrolled surrogate training."""
        a_hat = dense_gcn_norm(a_mod)
        ax = torch.sparse.mm(x_sp_t, a_hat).T  # (N, F) = A_hat X
        z_train = a_hat[train] @ ax  # (|train|, F) = (A_hat^2 X)[train]
        c = int(y.max()) + 1
        w1 = _uniform((ax.shape[1], self.hidden), g).requires_grad_(True)
        w2 = _uniform((self.hidden, c), g).requires_grad_(True)
        v1, v2 = torch.zeros_like(w1), torch.zeros_like(w2)
        lam = self.lambda_train

        def attack_loss(w, xw=None):  # w: (F, C) product W1 W2, or xw = X W1 W2 (N, C)
            out = _sym_mm(a_hat, _sym_mm(a_hat, torch.sparse.mm(x_sp, w) if xw is None else xw))
            loss = 0.0
            if lam > 0:
                loss = loss + lam * F.cross_entropy(out[train], y[train])
            if lam < 1:
                loss = loss + (1 - lam) * F.cross_entropy(out[unlabeled], self_labels[unlabeled])
            return loss

        if self.approximate:
            zt = z_train.detach()
            ws = []
            for _ in range(self.train_iters):
                loss = F.cross_entropy(zt @ w1 @ w2, y[train])
                g1, g2 = torch.autograd.grad(loss, [w1, w2])
                v1, v2 = self.momentum * v1 + g1, self.momentum * v2 + g2
                w1 = (w1 - self.lr * v1).detach().requires_grad_(True)
                w2 = (w2 - self.lr * v2).detach().requires_grad_(True)
                ws.append((w1 @ w2).detach())
            steps, c = len(ws), ws[0].shape[1]
            xw = torch.sparse.mm(x_sp, torch.cat(ws, 1))  # (N, T*C): all steps in one product
            out = _sym_mm(a_hat, _sym_mm(a_hat, xw)).view(-1, steps, c)
            total = 0.0  # sum over steps of the attack loss at the (fixed) weights of each step
            if lam > 0:
                total = total + lam * steps * F.cross_entropy(out[train].reshape(-1, c), y[train].repeat_interleave(steps))
            if lam < 1:
                total = total + (1 - lam) * steps * F.cross_entropy(
                    out[unlabeled].reshape(-1, c), self_labels[unlabeled].repeat_interleave(steps))
            return torch.autograd.grad(total, a_mod)[0]
        # Exact reparametrisation: every SGD step adds z_train^T G to W1's velocity, so
        # W1_t = W1_0 - z_train^T C_t and z_train W1_t = z_train W1_0 - K C_t with K = z_train z_train^T
        # (|train| x |train|): the unrolled steps never touch the F-dimensional features.
        w1_0 = w1.detach()
        p0 = z_train @ w1_0
        kk = z_train @ z_train.T
        cc = torch.zeros(len(train), self.hidden)
        vc = torch.zeros_like(cc)
        for _ in range(self.train_iters):
            h = p0 - kk @ cc
            loss = F.cross_entropy(h @ w2, y[train])
            gh, g2 = torch.autograd.grad(loss, [h, w2], create_graph=True)
            vc, v2 = self.momentum * vc + gh, self.momentum * v2 + g2
            cc, w2 = cc + self.lr * vc, w2 - self.lr * v2
        xw = torch.sparse.mm(x_sp, w1_0 @ w2) - torch.sparse.mm(x_sp, z_train.T.contiguous()) @ (cc @ w2)
        return torch.autograd.grad(attack_loss(None, xw), a_mod)[0]


class _SymmetricMatmul(torch.autograd.Function):
    """``A @ B`` for a symmetric ``A`` (``N x N``) and a thin ``B`` (``N x k``).

    Autograd's backward computes ``A^T @ grad`` through a transposed ``N x N`` view, about 15x slower
    on the CPU than the same product with ``A`` itself (75 vs 5 ms on the Cora LCC, one thread), and
    Metattack takes four such products per flip. With ``A`` symmetric (the normalised adjacency of
    an undirected graph) both products are computed as ``(B^T A)^T``.
    """

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return (b.T.contiguous() @ a).T.contiguous()

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a = grad @ b.T if ctx.needs_input_grad[0] else None
        grad_b = (grad.T.contiguous() @ a).T if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


def _sym_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _SymmetricMatmul.apply(a, b)

