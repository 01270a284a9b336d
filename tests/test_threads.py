"""The intra-op thread rule for graph work (robustbench_geo.threads): one thread below a size, the user's choice kept."""

from __future__ import annotations

import pytest
import torch

from robustbench_geo import threads
from robustbench_geo.data.base import GraphDataset


def _graph(nodes: int, features: int, edges: int = 0) -> GraphDataset:
    ei = torch.zeros(2, 2 * edges, dtype=torch.long)
    idx = torch.arange(1)
    return GraphDataset("g", "s", torch.zeros(nodes, features), ei, torch.zeros(nodes, dtype=torch.long), idx, idx, idx, {})


@pytest.fixture
def no_user_choice(monkeypatch):
    """As a user who set nothing: no thread variables, torch at the number it had when the package was imported."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", threads.ENV):
        monkeypatch.delenv(var, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(threads._AT_IMPORT)
    yield
    torch.set_num_threads(before)


def test_small_graphs_run_with_one_thread_and_the_number_is_restored(no_user_choice, monkeypatch):
    monkeypatch.setattr(threads, "_AT_IMPORT", 2)
    torch.set_num_threads(2)
    small = _graph(2485, 1433, 5069)  # Cora's size
    assert threads.graph_work(2485, 1433, 5069) < threads.SMALL_GRAPH_WORK
    with threads.graph_threads(small) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), threads.graph_threads(small):
        raise RuntimeError("restored on errors too")
    assert torch.get_num_threads() == 2
    large = _graph(threads.SMALL_GRAPH_WORK // 100 + 1, 100)
    with threads.graph_threads(large) as n:
        assert n == 2 and torch.get_num_threads() == 2


def test_the_users_choice_is_kept(no_user_choice, monkeypatch):
    monkeypatch.setattr(threads, "_AT_IMPORT", 2)
    small = _graph(100, 10)
    torch.set_num_threads(3)  # set after import: an explicit choice
    with threads.graph_threads(small):
        assert torch.get_num_threads() == 3
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with threads.graph_threads(small):
        assert torch.get_num_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv(threads.ENV, "keep")
    with threads.graph_threads(small):
        assert torch.get_num_threads() == 2


def test_the_environment_variable_forces_a_number(no_user_choice, monkeypatch):
    monkeypatch.setenv(threads.ENV, "2")
    torch.set_num_threads(1)
    with threads.graph_threads(_graph(100, 10)):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1
    monkeypatch.setenv(threads.ENV, "two")
    with pytest.raises(ValueError, match="RBGEO_GRAPH_THREADS: expected auto, keep or a positive number of threads, got 'two'"):
        threads.choose_threads(100, 10, 0)


def test_training_and_evaluation_run_inside_the_rule(no_user_choice, monkeypatch):
    """train_graph_model and evaluate_attack on graphs see one thread on a small graph and leave torch as they found it."""
    from robustbench_geo.data.graphs import stratified_split
    from robustbench_geo.evaluation import evaluate_attack
    from robustbench_geo.models.registry import build_model
    from robustbench_geo.training import TrainConfig, train_graph_model

    monkeypatch.setattr(threads, "_AT_IMPORT", 2)
    torch.set_num_threads(2)
    n = 40
    y = torch.arange(n) % 2
    ring = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n])
    ei = torch.cat([ring, ring.flip(0)], 1)
    ei = ei[:, torch.argsort(ei[0] * n + ei[1])]
    tr, va, te = stratified_split(y, (0.5, 0.25, 0.25), 0)
    graph = GraphDataset("ring", "s", torch.eye(n)[:, :8], ei, y, tr, va, te, {})
    model, _ = build_model("gcn", graph)
    seen = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: (seen.append(torch.get_num_threads()), forward(*a, **k))[1])
    train_graph_model(model, graph, TrainConfig(epochs=2, seed=0), progress=False)
    evaluate_attack(model, graph, "none")
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2
