"""``auto``: a portfolio of structure attacks; the perturbation the real model does worst on wins.

Mujkanovic et al. (NeurIPS 2022) found no single attack strongest against every defense: which loss,
which surrogate (the model itself, its pre-processing dropped or frozen) and which edge-difference
mask works depends on the architecture. ``auto`` runs the members that fit the model and keeps the
perturbation with the lowest accuracy of the real model on the attacked nodes (true labels, the
model's own sparse ``forward`` on the binary graph), so it is never weaker than any of the members
it ran on the same seed. Once a member leaves the model at or below ``stop_accuracy`` (default
``"chance"``: the share of the attacked nodes' most frequent class, what a constant prediction
scores) the remaining members are skipped and recorded as such: a model already collapsed to chance
has no robustness left to measure, and on GCN-SVD this turns minutes of PGD through a Lanczos solve
per step into one ``degree_collapse`` run (``stop_accuracy="never"`` runs everything). The portfolio
(evasion; in poisoning every member runs), in this order:

1. for models with a pre-processing step (``dense_preprocess``: ``gcn_jaccard``, ``gcn_svd``, ...):
   ``degree_collapse`` (pushes a pre-processed degree over the normalisation cliff, see
   :mod:`~robustbench_geo.attacks.graph.collapse`; the cheapest member);
2. ``pgd`` on the model's own gradient, losses ``prob_margin`` and ``tanh_margin`` against the true
   labels (Mujkanovic et al.'s two strongest); for models with a pre-processing step also ``pgd``
   with that step dropped and frozen, for low-rank models (a ``rank`` attribute) both also with the
   eigenspace-alignment mask; for models that declare ``attack_alterations`` (GNNGuard) ``pgd``
   through the altered copy (``surrogate="alter"``);
3. ``prbcd`` (sparse, different sampling and block structure; on the classifier behind a
   pre-processing step, ``surrogate="drop"``, which spares GCN-SVD a Lanczos solve on a 250k-pair
   block per step);
4. ``pgd`` initialised from the best perturbation so far (``init_flips``), which can only keep or
   improve it.

A model without ``dense_forward`` (a user's PyG model that only has ``forward(x, edge_index,
edge_weight)``, or the registered ``gat`` and ``gin``) has no pre-processing split, so it gets
members 2 to 4: ``pgd`` with both losses, ``prbcd`` and the chained ``pgd``. None of them runs its
forward on all ``N^2`` pairs: ``pgd`` relaxes the clean edges plus a resampled block of other pairs
(:mod:`~robustbench_geo.attacks.graph.block`) and ``prbcd`` is block-sparse by design, so each step
costs ``O(E + block_size)``. ``degree_collapse`` and the ``drop``/``freeze`` surrogates need the
split, and the eigenspace mask a low-rank model, so they do not apply.

With ``mode="poisoning"`` Metattack (``meta_self``) joins, and members are still judged by the
given model (the evaluator retrains on the winner). ``max_memory_gb`` is handed to every dense member
(``pgd`` on a model with ``dense_forward``, ``degree_collapse``, ``metattack``): one whose ``N x N``
matrices would need more refuses before allocating anything, and ``auto`` records it as skipped with
the refusal's line (the estimate in GiB) and goes on with the sparse members (``prbcd``), so on a large
graph (``sbm:nodes=100000``) ``auto`` is PR-BCD plus the record of what it skipped. The result's
``work`` lists every member with its accuracy, flips and seconds, the winner, and the estimated and
measured seconds.
"""

from __future__ import annotations

import time

import torch

from robustbench_geo.attacks.base import create_attack, register_attack
from robustbench_geo.attacks.graph.base import (
    DenseGraphTooLarge, GraphAttack, GraphPerturbation, dense_memory_gib, edge_budget, finalize,
)
from robustbench_geo.attacks.graph.block import BlockRelaxation, EdgeWeightIgnored
from robustbench_geo.attacks.graph.pgd import dense_matrix_count
from robustbench_geo.data.base import GraphDataset

MODES = ("evasion", "poisoning")
STOP_WORDS = ("chance", "never")
#: members that take ``max_memory_gb`` (dense on a model with ``dense_forward``)
DENSE_MEMBERS = ("pgd", "degree_collapse", "metattack")


def portfolio(model, mode: str = "evasion", steps: int = 100, refine_steps: int = 50) -> list[tuple[str, str, dict]]:
    """The members ``(label, attack, params)`` that fit ``model`` (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    pgd = {"steps": steps, "refine_steps": refine_steps, "labels": "true"}
    split = hasattr(model, "dense_preprocess") and hasattr(model, "dense_classifier")
    # degree_collapse first: it is the cheapest member and, where it works, leaves chance-level accuracy
    # (the early stop of AutoAttack then spares the rest)
    members = [("degree_collapse", "degree_collapse", {})] if split else []
    members += [(f"pgd/{loss}", "pgd", {**pgd, "loss": loss}) for loss in ("prob_margin", "tanh_margin")]
    if split:
        masks = ("eigenspace", None) if hasattr(model, "rank") else (None,)
        for surrogate in ("drop", "freeze"):
            for mask in masks:
                label = f"pgd/{surrogate}" + (f"+{mask}" if mask else "")
                members.append((label, "pgd", {**pgd, "loss": "tanh_margin", "surrogate": surrogate, "mask": mask}))
    if getattr(model, "attack_alterations", None):
        members.append(("pgd/alter", "pgd", {**pgd, "loss": "tanh_margin", "surrogate": "alter"}))
    members.append(("prbcd", "prbcd", {"loss": "prob_margin", **({"surrogate": "drop"} if split else {})}))
    if mode == "poisoning":
        members.append(("metattack", "metattack", {}))
    return members


@register_attack("auto", domain="graph")
class AutoAttack(GraphAttack):
    """A portfolio of adaptive PGD variants, PR-BCD (and Metattack for poisoning); the lowest real accuracy wins."""

    param_docs = {
        "budget_edge_fraction": "flips as a fraction of the clean graph's edges",
        "mode": "evasion or poisoning (adds Metattack to the portfolio)",
        "members": "comma-separated member labels to run (None = the whole portfolio for the model; "
                   "AutoAttack.members(model) lists them)",
        "steps": "PGD steps per member",
        "refine_steps": "PGD swap-refinement steps per member",
        "chain": "finish with PGD initialised from the best perturbation found",
        "max_memory_gb": "dense members are skipped on graphs that need more (GiB)",
        "block_size": "node pairs in the block relaxations: prbcd's block and, on a model without dense_forward, "
                      "pgd's (None = each attack's default)",
        "stop_accuracy": "stop the portfolio once the best real accuracy is at or below this: 'chance' (the share of "
                         "the attacked nodes' most frequent class, what a constant prediction gets), a fraction in "
                         "[0, 1], or 'never'; the members not run are recorded as skipped",
    }

    def __init__(self, model, *, budget_edge_fraction: float = 0.05, mode: str = "evasion", members: str | None = None,
                 steps: int = 100, refine_steps: int = 50, chain: bool = True, max_memory_gb: float = 8.0,
                 stop_accuracy: float | str = "chance", block_size: int | None = None):
        super().__init__(model)
        if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1):
            raise ValueError(f"block_size: expected a positive count of node pairs or None, got {block_size!r}")
        self.block_size = block_size
        if not (stop_accuracy in STOP_WORDS or (isinstance(stop_accuracy, (int, float))
                                                 and not isinstance(stop_accuracy, bool) and 0 <= stop_accuracy <= 1)):
            raise ValueError(f"stop_accuracy: expected 'chance', 'never' or a fraction in [0, 1], got {stop_accuracy!r}")
        full = portfolio(model, mode, steps, refine_steps)
        if members is not None:
            wanted = [m.strip() for m in members.split(",") if m.strip()]
            known = [label for label, _, _ in full]
            unknown = [m for m in wanted if m not in known]
            if unknown or not wanted:
                raise ValueError(f"members: expected labels among {', '.join(known)} for this model, got {members!r}")
            full = [m for m in full if m[0] in wanted]
        self.budget_edge_fraction, self.mode, self.steps, self.refine_steps = budget_edge_fraction, mode, steps, refine_steps
        self.chain, self.max_memory_gb, self.portfolio = chain, max_memory_gb, full
        self.stop_accuracy = stop_accuracy

    @staticmethod
    def members(model, mode: str = "evasion") -> list[str]:
        """The member labels the portfolio runs against ``model``."""
        return [label for label, _, _ in portfolio(model, mode)]

    def estimate_seconds(self, graph: GraphDataset, clock=time.perf_counter) -> dict:
        """A dry-run estimate: one timed surrogate gradient and one timed real forward, times the members' work.

        Args:
            clock: the seconds counter to time with (wall clock by default; the sweep's dry run passes CPU
                seconds per thread, which a busy machine does not inflate).

        Returns ``{"total": seconds, label: seconds, ...}``; rough (the machine's load changes wall seconds).
        """
        model = self.model.eval()
        dev = next(iter(model.parameters())).device
        g = graph.to(dev)
        x = g.x
        dense = hasattr(model, "dense_forward") and \
            dense_memory_gib(g.num_nodes, dense_matrix_count(model)) <= self.max_memory_gb
        if dense:
            a = g.dense_adjacency().requires_grad_(True)
            model.dense_forward(x, a).sum().backward()  # warm-up: one-time caches (Jaccard similarities, ...)
            t0 = clock()
            model.dense_forward(x, a).sum().backward()
        else:  # the block relaxation (the clean edges plus pgd's default block of other pairs): no N x N matrix
            relax = BlockRelaxation(model, x, g.edge_index, g.idx_test, g.y[g.idx_test], 1, 50_000, 0, 0)
            relax.start(None, False, torch.Generator().manual_seed(0))
            t0 = clock()
            try:
                relax.step(lambda logits, labels: logits.sum(), 0.0, 0)
            except EdgeWeightIgnored:  # the gradient members will be skipped
                pass
        grad_s = clock() - t0
        t0 = clock()
        with torch.no_grad():  # with edge weights: no cached pre-processing
            model(x, g.edge_index, torch.ones(g.edge_index.shape[1], device=dev))
        fwd_s = clock() - t0
        est = {}
        for label, attack, params in self.portfolio:
            if attack in DENSE_MEMBERS and hasattr(model, "dense_forward") and not dense:
                est[label] = 0.0  # refuses above max_memory_gb: skipped
            elif attack == "pgd":
                samples = params.get("samples", 20)
                est[label] = (params["steps"] + params["refine_steps"]) * grad_s + (samples + params["refine_steps"]) * fwd_s
            elif attack == "prbcd":
                est[label] = 250 * fwd_s * 2
            elif attack == "degree_collapse":
                est[label] = 8 * grad_s + 24 * fwd_s
            else:
                est[label] = edge_budget(graph, self.budget_edge_fraction) * 100 * grad_s
        if self.chain and (dense or not hasattr(model, "dense_forward")):
            est["chain"] = (self.steps + self.refine_steps) * grad_s + (20 + self.refine_steps) * fwd_s
        est["total"] = sum(est.values())
        return est

    def __call__(self, graph: GraphDataset, *, seed: int = 0, nodes: torch.Tensor | None = None) -> GraphPerturbation:
        t0 = time.perf_counter()
        budget = edge_budget(graph, self.budget_edge_fraction)
        model = self.model.eval()
        dev = next(iter(model.parameters())).device
        nodes = (graph.idx_test if nodes is None else nodes).cpu()
        x, y = graph.x.to(dev), graph.y.cpu()[nodes]

        @torch.no_grad()
        def accuracy(res: GraphPerturbation) -> float:
            """Accuracy of the real model on the attacked nodes: its own sparse forward, true labels."""
            pred = model(x, res.edge_index.to(dev)).argmax(1).cpu()[nodes]
            return float((pred == y).float().mean())

        clean = finalize(graph.to("cpu"), torch.zeros(2, 0, dtype=torch.long), budget)
        best, best_acc, winner, record = clean, accuracy(clean), "clean", []
        if self.mode == "poisoning":  # judged here by the given model, but the evaluator retrains: run everything
            stop = -1.0
        elif self.stop_accuracy == "chance":
            stop = float(torch.bincount(y).max()) / max(y.numel(), 1)
        else:
            stop = -1.0 if self.stop_accuracy == "never" else float(self.stop_accuracy)
        runs = list(self.portfolio)
        if self.chain and budget > 0:
            runs.append(("pgd/init=best", "pgd", {"steps": self.steps, "refine_steps": self.refine_steps,
                                                  "labels": "true", "loss": "tanh_margin"}))
        for label, attack, params in runs if budget > 0 else []:
            if any("accuracy" in r for r in record) and best_acc <= stop:
                record.append({"member": label, "skipped": f"best accuracy {best_acc:.4f} already at or below "
                                                           f"stop_accuracy {stop:.4f} ({self.stop_accuracy})"})
                continue
            m0 = time.perf_counter()
            if self.block_size is not None and attack in ("pgd", "prbcd"):
                params = {**params, "block_size": self.block_size}
            if attack in DENSE_MEMBERS:
                params = {**params, "max_memory_gb": self.max_memory_gb}
            att = create_attack(attack, model, budget_edge_fraction=self.budget_edge_fraction, **params)
            try:
                if label == "pgd/init=best":
                    init = torch.cat([best.insertions, best.deletions], 1)
                    res = att(graph, seed=seed, nodes=nodes, init_flips=init)
                elif attack == "metattack":
                    res = att(graph, seed=seed)
                else:
                    res = att(graph, seed=seed, nodes=nodes)
            except EdgeWeightIgnored as err:
                record.append({"member": label, "skipped": str(err)})
                continue
            except DenseGraphTooLarge as err:  # refused before allocating: the sparse members still run
                record.append({"member": label, "skipped": str(err), "estimate_gib": round(err.gib, 2)})
                continue
            acc = accuracy(res)
            record.append({"member": label, "attack": attack, "accuracy": acc, "flips": res.flips,
                           "seconds": time.perf_counter() - m0})
            if acc < best_acc:
                best, best_acc, winner = res, acc, label
        pairs = torch.cat([best.insertions, best.deletions], 1)
        work = {"winner": winner, "accuracy": best_acc, "members": record, "mode": self.mode, "stop_accuracy": stop,
                "seconds": time.perf_counter() - t0}
        return finalize(graph.to("cpu"), pairs, budget, work=work)
