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

:func:`evaluate_fewshot_attack` runs one of them over a batch of episodes, re-verifies every
result with its own forward pass and returns an :class:`~robustbench_geo.attacks.base.AttackOutcome`
like every other cell.
"""

from __future__ import annotations

import inspect
import time

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from robustbench_geo.attacks.base import AttackOutcome, check_params, create_attack, get_attack
from robustbench_geo.attacks.image.core import margin_loss
from robustbench_geo.data.omniglot import Episodes
from robustbench_geo.evaluation import model_device

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


def _episode_logits(model, query, support, labels, mask=None):
    model.eval()
    with torch.inference_mode():
        return model.episode(query, support, labels, mask)


def evaluate_fewshot_attack(model: nn.Module, episodes: Episodes, attack: str, params: dict | None = None, *,
                            target: str = "query", seed: int = 0, progress: bool = True) -> AttackOutcome:
    """Attack every episode and summarise (metrics as the image runner: clean/robust accuracy, success rate).

    Args:
        model: a few-shot model with ``episode(query, support, support_labels, edge_mask=None)``.
        episodes: the episodes (one query each).
        attack: a registered image attack (with ``target``) or ``"adjacency"``.
        params: attack parameters; target: ``query`` or ``support`` (image attacks only).
    """
    from robustbench_geo.checkpoint import versions

    params = dict(params or {})
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {', '.join(TARGETS)}, got {target!r}")
    if attack == "adjacency":
        atk_params = {k: v for k, v in {"max_edges": 1, "scope": "query", **params}.items()}
        unknown = sorted(set(atk_params) - {"max_edges", "scope"})
        if unknown:
            raise ValueError(f"attack 'adjacency': unknown parameter(s) {unknown}; valid parameters: max_edges, scope")
        filled = atk_params
    else:
        entry = get_attack(attack)
        if entry.domain != "image":
            raise ValueError(f"attack {attack!r} is a {entry.domain} attack; few-shot episodes take image attacks or 'adjacency'")
        params = check_params(entry, params)
        if "seed" in entry.params:
            params["seed"] = seed
        filled = {k: v for k, v in entry.params.items() if v is not inspect.Parameter.empty}
        filled.update(params)
    model.eval()
    dev = model_device(model)
    k_shot = int((episodes.support_labels[0] == 0).sum())
    rows, fw, mismatches, t0 = [], 0, 0, time.perf_counter()
    correct_all, robust_all = [], []
    for e in tqdm(range(len(episodes)), desc=f"{attack} ({target})", disable=not progress, unit="episode"):
        q, s, lab = episodes.query[e:e + 1].to(dev), episodes.support[e].to(dev), episodes.support_labels[e].to(dev)
        y = episodes.query_labels[e:e + 1].to(dev)
        clean = _episode_logits(model, q, s[None], lab[None]).argmax(1)
        row = {"episode": e, "label": int(y), "clean_pred": int(clean)}
        if attack == "adjacency":
            res = AdjacencyAttack(model, **atk_params)(q, s[None], lab[None], y)
            adv_pred = _episode_logits(model, q, s[None], lab[None], res["mask"][None]).argmax(1)
            claimed, fw = res["success"], fw + res["forward_passes"]
            row["deleted_edges"] = res["deleted"]
        else:
            slot = int(y) * k_shot
            view = SupportView(model, q[0], s, lab, slot) if target == "support" else None
            if view is None:
                model.set_support(s, lab)
            try:
                atk = create_attack(attack, view if view is not None else model, **params)
                x = s[slot:slot + 1] if target == "support" else q
                res = atk(x, y)
            finally:
                model.set_support(None)
            if target == "support":
                s_adv = s.clone()
                s_adv[slot] = res.adversarial[0]
                adv_pred = _episode_logits(model, q, s_adv[None], lab[None]).argmax(1)
            else:
                adv_pred = _episode_logits(model, res.adversarial, s[None], lab[None]).argmax(1)
            claimed, fw = bool(res.success[0]), fw + res.forward_passes
            row.update({k: v for k, v in res.flat_params()[0].items()})
        fooled = bool(adv_pred.item() != y.item())
        mismatches += int(claimed != fooled)
        ok = bool(clean.item() == y.item())
        correct_all.append(ok)
        robust_all.append(ok and not fooled)
        row.update({"adv_pred": int(adv_pred), "success": ok and fooled})
        rows.append(row)
    n = len(episodes)
    n_correct = sum(correct_all)
    metrics = {"clean_accuracy": n_correct / n if n else 0.0, "robust_accuracy": sum(robust_all) / n if n else 0.0,
               "success_rate": sum(r["success"] for r in rows) / n_correct if n_correct else 0.0,
               "forward_passes": float(fw), "verification_mismatches": float(mismatches), "n": float(n)}
    config = {"attack": attack, "target": target if attack != "adjacency" else "adjacency", "params": filled,
              "seed": seed, "episodes": n, "n_way": int(episodes.support_labels.max()) + 1, "k_shot": k_shot,
              "versions": versions()}
    return AttackOutcome(attack=attack, params=filled, seed=seed, metrics=metrics, rows=rows,
                         seconds=time.perf_counter() - t0, config=config)
