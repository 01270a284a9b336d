"""Attacks on few-shot episodes: geometric attacks on the query or a support image, and a structure
attack on the adjacency the few-shot GNN learns.

Threat models (one query per episode, untargeted: the episode is *fooled* when the query's
predicted label is wrong):

* ``target="query"``: any registered image attack (``grid``, ``scale``, ``affine_pgd`` ...) warps
  the query image; the support set is fixed (:meth:`FewShotGNN.set_support`);
* ``target="support"``: the same attack warps one support image instead, the first shot of the
  query's true class (the one labelled example that should match the query in 1-shot); the query
  is untouched;
* :class:`AdjacencyAttack` (``attack="adjacency"``): the attacker deletes up to ``max_edges``
  undirected edges of the learned graph (the weight of edge ``i-j`` is set to 0 in every layer
  and each row renormalised), edges incident to the query (``scope="query"``) or any edge
  (``scope="all"``), chosen greedily: each step tries every remaining edge and keeps the deletion
  with the highest margin loss, until the query is misclassified or the budget is spent.

:func:`robustbench_geo.evaluation.fewshot.evaluate_fewshot_attack` runs one of them over a batch
of episodes and re-verifies every result with its own forward pass.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from robustbench_geo.attacks.base import make_entry
from robustbench_geo.attacks.image.core import margin_loss

#: what an attack on an episode changes: the query image or one support image (image attacks)
TARGETS = ("query", "support")


class SupportView(nn.Module):
    """The query's logits as a function of one support image: ``(B, C, H, W) -> (B, N)``.

    Each input image replaces support slot ``slot`` of the one stored episode (batched over inputs);
    the other support images are embedded once (eval mode), only the replaced one is re-embedded.
    """

    def __init__(self, model: nn.Module, query: torch.Tensor, support: torch.Tensor, labels: torch.Tensor, slot: int):
        super().__init__()
        self.model, self.query, self.support, self.labels, self.slot = model, query, support, labels, slot
        self.train(model.training)  # an attack restores the view's mode afterwards: it must be the model's
        with torch.no_grad():
            self.support_emb = model.embed(support)  # (S, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        emb = self.support_emb.unsqueeze(0).expand(b, *self.support_emb.shape).clone()
        emb[:, self.slot] = self.model.embed(x)
        sup = self.support.unsqueeze(0).expand(b, *self.support.shape)  # shapes only: embeddings are given
        return self.model.episode(self.query.unsqueeze(0).expand(b, *self.query.shape), sup,
                                  self.labels.unsqueeze(0).expand(b, -1), support_emb=emb)


class AdjacencyAttack:
    """Greedy deletion of up to ``max_edges`` edges of the learned adjacency (see module docstring)."""

    param_docs = {"max_edges": "undirected edges deleted at most (budget)",
                  "scope": "candidate edges: 'query' (incident to the query node) or 'all'"}

    def __init__(self, model: nn.Module, *, max_edges: int = 1, scope: str = "query"):
        if int(max_edges) < 0:
            raise ValueError(f"max_edges: expected a non-negative number of edges, got {max_edges}")
        if scope not in ("query", "all"):
            raise ValueError(f"scope: expected 'query' or 'all', got {scope!r}")
        self.model, self.max_edges, self.scope = model, int(max_edges), scope

    def candidates(self, n: int) -> torch.Tensor:
        """``(M, 2)`` undirected candidate edges ``(i, j)``, ``i < j``."""
        if self.scope == "query":
            return torch.stack([torch.zeros(n - 1, dtype=torch.long), torch.arange(1, n)], dim=1)
        return torch.triu_indices(n, n, offset=1).t()

    @torch.inference_mode()
    def __call__(self, query, support, labels, y) -> dict:
        """Attack one episode: ``query (1, C, H, W)``, ``support (1, S, C, H, W)``, ``labels (1, S)``, ``y (1,)``.

        Returns ``{"mask": (n, n), "deleted": [(i, j)], "success", "forward_passes"}`` with ``n = S + 1``.
        """
        n = support.shape[1] + 1
        mask = torch.ones(n, n, device=query.device)
        cand = self.candidates(n)
        left = torch.ones(len(cand), dtype=torch.bool)
        deleted, passes = [], 0

        def run(masks):
            k = masks.shape[0]
            return self.model.episode(query.expand(k, *query.shape[1:]), support.expand(k, *support.shape[1:]),
                                      labels.expand(k, -1), masks)

        logits = run(mask[None])
        passes += 1
        fooled = bool(logits.argmax(1).item() != y.item())
        for _ in range(self.max_edges):
            if fooled or not left.any():
                break
            idx = left.nonzero().squeeze(1)
            trial = mask.expand(len(idx), n, n).clone()
            ar = torch.arange(len(idx))
            trial[ar, cand[idx, 0], cand[idx, 1]] = 0
            trial[ar, cand[idx, 1], cand[idx, 0]] = 0
            out = run(trial)
            passes += len(idx)
            loss = margin_loss(out, y.expand(len(idx)))
            best = int(loss.argmax())
            mask = trial[best]
            left[idx[best]] = False
            deleted.append(tuple(cand[idx[best]].tolist()))
            fooled = bool(out[best].argmax().item() != y.item())
        return {"mask": mask, "deleted": deleted, "success": fooled, "forward_passes": passes}


#: the adjacency attack's entry (not in the registry: it applies to few-shot episodes only)
ADJACENCY = make_entry("adjacency", AdjacencyAttack, "fewshot")
