"""Adaptive attacks: differentiate a modified model, always judge on the real one.

Mujkanovic et al. (NeurIPS 2022, "Are Defenses for Graph Neural Networks Robust?") show that a
defense's own gradient is often a poor guide: a pre-processing step can be non-differentiable
(Jaccard's filter) or hide the directions that matter (the low-rank projection of GCN-SVD discards
most flips). Their adaptive attacks differentiate a *surrogate*, a modified version of the defended
model, and weight each pair's flip by an *edge-difference mask* that says how much of it survives
the defense. This module builds those surrogates for the gradient attacks (``pgd``):

* ``surrogate="model"``: the model's own ``dense_forward`` (no change);
* ``surrogate="drop"``: the pre-processing is dropped, the classifier runs on the perturbed graph
  itself (BPDA-style: the defense is replaced by the identity under differentiation);
* ``surrogate="freeze"``: the pre-processing is applied once to the clean graph and frozen; the
  relaxed flips are added to its output;
* ``surrogate="alter"``: a copy of the model with the attribute changes its class declares in
  ``attack_alterations`` (Mujkanovic et al.'s model alterations, e.g. GNNGuard's ``div_limit``
  0.01 instead of 1e-8, which keeps the relaxed graph's near-empty rows from blowing up the
  gradient); a model without alterations is its own ``alter`` surrogate;
* ``mask="eigenspace"``: Mujkanovic et al.'s eigenspace alignment for low-rank defenses: the flip of
  pair ``(i, j)`` is weighted by ``(|V_i| + |V_j|) / 2``, the norms of the rows of the top-``rank``
  eigenvectors ``V`` of the clean adjacency (how much of a perturbation at ``i`` and ``j`` survives
  the rank-``rank`` projection).

A model offers the split through ``dense_preprocess(x, adj)`` and ``dense_classifier(x, adj)``
(``dense_forward = dense_classifier o dense_preprocess``); models without a pre-processing step
(plain GCN) are their own ``drop`` and ``freeze`` surrogates. Whatever is differentiated, the
attacks judge every candidate perturbation by the real model's sparse ``forward`` on the binary
graph, and the evaluators re-measure it the same way.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch

from robustbench_geo.attacks.base import create_attack, get_attack
from robustbench_geo.attacks.graph.dense import dense_logits
from robustbench_geo.check import unknown_name_error
from robustbench_geo.data.base import GraphDataset
from robustbench_geo.models.gnn_defenses import top_eigenvectors

SURROGATES = ("model", "drop", "freeze", "alter")


def eigenspace_alignment(adj: torch.Tensor, rank: int) -> torch.Tensor:
    """``(N, N)`` mask ``(|V_i| + |V_j|) / 2`` of the top-``rank`` eigenvectors ``V`` of a symmetric ``adj``.

    ``|V_i|^2`` is the diagonal of the projection ``V V^T``: the fraction of a unit perturbation at
    node ``i`` that survives a rank-``rank`` projection. Values lie in ``[0, 1]``.
    """
    nz = adj.nonzero().T
    v = top_eigenvectors(nz[0], nz[1], adj[nz[0], nz[1]], adj.shape[0], rank).to(adj.dtype)
    r = v.norm(dim=1)
    return (r[:, None] + r[None, :]) / 2


def _eigenspace_mask(model, adj: torch.Tensor, rank: int | None) -> torch.Tensor:
    rank = rank if rank is not None else getattr(model, "rank", None)
    if rank is None:
        raise ValueError("mask='eigenspace' needs a rank: expected mask_rank or a model with a 'rank' attribute "
                         f"(gcn_svd), got neither for {type(model).__name__}")
    return eigenspace_alignment(adj, int(rank))


#: edge-difference masks by name: ``(model, clean dense adjacency, rank) -> (N, N)`` weights
MASKS: dict[str, Callable] = {"eigenspace": _eigenspace_mask}

#: learning-rate factors by name: ``(step t, steps T) -> factor`` of the base rate
LR_SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "sqrt": lambda t, steps: 1 / math.sqrt(t + 1),
    "constant": lambda t, steps: 1.0,
    "cosine": lambda t, steps: 0.5 * (1 + math.cos(math.pi * t / max(steps, 1))),
}


def check_adaptive(surrogate: str, mask: str | None, lr_schedule: str) -> None:
    """Raise a ``KeyError`` listing the valid names for an unknown surrogate, mask or schedule."""
    if surrogate not in SURROGATES:
        raise unknown_name_error("surrogate", surrogate, SURROGATES)
    if mask is not None and mask not in MASKS:
        raise unknown_name_error("mask", mask, MASKS)
    if lr_schedule not in LR_SCHEDULES:
        raise unknown_name_error("lr_schedule", lr_schedule, LR_SCHEDULES)


@dataclass(frozen=True)
class Surrogate:
    """What a gradient attack differentiates: ``forward(x, base + direction * s)``.

    Attributes:
        name: ``model``, ``drop`` or ``freeze``.
        base: ``(N, N)`` adjacency the relaxed flips are added to (the clean one, or the frozen
            pre-processing of it).
        direction: ``(N, N)`` signed weight of each pair's flip: ``+1`` inserts, ``-1`` deletes,
            times the edge-difference mask; zero diagonal.
        forward: ``(x, adj) -> (N, C)`` logits that are differentiated.
    """

    name: str
    base: torch.Tensor
    direction: torch.Tensor
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def perturbed(self, s: torch.Tensor) -> torch.Tensor:
        """``base + direction * s`` for relaxed (or binary) symmetric flips ``s`` ``(N, N)``."""
        return torch.addcmul(self.base, self.direction, s)

    def logits(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.forward(x, self.perturbed(s))


def build_surrogate(model, x: torch.Tensor, adj: torch.Tensor, name: str = "model", mask: str | None = None,
                    mask_rank: int | None = None) -> Surrogate:
    """The surrogate ``name`` of ``model`` around the clean dense adjacency ``adj`` ``(N, N)``."""
    check_adaptive(name, mask, "sqrt")
    direction = 1 - 2 * adj
    direction.fill_diagonal_(0)
    if mask is not None:
        direction = direction * MASKS[mask](model, adj, mask_rank)
    split = hasattr(model, "dense_preprocess") and hasattr(model, "dense_classifier")
    if name == "alter":
        altered = altered_model(model)
        return Surrogate(name, adj, direction, lambda x_, a_: dense_logits(altered, x_, a_))
    if name == "model" or not split:
        return Surrogate(name, adj, direction, lambda x_, a_: dense_logits(model, x_, a_))
    if name == "drop":
        return Surrogate(name, adj, direction, model.dense_classifier)
    with torch.no_grad():
        base = model.dense_preprocess(x, adj).detach()
    return Surrogate(name, base, direction, model.dense_classifier)


def altered_model(model):
    """A copy of ``model`` with its class's ``attack_alterations`` (attribute -> value) applied; ``model`` if none."""
    changes = dict(getattr(model, "attack_alterations", None) or {})
    if not changes:
        return model
    altered = copy.deepcopy(model).eval()
    for name, value in changes.items():
        if not hasattr(altered, name):
            raise AttributeError(f"attack_alterations of {type(model).__name__}: expected an attribute {name!r}, got none")
        setattr(altered, name, value)
    return altered


def init_flips(model, graph: GraphDataset, attack: str, budget_edge_fraction: float, seed: int) -> torch.Tensor:
    """``(2, K)`` pairs ``i < j`` flipped by the registered global attack ``attack`` on ``model``."""
    entry = get_attack(attack)
    if getattr(entry.cls, "targeted", False):
        raise ValueError(f"init: expected a global structure attack, got the targeted attack {attack!r}")
    res = create_attack(attack, model, budget_edge_fraction=budget_edge_fraction)(graph, seed=seed)
    return torch.cat([res.insertions, res.deletions], 1)
