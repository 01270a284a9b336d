"""What every structure attack shares: the result type, budgets, flips and the validity checks.

Conventions (stated once, here):

* an undirected edge / node pair is ``(i, j)`` with ``i < j``; ``edge_index`` holds both
  directions of every edge, sorted and coalesced (as :class:`~robustbench_geo.data.base.GraphDataset`);
* a *flip* inserts a missing edge or deletes an existing one; budgets count flips (plus feature
  flips for attacks that change features);
* global budgets are a fraction of the clean graph's undirected edges
  (``budget_edge_fraction``: ``floor(fraction * E)`` flips); targeted budgets are a count of flips
  per target (``budget_flips_per_target``; ``None`` = the target's degree + 2, as in Nettack);
* every result is checked by :func:`check_perturbation` before it is returned: symmetric, binary,
  no self-loops, no node that had edges left without any (:func:`left_isolated`, insertions
  counted: the one isolation rule of :func:`finalize`, PGD and the check), flips within the budget. A violation
  raises :class:`InvalidPerturbationError` (an attack bug, never silently repaired).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from robustbench_geo.data.base import GraphDataset


class InvalidPerturbationError(RuntimeError):
    """An attack produced an invalid graph (a bug in the attack, not a user error)."""


@dataclass(frozen=True)
class GraphPerturbation:
    """The result of one structure attack.

    Attributes:
        edge_index: ``(2, E')`` int64 perturbed structure (both directions, sorted).
        insertions: ``(2, I)`` int64 inserted pairs ``i < j``.
        deletions: ``(2, D)`` int64 deleted pairs ``i < j``.
        budget: flips allowed (structure + feature flips).
        x: ``(N, F)`` perturbed features, or ``None`` when features are unchanged.
        feature_flips: ``(2, K)`` int64 ``(node, feature)`` pairs flipped (binary features).
        target: the attacked node (targeted attacks) or ``None`` (global attacks).
        work: what the attack did (steps, gradient evaluations, candidate counts, seconds, ...).
    """

    edge_index: torch.Tensor
    insertions: torch.Tensor
    deletions: torch.Tensor
    budget: int
    x: torch.Tensor | None = None
    feature_flips: torch.Tensor = field(default_factory=lambda: torch.zeros(2, 0, dtype=torch.long))
    target: int | None = None
    work: dict = field(default_factory=dict)

    @property
    def flips(self) -> int:
        """Structure flips (insertions + deletions)."""
        return int(self.insertions.shape[1] + self.deletions.shape[1])

    @property
    def budget_used(self) -> int:
        """Structure flips + feature flips."""
        return self.flips + int(self.feature_flips.shape[1])

    def graph(self, clean: GraphDataset) -> GraphDataset:
        """``clean`` with this perturbation applied."""
        return clean.with_edges(self.edge_index, self.x)


# ---------------------------------------------------------------- budgets


def edge_budget(graph: GraphDataset, fraction) -> int:
    """``floor(fraction * E)`` flips for a global attack; validates ``fraction`` in ``[0, 1]``."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or math.isnan(fraction):
        raise ValueError(f"budget_edge_fraction: expected a fraction of edges in [0, 1], got {fraction!r}")
    if fraction < 0 or fraction > 1:
        hint = " (global attacks take a fraction of edges, e.g. 0.05; counts per target are for targeted attacks)" if fraction > 1 else ""
        raise ValueError(f"budget_edge_fraction: expected a fraction of edges in [0, 1], got {fraction}{hint}")
    return int(math.floor(fraction * graph.num_edges + 1e-9))


def target_budget(graph: GraphDataset, target: int, flips) -> int:
    """Flips for one target: ``flips`` (a non-negative integer) or, when ``None``, degree + 2."""
    if flips is None:
        return int(degrees(graph.edge_index, graph.num_nodes)[target]) + 2
    if isinstance(flips, bool) or not (isinstance(flips, int) or (isinstance(flips, float) and flips.is_integer())):
        raise ValueError(f"budget_flips_per_target: expected a non-negative integer count of flips per target, got {flips!r}")
    flips = int(flips)
    if flips < 0:
        raise ValueError(f"budget_flips_per_target: expected a non-negative integer count of flips per target, got {flips}")
    if flips > graph.num_nodes - 1:
        raise ValueError(f"budget_flips_per_target: expected at most N - 1 = {graph.num_nodes - 1} flips per target "
                         f"(every other node), got {flips}")
    return flips


def check_target(graph: GraphDataset, target) -> int:
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < graph.num_nodes:
        raise ValueError(f"target: expected a node id in [0, {graph.num_nodes}), got {target!r}")
    return target


# ---------------------------------------------------------------- structure helpers


def degrees(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """``(N,)`` int64 degrees of a symmetric ``edge_index``."""
    return torch.bincount(edge_index[0], minlength=num_nodes)


def upper_pairs(edge_index: torch.Tensor) -> torch.Tensor:
    """``(2, E)`` undirected pairs ``i < j`` of a symmetric ``edge_index``."""
    return edge_index[:, edge_index[0] < edge_index[1]]


def pair_ids(pairs: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Linear ids ``i * N + j`` of pairs ``(2, K)`` with ``i < j``."""
    return pairs[0] * num_nodes + pairs[1]


def flipped_degrees(degree: torch.Tensor, pairs: torch.Tensor, is_deletion: torch.Tensor) -> torch.Tensor:
    """``(N,)`` degrees after flipping ``pairs`` ``(2, K)`` (+1 at both ends of an insertion, -1 of a deletion)."""
    step = 1 - 2 * is_deletion.long()
    ends = torch.cat([pairs[0], pairs[1]])
    return degree + torch.zeros_like(degree).index_add_(0, ends, torch.cat([step, step]))


def left_isolated(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: nodes with edges before and none after; the isolation rule every attack obeys.

    Degrees count the whole perturbed graph, insertions included: a degree-1 node may lose its edge
    when the same perturbation gives it a new one.
    """
    return (before > 0) & (after == 0)


def ids_to_pairs(ids: torch.Tensor, num_nodes: int) -> torch.Tensor:
    return torch.stack([ids // num_nodes, ids % num_nodes])


def symmetric_edge_index(pairs: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Both directions of undirected ``pairs``, sorted by (source, destination)."""
    ei = torch.cat([pairs, pairs.flip(0)], 1)
    order = torch.argsort(ei[0] * num_nodes + ei[1])
    return ei[:, order].contiguous()


def apply_flips(edge_index: torch.Tensor, flips: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Flip undirected pairs ``(2, K)`` (``i < j``, distinct) in a symmetric ``edge_index``."""
    clean = pair_ids(upper_pairs(edge_index), num_nodes)
    f = pair_ids(flips, num_nodes)
    keep = clean[~torch.isin(clean, f)]
    new = torch.cat([keep, f[~torch.isin(f, clean)]])
    return symmetric_edge_index(ids_to_pairs(torch.sort(new).values, num_nodes), num_nodes)


def finalize(graph: GraphDataset, flips: torch.Tensor, budget: int, *, x: torch.Tensor | None = None,
             feature_flips: torch.Tensor | None = None, target: int | None = None, work: dict | None = None,
             drop_singletons: bool = True) -> GraphPerturbation:
    """Turn chosen flips (in priority order) into a checked :class:`GraphPerturbation`.

    Pairs are normalised to ``i < j`` and de-duplicated (first occurrence kept). With
    ``drop_singletons`` a deletion that would leave a node without edges in the perturbed graph
    (insertions counted, :func:`left_isolated`) is skipped, deletions in priority order, so the result
    never isolates a node; the work record counts the skipped ones. A flip set that isolates no node
    is returned whole.
    """
    n = graph.num_nodes
    flips = flips.to(torch.long).reshape(2, -1).cpu()
    flips = torch.stack([flips.min(0).values, flips.max(0).values])
    if (flips[0] == flips[1]).any():
        raise InvalidPerturbationError("an attack proposed a self-loop flip")
    ids = pair_ids(flips, n)
    _, first = unique_first(ids)
    flips = flips[:, first]
    clean_ids = pair_ids(upper_pairs(graph.edge_index.cpu()), n)
    is_del = torch.isin(pair_ids(flips, n), clean_ids)
    skipped = 0
    if drop_singletons and is_del.any():
        # the rule of left_isolated: insertions count first (they never isolate), then deletions in priority order
        deg = flipped_degrees(degrees(graph.edge_index.cpu(), n), flips[:, ~is_del], is_del[~is_del])
        keep = torch.ones(flips.shape[1], dtype=torch.bool)
        for k in torch.nonzero(is_del).view(-1).tolist():
            i, j = flips[0, k].item(), flips[1, k].item()
            if deg[i] <= 1 or deg[j] <= 1:
                keep[k] = False
                skipped += 1
            else:
                deg[i] -= 1
                deg[j] -= 1
        flips, is_del = flips[:, keep], is_del[keep]
    ff = torch.zeros(2, 0, dtype=torch.long) if feature_flips is None else feature_flips.to(torch.long).cpu()
    ei = apply_flips(graph.edge_index.cpu(), flips, n)
    w = dict(work or {})
    if skipped:
        w["singleton_deletions_skipped"] = skipped
    result = GraphPerturbation(ei, flips[:, ~is_del], flips[:, is_del], int(budget), x, ff, target, w)
    check_perturbation(graph, result)
    return result


def unique_first(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique values of ``ids`` and the index of each one's first occurrence (in original order)."""
    if ids.numel() == 0:
        return ids, torch.zeros(0, dtype=torch.long)
    uniq, inv = torch.unique(ids, return_inverse=True)
    pos = torch.arange(ids.numel())
    first = torch.full((uniq.numel(),), ids.numel(), dtype=torch.long).scatter_reduce(0, inv, pos, "amin")
    first = torch.sort(first).values
    return ids[first], first


def check_perturbation(graph: GraphDataset, result: GraphPerturbation) -> None:
    """Raise :class:`InvalidPerturbationError` unless ``result`` is a valid perturbation of ``graph``."""
    n = graph.num_nodes
    ei = result.edge_index

    def fail(msg):
        raise InvalidPerturbationError(f"invalid perturbed graph: {msg}")

    if ei.dim() != 2 or ei.shape[0] != 2:
        fail(f"edge_index must have shape (2, E), got {tuple(ei.shape)}")
    if ei.numel() and (ei.min() < 0 or ei.max() >= n):
        fail("edge_index refers to nodes outside [0, N)")
    if (ei[0] == ei[1]).any():
        fail("self-loops")
    lin = ei[0] * n + ei[1]
    if torch.unique(lin).numel() != lin.numel():
        fail("duplicate edges (not binary)")
    rev = ei[1] * n + ei[0]
    if not torch.equal(torch.sort(lin).values, torch.sort(rev).values):
        fail("not symmetric")
    clean = pair_ids(upper_pairs(graph.edge_index.cpu()), n)
    ins, dels = pair_ids(result.insertions, n), pair_ids(result.deletions, n)
    if (result.insertions.numel() and (result.insertions[0] >= result.insertions[1]).any()) or \
            (result.deletions.numel() and (result.deletions[0] >= result.deletions[1]).any()):
        fail("flips must be pairs i < j")
    if torch.isin(ins, clean).any() or not torch.isin(dels, clean).all():
        fail("an insertion already exists or a deletion does not")
    expected = torch.sort(torch.cat([clean[~torch.isin(clean, dels)], ins])).values
    if not torch.equal(expected, torch.sort(pair_ids(upper_pairs(ei), n)).values):
        fail("edge_index differs from the clean graph with the reported flips applied")
    isolated = left_isolated(degrees(graph.edge_index.cpu(), n), degrees(ei, n))
    if isolated.any():
        fail(f"{int(isolated.sum())} node(s) left without edges")
    if result.budget_used > result.budget:
        fail(f"{result.budget_used} flips exceed the budget of {result.budget}")
    if result.x is not None and result.x.shape != graph.x.shape:
        fail(f"features must keep shape {tuple(graph.x.shape)}, got {tuple(result.x.shape)}")


# ---------------------------------------------------------------- dense attacks


#: the attacks that never build an ``N x N`` matrix (memory O(E + block)), named when a dense attack refuses
SPARSE_ATTACKS = ("prbcd", "grbcd", "dice", "random_edges")


class DenseGraphTooLarge(MemoryError):
    """A dense attack refused a graph whose ``N x N`` matrices would exceed ``max_memory_gb`` (nothing was allocated).

    Attributes: ``attack`` (its name) and ``gib`` (the estimate).
    """

    def __init__(self, message: str, attack: str, gib: float):
        super().__init__(message)
        self.attack, self.gib = attack, gib


def dense_memory_gib(num_nodes: int, matrices: float) -> float:
    """GiB of ``matrices`` dense ``N x N`` float32 matrices."""
    return matrices * num_nodes ** 2 * 4 / 2 ** 30


def check_dense_memory(attack: str, num_nodes: int, matrices: float, max_memory_gb: float) -> float:
    """Estimate the memory of ``matrices`` dense ``N x N`` float32 matrices; refuse when too large.

    Call it before anything ``N x N`` is allocated. Returns the estimate in GiB; raises
    :class:`DenseGraphTooLarge` (a ``MemoryError``) with one line giving the estimate and naming the
    sparse attacks (:data:`SPARSE_ATTACKS`) above ``max_memory_gb``.
    """
    gib = dense_memory_gib(num_nodes, matrices)
    if gib > max_memory_gb:
        raise DenseGraphTooLarge(
            f"attack {attack!r} is dense: about {gib:.1f} GiB of N x N matrices for a {num_nodes}-node graph, above "
            f"max_memory_gb={max_memory_gb:g}; use a sparse attack ({', '.join(SPARSE_ATTACKS)}) or raise "
            f"max_memory_gb if the machine has the memory", attack, gib)
    return gib


class GraphAttack:
    """Base of structure attacks: ``targeted`` attacks are called ``attack(graph, target, seed=...)``,
    global ones ``attack(graph, seed=...)``; both return a checked :class:`GraphPerturbation`."""

    targeted: bool = False
    budget_param: str = "budget_edge_fraction"
    #: uses the attacked model's gradients/predictions (white box) rather than its own surrogate
    uses_model: bool = True

    def __init__(self, model):
        self.model = model
