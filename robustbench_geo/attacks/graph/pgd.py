"""PGD topology attack (Xu et al. 2019, "Topology Attack and Defense for Graph Neural Networks").

Evasion: relax the flips to ``s`` in ``[0, 1]`` per node pair, ``A' = A + (1 - 2A) * s``, ascend the
attack loss (``prob_margin`` by default: the margin of the softmax probabilities, which we found
clearly stronger than the paper's ``ce`` and ``cw`` on Cora; all are available) on the attacked nodes
(test nodes, labelled with the model's own predictions as in the paper) with step ``lr / sqrt(t + 1)``,
project onto ``{0 <= s <= 1, sum s <= budget}`` (bisection), then draw ``samples`` Bernoulli(s)
perturbations and keep the best one within the budget, judged on the binary graph (``select``:
``accuracy``, the default, keeps the sample that misclassifies the most attacked nodes w.r.t. their true
labels, as Xu et al.'s code does; ``loss``, the attack loss; ``changed``, the number of attacked nodes
whose prediction changed). With ``refine_steps=0`` and ``select="accuracy"`` that is the paper's attack.

The relaxed optimum is diffuse (on Cora at 5 % no entry of ``s`` exceeds 0.9 and the mass spreads over
~20k pairs), so the sample is a rough draw from it. By default ``refine_steps`` first-order swap steps
then improve the chosen sample on the binary graph: the gradient of ``refine_loss`` at the binary
perturbation ranks the flips to undo (lowest gain) and the pairs to flip instead (highest gain, also
filling unused budget; never a deletion that leaves a node without edges). A swap is kept only when
it improves the ``select`` objective, so refinement never weakens the sample; rejected candidates are
not proposed again and the swap size halves (it doubles after a success, from 16 at most). Measured
on Cora (GCN, 5 %): selecting by loss beat selecting by changed predictions, because many changed
predictions are nodes the model already got wrong (see ``benchmarks/graph_fidelity.py``).

Adaptive options (Mujkanovic et al. 2022; :mod:`~robustbench_geo.attacks.graph.adaptive`): ``surrogate``
(differentiate the model, or the model with its pre-processing dropped or frozen), ``mask`` (the
eigenspace-alignment edge-difference mask for low-rank defenses), ``lr_schedule``, ``restarts``,
``init`` / ``init_flips`` (start from another attack's perturbation, which stays a candidate) and
``labels`` (the loss against predicted or true labels). Samples and swaps are always judged by the
real model's sparse forward, whatever is differentiated.

Cost: every step differentiates the model's dense path (``dense_forward``) on an ``N x N``
adjacency; samples and swaps are judged by the model's own sparse ``forward``. On the Cora LCC
(2485 nodes, GCN, one thread) an attack with the defaults takes about 28 s (``benchmarks/graph_speed.py``).
"""

from __future__ import annotations

import math
import time

import torch

from robustbench_geo.attacks.base import get_attack, register_attack
from robustbench_geo.attacks.graph.adaptive import LR_SCHEDULES, build_surrogate, check_adaptive
from robustbench_geo.attacks.graph.adaptive import init_flips as adaptive_init
from robustbench_geo.check import unknown_name_error
from robustbench_geo.attacks.graph.base import (
    GraphAttack, GraphPerturbation, apply_flips, check_dense_memory, degrees, edge_budget, finalize, flipped_degrees,
    ids_to_pairs, left_isolated, pair_ids, upper_pairs,
)
from robustbench_geo.attacks.graph.dense import dense_matrices, get_loss, symmetrize
from robustbench_geo.data.base import GraphDataset


def budget_shift(s: torch.Tensor, budget: float, iters: int = 40, hint: float | None = None) -> float:
    """The shift ``mu >= 0`` with ``sum(clamp(s - mu, 0, 1)) <= budget``, tight within ``iters`` bisections.

    Assumes ``sum(clamp(s, 0, 1)) > budget``; stops early once the bracket is below float32
    resolution. Entries that contribute 0 (``<= lo``) or exactly 1 (``>= hi + 1``) for every
    remaining shift are dropped as the bracket closes, so later steps touch only the entries near
    the threshold. ``hint`` (e.g. the previous PGD step's shift)
    brackets the root first, probing outward from it (x0.9, x0.5, x0.1, ... or x1.1, x2, x10, ...):
    on a PGD step the shift moves little, so two passes over ``s`` usually leave a short list.
    """
    v = s.reshape(-1)
    lo, hi, ones = 0.0, float(v.max()), 0

    def probe(mu):
        nonlocal v, lo, hi, ones
        if ones + float((v - mu).clamp_(0, 1).sum()) > budget:
            lo = mu
            v = v[v > lo]
        else:
            hi = mu
            if v.numel() <= 1 << 20:  # on the full matrix the bookkeeping costs more than it saves
                big = v >= hi + 1
                if bool(big.any()):
                    ones += int(big.sum())
                    v = v[~big]

    if hint is not None and lo < hint < hi:
        probe(hint)
        factors = (0.9, 0.5, 0.1, 1e-2, 1e-4, 1e-8) if hi == hint else (1.1, 2.0, 10.0, 1e2, 1e4, 1e8)
        for f in factors:
            mu = hint * f
            if not lo < mu < hi:
                break
            probe(mu)
            if (hi == mu) != (f < 1):  # crossed the root
                break
    if lo == 0.0:
        v = v[v > 0]
    for _ in range(iters):
        if hi - lo <= 1e-7 * hi:  # float32 cannot resolve a finer shift
            break
        probe((lo + hi) / 2)
    return hi


def project_budget_(s: torch.Tensor, budget: float, iters: int = 40, hint: float | None = None) -> float | None:
    """In-place Euclidean projection of ``s`` onto ``{0 <= s <= 1, sum(s) <= budget}``.

    Returns the shift of :func:`budget_shift` (``hint`` is passed on), or ``None`` when clipping
    to ``[0, 1]`` already meets the budget.
    """
    if float(s.clamp(0, 1).sum()) <= budget:
        s.clamp_(0, 1)
        return None
    shift = budget_shift(s, budget, iters, hint)
    s.sub_(shift).clamp_(0, 1)
    return shift


def project_budget(s: torch.Tensor, budget: float, iters: int = 40) -> torch.Tensor:
    """Euclidean projection of ``s`` onto ``{0 <= s <= 1, sum(s) <= budget}`` (bisection on the shift)."""
    out = s.clone()
    project_budget_(out, budget, iters)
    return out


#: objectives that choose among samples and swaps (see ``PGDAttack.param_docs``)
SELECT = ("loss", "changed", "accuracy")
#: labels the attack loss is computed against
LABELS = ("predicted", "true")


@register_attack("pgd", domain="graph")
class PGDAttack(GraphAttack):
    """PGD topology attack (Xu et al. 2019): evasion, relaxation + random sampling, then swap refinement."""

    param_docs = {
        "budget_edge_fraction": "flips as a fraction of the clean graph's edges",
        "loss": "prob_margin (softmax margin, strongest here), ce (cross-entropy), cw (Carlini-Wagner margin), "
                "tanh_margin or mce (cross-entropy on still-correct nodes)",
        "steps": "projected gradient steps",
        "lr": "step size at step 0 (decays as 1/sqrt(t+1)); None = 0.1 * budget for cw, else 200",
        "samples": "Bernoulli samples drawn from the relaxed perturbation (the best one by the attack objective is kept)",
        "refine_steps": "first-order swap steps on the discrete sample (0 = the paper's attack)",
        "refine_loss": "loss whose gradient ranks the swaps; None = loss",
        "select": "what a sample or swap must improve: loss (the attack loss on the binary graph), changed "
                  "(attacked nodes whose prediction changed, ties by refine_loss) or accuracy (attacked nodes "
                  "misclassified w.r.t. the TRUE labels, ties by loss: the evaluator's choice that Xu et al.'s code "
                  "makes among its samples)",
        "max_memory_gb": "refuse graphs whose dense matrices need more (GiB)",
        "surrogate": "what is differentiated (adaptive attacks): model (its own dense forward), drop (the defense's "
                     "pre-processing dropped), freeze (pre-processing applied once to the clean graph) or alter (a copy with "
                     "the model's attack_alterations, e.g. GNNGuard's div_limit); candidates are always judged on the "
                     "real model",
        "mask": "edge-difference mask weighting each flip in the surrogate: None or eigenspace (low-rank defenses)",
        "mask_rank": "rank of the eigenspace mask; None = the model's rank",
        "lr_schedule": "learning-rate factor per step: sqrt (1/sqrt(t+1)), constant or cosine",
        "restarts": "relaxations optimised (the first from init or zero, the others from random points); the best "
                    "sample over all of them is refined",
        "init": "name of a global attack whose perturbation starts the first relaxation (and is a candidate itself)",
        "labels": "labels the loss attacks: predicted (the clean model's predictions, Xu et al.) or true (Mujkanovic et al.)",
    }

    def __init__(self, model, *, budget_edge_fraction: float = 0.05, loss: str = "prob_margin", steps: int = 100,
                 lr: float | None = None, samples: int = 20, refine_steps: int = 100, refine_loss: str | None = None,
                 select: str = "accuracy", max_memory_gb: float = 8.0, surrogate: str = "model", mask: str | None = None,
                 mask_rank: int | None = None, lr_schedule: str = "sqrt", restarts: int = 1, init: str | None = None,
                 labels: str = "predicted"):
        super().__init__(model)
        if select not in SELECT:
            raise unknown_name_error("select", select, SELECT)
        check_adaptive(surrogate, mask, lr_schedule)
        if labels not in LABELS:
            raise unknown_name_error("labels", labels, LABELS)
        if restarts < 1:
            raise ValueError(f"restarts: expected at least one relaxation, got {restarts}")
        if init is not None:
            get_attack(init)
        self.surrogate, self.mask, self.mask_rank, self.lr_schedule = surrogate, mask, mask_rank, lr_schedule
        self.restarts, self.init, self.labels = restarts, init, labels
        self.select = select
        get_loss(loss)
        refine_loss = loss if refine_loss is None else refine_loss
        get_loss(refine_loss)
        if steps < 1 or samples < 1 or refine_steps < 0:
            raise ValueError(f"steps, samples, refine_steps: expected positive counts (refine_steps >= 0), "
                             f"got {steps}, {samples}, {refine_steps}")
        self.budget_edge_fraction, self.loss, self.steps, self.lr = budget_edge_fraction, loss, steps, lr
        self.samples, self.refine_steps, self.refine_loss, self.max_memory_gb = samples, refine_steps, refine_loss, max_memory_gb

    def __call__(self, graph: GraphDataset, *, seed: int = 0, nodes: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None, init_flips: torch.Tensor | None = None) -> GraphPerturbation:
        """Attack ``graph``; ``init_flips`` ``(2, K)`` (pairs ``i < j``) start the first relaxation (overrides ``init``)."""
        budget = edge_budget(graph, self.budget_edge_fraction)
        n = graph.num_nodes
        mem = check_dense_memory("pgd", n, 9 + dense_matrices(self.model), self.max_memory_gb)
        t0 = time.perf_counter()
        model = self.model.eval()
        dev = next(iter(model.parameters())).device
        on_dev = graph.to(dev)
        x, a = on_dev.x, on_dev.dense_adjacency()
        nodes = (graph.idx_test if nodes is None else nodes).to(dev)
        flips = _Flips(on_dev)
        with torch.no_grad():
            if labels is None:
                labels = on_dev.y[nodes] if self.labels == "true" else model(x, on_dev.edge_index)[nodes].argmax(1)
        labels = labels.to(dev)
        loss_fn = get_loss(self.loss)
        sur = build_surrogate(model, x, a, self.surrogate, self.mask, self.mask_rank)
        if init_flips is None and self.init is not None and budget > 0:
            init_flips = adaptive_init(model, graph, self.init, self.budget_edge_fraction, seed)

        tie_loss = get_loss(self.refine_loss) if self.refine_steps and self.select == "changed" else loss_fn
        truth = graph.y.to(dev)[nodes] if self.select == "accuracy" else None

        @torch.no_grad()
        def objective(ids):
            """The ``select`` objective of the flipped pairs ``ids``, as a tuple compared lexicographically.

            Evaluated by the real model's own sparse forward pass on the binary graph.
            """
            logits = model(x, flips.edge_index(ids))[nodes]
            changed, value = int((logits.argmax(1) != labels).sum()), float(tie_loss(logits, labels))
            if truth is not None:  # misclassified w.r.t. the true labels, then the attack loss
                return (int((logits.argmax(1) != truth).sum()), value, changed)
            return (changed, value) if self.select == "changed" else (value, changed)

        g = torch.Generator().manual_seed(seed)
        ids, best, drawn, best_restart, relaxed = None, None, 0, -1, None
        for r in range(self.restarts if budget > 0 else 0):
            s = torch.zeros(n, n, device=dev)
            if r == 0 and init_flips is not None and init_flips.numel():
                p = init_flips.to(dev)
                s[p[0], p[1]] = s[p[1], p[0]] = 1.0
            elif r > 0:  # a random point of the feasible set
                s = torch.rand(n, n, generator=g).to(dev).triu_(1)
                s = s + s.T
                project_budget_(s, 2 * budget)
            self._relax(sur, x, s, nodes, labels, loss_fn, budget)
            cand, obj, k = self._sample(s, n, budget, objective, seed + 7919 * r)
            drawn += k
            if r == 0 and init_flips is not None and init_flips.numel():  # the init itself is a candidate
                init_ids = pair_ids(init_flips.to(dev), n)
                init_obj = objective(init_ids)
                if init_obj > obj:
                    cand, obj = init_ids, init_obj
            if best is None or obj > best:
                ids, best, best_restart, relaxed = cand, obj, r, s
            del s
        if ids is None:  # zero budget
            ids, relaxed = torch.zeros(0, dtype=torch.long, device=dev), torch.zeros(n, n, device=dev)
            best = objective(ids)
        iso = flips.isolated(ids)
        if iso.any():  # undo the deletions that left a node without edges (finalize would drop them)
            i, j = ids // n, ids % n
            ids = ids[~(flips.is_deletion(ids) & (iso[i] | iso[j]))]
            best = objective(ids)
        sampled = best
        refine = {"accepted": 0, "tried": 0}
        if self.refine_steps and budget > 0:
            ids, best = self._refine(sur, x, flips, ids, best, budget, nodes, labels, objective, refine)
        pairs = torch.stack([ids // n, ids % n])
        pairs = pairs[:, torch.argsort(relaxed[pairs[0], pairs[1]], descending=True, stable=True)]  # highest relaxed mass first
        named = {"changed": lambda o: o, "loss": lambda o: (o[1], o[0]), "accuracy": lambda o: (o[2], o[1])}[self.select]
        work = {"steps": self.steps, "restarts": self.restarts, "best_restart": best_restart,
                "gradient_evaluations": (self.steps * self.restarts + refine["tried"]) if budget else 0,
                "samples": drawn, "relaxed_mass": float(relaxed.sum()) / 2, "select": self.select,
                "surrogate": self.surrogate, "mask": self.mask, "lr_schedule": self.lr_schedule, "init": self.init,
                "labels": self.labels,
                "sample_changed_predictions": named(sampled)[0], "sample_loss": named(sampled)[1],
                "refine_steps": refine["tried"], "refine_accepted": refine["accepted"],
                "changed_predictions": named(best)[0], "loss": named(best)[1], "dense_memory_gib": mem,
                "misclassified_true": best[0] if truth is not None else None,
                "seconds": time.perf_counter() - t0}
        return finalize(graph.to("cpu"), pairs.cpu(), budget, work=work)

    def _relax(self, sur, x, s, nodes, labels, loss_fn, budget) -> None:
        """``steps`` projected gradient-ascent steps on the relaxed flips ``s`` (in place) through the surrogate."""
        lr0 = self.lr if self.lr is not None else (200.0 if self.loss == "ce" else 0.1 * budget)
        factor = LR_SCHEDULES[self.lr_schedule]
        # s is kept symmetric (zero diagonal): s_ij = s_ji is the relaxed flip of pair {i, j}, so the
        # perturbed adjacency is base + direction * s without a transpose, and the gradient of pair
        # {i, j} is direction_ij (G_ij + G_ji) for G = dL/dA'. Its budget counts every pair twice.
        shift = None
        for t in range(self.steps):
            with torch.no_grad():
                p = sur.perturbed(s).requires_grad_(True)
            loss = loss_fn(sur.forward(x, p)[nodes], labels)
            (grad,) = torch.autograd.grad(loss, p)
            with torch.no_grad():
                s.add_(symmetrize(grad).mul_(sur.direction), alpha=lr0 * factor(t, self.steps))
                new_shift = project_budget_(s, 2 * budget, hint=shift)
                shift = shift if new_shift is None else new_shift
            del p, grad

    @torch.no_grad()
    def _sample(self, s, n, budget, objective, seed):
        """Best of ``samples`` Bernoulli(s) draws within the budget: ``(pair ids, objective, drawn)``."""
        iu = torch.nonzero(torch.triu(s, 1) > 0)
        p = s[iu[:, 0], iu[:, 1]]
        cand = iu[:, 0] * n + iu[:, 1]
        g = torch.Generator().manual_seed(seed)
        best_ids, best, drawn = None, (-float("inf"), -float("inf")), 0
        for _ in range(self.samples if budget > 0 else 0):
            pick = torch.rand(p.shape[0], generator=g).to(p.device) < p
            drawn += 1
            if int(pick.sum()) > budget:
                continue
            obj = objective(cand[pick])
            if obj > best:
                best_ids, best = cand[pick], obj
        if best_ids is None:  # no sample within budget: the most likely flips
            best_ids = cand[torch.argsort(p, descending=True)[:budget]]
            best = objective(best_ids)
        return best_ids, best, drawn

    def _refine(self, sur, x, flips, ids, best, budget, nodes, labels, objective, record):
        """First-order swap search on the flipped pairs ``ids`` (objective ``best``); keeps only improvements.

        Swaps are ranked by the surrogate's gradient and judged by ``objective`` (the real model).
        """
        grad_loss = get_loss(self.refine_loss)
        n = sur.base.shape[0]
        tabu_add = ids.new_zeros(0)
        tabu_rem = ids.new_zeros(0)
        k = 16
        for _ in range(self.refine_steps):
            i, j = ids // n, ids % n
            with torch.no_grad():
                s = torch.zeros_like(sur.base)
                s[i, j] = s[j, i] = 1.0
                p = sur.perturbed(s)
                del s
            p.requires_grad_(True)
            (g,) = torch.autograd.grad(grad_loss(sur.forward(x, p)[nodes], labels), p)
            with torch.no_grad():
                gain = symmetrize(g).mul_(sur.direction)  # symmetric: first-order gain of toggling each pair
                del p, g
                # the lowest-gain flips to undo
                rem_ok = ~torch.isin(ids, tabu_rem)
                k_rem = min(k, int(rem_ok.sum()))
                order = torch.argsort(gain[i, j].masked_fill(~rem_ok, float("inf")))
                rem = ids[order[:k_rem]]
                # the highest-gain pairs to flip instead: not flipped, not tabu, no new deletion that
                # leaves a node without edges
                banned = torch.cat([ids, tabu_add, flips.isolating_deletions(ids)])
                gain.view(-1)[torch.cat([banned, (banned % n) * n + banned // n])] = -float("inf")
                gain.fill_diagonal_(-float("inf"))
                k_add = k_rem + budget - int(ids.numel())
                add = _top_pairs(gain, k_add) if k_add > 0 else ids.new_zeros(0)
                del gain
                if add.numel() == 0:
                    break
                cand = torch.cat([ids[~torch.isin(ids, rem)], add])
                record["tried"] += 1
                obj = None if flips.isolated(cand).any() else objective(cand)
                if obj is not None and obj > best:
                    ids, best, k = cand, obj, min(16, 2 * k)
                    record["accepted"] += 1
                else:
                    tabu_add = torch.cat([tabu_add, add])
                    tabu_rem = torch.cat([tabu_rem, rem])
                    k = max(1, k // 2)
        return ids, best


def _top_pairs(gain: torch.Tensor, k: int) -> torch.Tensor:
    """Ids ``i * N + j`` (``i < j``) of the ``k`` highest finite entries of a symmetric ``(N, N)`` matrix.

    The ``2k``-th largest row maximum bounds the ``2k``-th largest entry from below, so one pass
    for the row maxima and one for the threshold leave a short list to sort (cheaper than a top-k
    over all ``N^2`` entries). Every pair appears twice; the upper copy is kept.
    """
    n = gain.shape[0]
    rowmax = gain.max(1).values
    rowmax = rowmax[torch.isfinite(rowmax)]
    if rowmax.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=gain.device)
    thr = torch.topk(rowmax, 2 * k).values[-1] if rowmax.numel() >= 2 * k else -float("inf")
    idx = torch.nonzero((gain >= thr).triu_(1).view(-1)).view(-1)
    vals = gain.view(-1)[idx]
    keep = torch.isfinite(vals)
    idx, vals = idx[keep], vals[keep]
    return idx[torch.argsort(vals, descending=True)[:k]]


class _Flips:
    """Binary perturbations as sorted pair ids ``i * N + j`` (``i < j``) relative to a clean graph."""

    def __init__(self, graph: GraphDataset):
        self.n = graph.num_nodes
        self.clean_edge_index = graph.edge_index
        self.clean = torch.sort(pair_ids(upper_pairs(graph.edge_index), self.n)).values
        self.degree = degrees(graph.edge_index, self.n)

    def is_deletion(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.isin(ids, self.clean)

    def edge_index(self, ids: torch.Tensor) -> torch.Tensor:
        """``(2, E')`` symmetric edges of the clean graph with the pairs ``ids`` flipped."""
        return apply_flips(self.clean_edge_index, ids_to_pairs(ids, self.n), self.n)

    def degrees(self, ids: torch.Tensor) -> torch.Tensor:
        return flipped_degrees(self.degree, ids_to_pairs(ids, self.n), self.is_deletion(ids))

    def isolated(self, ids: torch.Tensor) -> torch.Tensor:
        """``(N,)`` bool: nodes with edges in the clean graph and none after flipping ``ids`` (:func:`left_isolated`,
        the rule :func:`finalize` applies, so a flip set PGD accepts is returned whole)."""
        return left_isolated(self.degree, self.degrees(ids))

    def isolating_deletions(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids of the clean edges still present whose deletion would leave an endpoint without edges."""
        low = self.degrees(ids) <= 1
        present = self.clean[~torch.isin(self.clean, ids)]
        return present[low[present // self.n] | low[present % self.n]]
