"""Intra-op threads for graph work: one thread for small graphs, unless the user chose otherwise.

A full-batch pass over a small graph is a few milliseconds of work split into many short operators;
with two intra-op threads each operator waits for the slower thread, and when anything else runs on
the machine that wait is a time slice. Measured (``benchmarks/graph_threads.py``, docs/benchmarks.md):
30 training epochs of ``gcn`` on Cora take 0.53 s with one thread and 0.46 s with two on an idle
machine, 0.50 s and 1.56 s beside two busy processes. So graph training and graph evaluation
(:func:`~robustbench_geo.training.train_graph_model`, the graph evaluators, hence ``rbgeo train``,
``rbgeo attack`` and ``rbg.benchmark`` on graphs) run in :func:`graph_threads`:

* ``RBGEO_GRAPH_THREADS`` unset or ``auto`` (the rule): a graph whose work
  ``nodes x features + 2 x edges`` is below :data:`SMALL_GRAPH_WORK` runs with one thread, and the
  previous number is restored afterwards; larger graphs keep torch's setting. Nothing is changed when
  the user has chosen: ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` set, or ``torch.set_num_threads``
  called with another number since ``robustbench_geo`` was imported (a call with the number torch
  already had cannot be told apart: set ``RBGEO_GRAPH_THREADS=keep`` then).
* ``RBGEO_GRAPH_THREADS=keep``: never change the number of threads.
* ``RBGEO_GRAPH_THREADS=N`` (a positive integer): run graph work with ``N`` threads, whatever the size.

Sweeps with ``--jobs`` pin one thread per worker themselves (an explicit choice, kept).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

ENV = "RBGEO_GRAPH_THREADS"
#: below this ``nodes x features + 2 x edges`` graph work runs with one thread (Cora: 3.6M)
SMALL_GRAPH_WORK = 20_000_000
_AT_IMPORT = torch.get_num_threads()


def graph_work(num_nodes: int, num_features: int, num_edges: int) -> int:
    """``nodes x features + 2 x edges``: the entries a full-batch pass reads (features, both edge directions)."""
    return num_nodes * num_features + 2 * num_edges


def user_chose_threads() -> bool:
    """Whether the user set the number of threads (environment, or ``torch.set_num_threads`` since import)."""
    return any(os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")) or \
        torch.get_num_threads() != _AT_IMPORT


def choose_threads(num_nodes: int, num_features: int, num_edges: int) -> int | None:
    """Threads for graph work of this size, or ``None`` to leave torch's setting (see the module docstring)."""
    setting = os.environ.get(ENV, "auto").strip() or "auto"
    if setting == "keep":
        return None
    if setting != "auto":
        if not setting.isdigit() or int(setting) < 1:
            raise ValueError(f"{ENV}: expected auto, keep or a positive number of threads, got {setting!r}")
        return int(setting)
    if user_chose_threads():
        return None
    return 1 if graph_work(num_nodes, num_features, num_edges) < SMALL_GRAPH_WORK else None


@contextmanager
def graph_threads(graph):
    """Run the block with :func:`choose_threads` for ``graph`` (anything with ``num_nodes``, ``x``, ``num_edges``);
    the previous number of threads is restored on exit."""
    n = choose_threads(graph.num_nodes, graph.x.shape[1] if graph.x.dim() > 1 else 1, graph.num_edges)
    before = torch.get_num_threads()
    if n is None or n == before:
        yield before
        return
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
