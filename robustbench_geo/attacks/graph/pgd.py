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
adjacency; samples and swaps are judged by the model's own sparse ``forward``. A model without
``dense_forward`` (a user's PyG model, GAT, GIN) is never run on all ``N^2`` pairs: the relaxation
lives on the clean edges plus a resampled block of ``block_size`` other pairs
(:mod:`~robustbench_geo.attacks.graph.block`), and each swap step ranks the clean edges plus a fresh
random block; ``mask`` needs a dense model. On the Cora LCC
(2485 nodes, GCN, one thread) an attack with the defaults takes about 28 s (``benchmarks/graph_speed.py``).
"""

from __future__ import annotations

import time

import torch

from robustbench_geo.attacks.base import get_attack, register_attack
from robustbench_geo.attacks.graph.adaptive import LR_SCHEDULES, altered_model, build_surrogate, check_adaptive
from robustbench_geo.attacks.graph.adaptive import init_flips as adaptive_init
from robustbench_geo.attacks.graph.base import (
    GraphAttack, GraphPerturbation, check_dense_memory, edge_budget, finalize, pair_ids,
)
from robustbench_geo.attacks.graph.block import BlockRelaxation
from robustbench_geo.attacks.graph.dense import dense_matrices, get_loss
from robustbench_geo.attacks.graph.relax import DenseRelaxation, Flips
from robustbench_geo.check import unknown_name_error
from robustbench_geo.data.base import GraphDataset

#: objectives that choose among samples and swaps (see ``PGDAttack.param_docs``)
SELECT = ("loss", "changed", "accuracy")
#: labels the attack loss is computed against
LABELS = ("predicted", "true")


def dense_matrix_count(model) -> float:
    """``N x N`` float matrices PGD's dense path holds for ``model`` (relaxation, gradient, projection, the model's)."""
    return 9 + dense_matrices(model)


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
        "block_size": "models without dense_forward: node pairs besides the clean edges in the relaxation (resampled "
                      "during the first 80 % of the steps, see attacks/graph/block.py); dense models relax every pair",
    }

    def __init__(self, model, *, budget_edge_fraction: float = 0.05, loss: str = "prob_margin", steps: int = 100,
                 lr: float | None = None, samples: int = 20, refine_steps: int = 100, refine_loss: str | None = None,
                 select: str = "accuracy", max_memory_gb: float = 8.0, surrogate: str = "model", mask: str | None = None,
                 mask_rank: int | None = None, lr_schedule: str = "sqrt", restarts: int = 1, init: str | None = None,
                 labels: str = "predicted", block_size: int = 50_000):
        super().__init__(model)
        if block_size < 1:
            raise ValueError(f"block_size: expected a positive count of node pairs, got {block_size}")
        self.block_size = block_size
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
        dense = hasattr(self.model, "dense_forward")
        if not dense and self.mask is not None:
            raise ValueError(f"mask={self.mask!r}: expected a model with dense_forward (the mask weights every "
                             f"node pair), got {type(self.model).__name__} without one")
        mem = check_dense_memory("pgd", n, dense_matrix_count(self.model), self.max_memory_gb) if dense else 0.0
        t0 = time.perf_counter()
        model = self.model.eval()
        dev = next(iter(model.parameters())).device
        on_dev = graph.to(dev)
        x = on_dev.x
        nodes = (graph.idx_test if nodes is None else nodes).to(dev)
        flips = Flips(on_dev)
        with torch.no_grad():
            if labels is None:
                labels = on_dev.y[nodes] if self.labels == "true" else model(x, on_dev.edge_index)[nodes].argmax(1)
        labels = labels.to(dev)
        loss_fn = get_loss(self.loss)
        if dense:
            sur = build_surrogate(model, x, on_dev.dense_adjacency(), self.surrogate, self.mask, self.mask_rank)
            relax = DenseRelaxation(sur, x, nodes, labels, budget)
        else:  # drop and freeze need a pre-processing split, which only dense models declare: the model itself
            forward = altered_model(model) if self.surrogate == "alter" else model
            resample = self.steps - max(self.steps // 5, 1)
            relax = BlockRelaxation(forward, x, on_dev.edge_index, nodes, labels, budget, self.block_size, resample,
                                    seed)
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
        has_init = init_flips is not None and init_flips.numel() > 0
        ids, best, drawn, best_restart = None, None, 0, -1
        relaxed = (torch.zeros(0, dtype=torch.long, device=dev), torch.zeros(0, device=dev))
        for r in range(self.restarts if budget > 0 else 0):
            relax.start(pair_ids(init_flips.to(dev), n) if r == 0 and has_init else None, r > 0, g)
            self._relax(relax, loss_fn, budget)
            cand_ids, p = relax.candidates()
            cand, obj, k = self._sample(cand_ids, p, budget, objective, seed + 7919 * r)
            drawn += k
            if r == 0 and has_init:  # the init itself is a candidate
                init_ids = pair_ids(init_flips.to(dev), n)
                init_obj = objective(init_ids)
                if init_obj > obj:
                    cand, obj = init_ids, init_obj
            if best is None or obj > best:
                ids, best, best_restart, relaxed = cand, obj, r, (cand_ids, p)
        if ids is None:  # zero budget
            ids = torch.zeros(0, dtype=torch.long, device=dev)
            best = objective(ids)
        iso = flips.isolated(ids)
        if iso.any():  # undo the deletions that left a node without edges (finalize would drop them)
            i, j = ids // n, ids % n
            ids = ids[~(flips.is_deletion(ids) & (iso[i] | iso[j]))]
            best = objective(ids)
        sampled = best
        refine = {"accepted": 0, "tried": 0}
        if self.refine_steps and budget > 0:
            ids, best = self._refine(relax, flips, ids, best, budget, objective, refine)
        mass = torch.zeros(ids.numel(), device=dev)
        if relaxed[0].numel() and ids.numel():
            pos = torch.searchsorted(relaxed[0], ids).clamp_max(relaxed[0].numel() - 1)
            mass = torch.where(relaxed[0][pos] == ids, relaxed[1][pos], mass)
        ids = ids[torch.argsort(mass, descending=True, stable=True)]  # highest relaxed mass first
        pairs = torch.stack([ids // n, ids % n])
        named = {"changed": lambda o: o, "loss": lambda o: (o[1], o[0]), "accuracy": lambda o: (o[2], o[1])}[self.select]
        work = {"steps": self.steps, "restarts": self.restarts, "best_restart": best_restart,
                "gradient_evaluations": (self.steps * self.restarts + refine["tried"]) if budget else 0,
                "samples": drawn, "relaxed_mass": float(relaxed[1].sum()), "select": self.select,
                "surrogate": self.surrogate, "mask": self.mask, "lr_schedule": self.lr_schedule, "init": self.init,
                "labels": self.labels,
                "sample_changed_predictions": named(sampled)[0], "sample_loss": named(sampled)[1],
                "refine_steps": refine["tried"], "refine_accepted": refine["accepted"],
                "changed_predictions": named(best)[0], "loss": named(best)[1], "dense_memory_gib": mem,
                "misclassified_true": best[0] if truth is not None else None,
                "relaxation": "dense" if dense else "block",
                "forward_edges": 0 if dense else relax.forward_edges,
                "seconds": time.perf_counter() - t0}
        return finalize(graph.to("cpu"), pairs.cpu(), budget, work=work)

    def _relax(self, relax, loss_fn, budget) -> None:
        """``steps`` projected gradient-ascent steps on the relaxation ``relax`` (in place)."""
        lr0 = self.lr if self.lr is not None else (200.0 if self.loss == "ce" else 0.1 * budget)
        factor = LR_SCHEDULES[self.lr_schedule]
        for t in range(self.steps):
            relax.step(loss_fn, lr0 * factor(t, self.steps), t)

    @torch.no_grad()
    def _sample(self, cand, p, budget, objective, seed):
        """Best of ``samples`` Bernoulli(p) draws over the pairs ``cand`` within the budget: ``(pair ids, objective, drawn)``."""
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

    def _refine(self, relax, flips, ids, best, budget, objective, record):
        """First-order swap search on the flipped pairs ``ids`` (objective ``best``); keeps only improvements.

        Swaps are ranked by the relaxation's gradient (the surrogate's) and judged by ``objective`` (the real model).
        """
        grad_loss = get_loss(self.refine_loss)
        tabu_add = ids.new_zeros(0)
        tabu_rem = ids.new_zeros(0)
        k = 16
        for _ in range(self.refine_steps):
            own, rank = relax.swap_gains(ids, grad_loss)
            with torch.no_grad():
                # the lowest-gain flips to undo
                rem_ok = ~torch.isin(ids, tabu_rem)
                k_rem = min(k, int(rem_ok.sum()))
                order = torch.argsort(own.masked_fill(~rem_ok, float("inf")))
                rem = ids[order[:k_rem]]
                # the highest-gain pairs to flip instead: not flipped, not tabu, no new deletion that
                # leaves a node without edges
                banned = torch.cat([ids, tabu_add, flips.isolating_deletions(ids)])
                k_add = k_rem + budget - int(ids.numel())
                add = rank(k_add, banned) if k_add > 0 else ids.new_zeros(0)
                del own, rank
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
