"""Graph models under ``torch.inference_mode`` and their feature caches (the CUDA-sweep failure, on CPU).

On a GPU, ``graph_logits`` moves the graph to the device inside ``torch.inference_mode()``, so the
model receives *inference tensors*, which have no version counter; a cache keyed by
``x._version`` then raised "Inference tensors do not track version counter" in every graph cell.
On the CPU ``.to("cpu")`` returns the original tensor, which hid the bug; here the graph's
tensors are made inference tensors explicitly, which is the same condition.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from robustbench_geo.data.base import GraphDataset
from robustbench_geo.evaluation import graph_logits
from robustbench_geo.models import build_model, list_models
from robustbench_geo.models.tensor_cache import TensorCache
from tests.attacks.graph.conftest import sbm_graph


def _inference_copy(graph: GraphDataset) -> GraphDataset:
    with torch.inference_mode():
        tensors = [t.clone() for t in (graph.x, graph.edge_index, graph.y, graph.idx_train, graph.idx_val, graph.idx_test)]
    assert all(t.is_inference() for t in tensors)
    return GraphDataset(graph.name, graph.split, *tensors, dict(graph.meta))


@pytest.mark.parametrize("name", list_models(task="graph"))
def test_graph_models_accept_inference_tensors(name):
    graph = sbm_graph(n=40, seed=2)
    torch.manual_seed(0)
    model, _ = build_model(name, graph)
    ref = graph_logits(model, graph)
    out = graph_logits(model, _inference_copy(graph))  # raised for gcn and gcn_jaccard before the fix
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    # an entry filled during the evaluation still serves training afterwards (autograd through the cache)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(graph.x, graph.edge_index)[graph.idx_train], graph.y[graph.idx_train])
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_cache_hits_only_for_the_same_unchanged_tensor():
    calls = []

    def compute(t):
        calls.append(1)
        return t.sum()

    cache = TensorCache()
    x = torch.ones(3, 4)
    assert cache.get(x, compute) == 12 and cache.get(x, compute) == 12 and len(calls) == 1
    x.add_(1)  # in place: the version counter moves
    assert cache.get(x, compute) == 24 and len(calls) == 2
    assert cache.get(x, compute, "other extra") == 24 and len(calls) == 3
    y = x.clone()  # equal contents, another object: recomputed (a freed tensor's memory can be reused)
    assert cache.get(y, compute) == 24 and len(calls) == 4
    with torch.inference_mode():
        z = torch.ones(2, 2)
        assert cache.get(z, compute) == 4 and cache.get(z, compute) == 4 and len(calls) == 6  # never cached
    value = cache.get(x, lambda t: t * 2)
    assert not value.is_inference()
    with torch.inference_mode():  # entries are normal tensors even when filled inside inference mode
        assert not TensorCache().get(x, lambda t: t * 2).is_inference()


def test_cached_models_copy_and_pickle():
    graph = sbm_graph(n=30, seed=1)
    model, _ = build_model("gcn", graph)
    graph_logits(model, graph)  # fills the cache with a weak reference
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        torch.testing.assert_close(graph_logits(clone, graph), graph_logits(model, graph))


def _with_pairs(graph: GraphDataset, present, absent) -> torch.Tensor:
    """The graph's ``edge_index`` with the pairs ``present`` inserted and ``absent`` deleted."""
    from robustbench_geo.attacks.graph.base import pair_ids, symmetric_edge_index, upper_pairs

    n = graph.num_nodes
    ids = set(pair_ids(upper_pairs(graph.edge_index), n).tolist())
    ids = (ids | {i * n + j for i, j in present}) - {i * n + j for i, j in absent}
    pairs = torch.tensor(sorted(ids))
    return symmetric_edge_index(torch.stack([pairs // n, pairs % n]), n)


# pairs of edge sets that the former keys (sums of indices) could not tell apart
COLLIDING = {
    "gcn_svd": ([(1, 14)], [(2, 13)]),  # equal sums of i + j (a 40-node example where pair sums tie)
    "soft_median_gdc": ([(1, 6), (2, 3)], [(0, 4), (2, 6)]),  # equal sums of i + j and of i * j
}


@pytest.mark.parametrize("name", sorted(COLLIDING))
def test_structure_cache_never_serves_another_graph(name):
    graph = sbm_graph(n=40, seed=2)
    first, second = COLLIDING[name]
    a, b = _with_pairs(graph, first, second), _with_pairs(graph, second, first)
    assert a.shape == b.shape and not torch.equal(a, b)
    torch.manual_seed(0)
    model, _ = build_model(name, graph)
    fresh = copy.deepcopy(model).eval()
    with torch.no_grad():
        model.eval()(graph.x, a)  # fills the cache with the first graph
        torch.testing.assert_close(model(graph.x, b), fresh(graph.x, b), rtol=0, atol=0)
        torch.testing.assert_close(model(graph.x, a), fresh(graph.x, a), rtol=0, atol=0)


def test_content_cache_hits_only_for_equal_contents():
    from robustbench_geo.models.tensor_cache import ContentCache

    calls = []

    def compute(t):
        calls.append(1)
        return t.sum()

    cache = ContentCache()
    ei = torch.tensor([[0, 1], [1, 0]])
    assert cache.get((ei,), compute) == 2 and cache.get((ei.clone(),), compute) == 2 and len(calls) == 1
    ei[0, 0] = 1  # an in-place change is seen (the cache holds its own copy)
    assert cache.get((ei,), compute) == 3 and len(calls) == 2
    assert cache.get((ei,), compute, "extra") == 3 and len(calls) == 3
    assert cache.get((ei.int(),), compute) == 3 and len(calls) == 4  # another dtype
    assert copy.deepcopy(cache)._entry is None and pickle.loads(pickle.dumps(cache))._entry is None
