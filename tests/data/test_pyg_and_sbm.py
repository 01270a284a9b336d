"""``GraphDataset.to_pyg`` / ``from_pyg`` and the generated ``sbm`` graphs."""

import pytest
import torch
from torch_geometric.data import Data

from robustbench_geo.data import dataset_info, load_dataset
from robustbench_geo.data.base import GraphDataset


def _same(a: GraphDataset, b: GraphDataset) -> None:
    assert (a.name, a.split, a.meta) == (b.name, b.split, b.meta)
    for k in ("x", "edge_index", "y", "idx_train", "idx_val", "idx_test"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert a.split_hash == b.split_hash


def test_to_pyg_masks_mark_the_split_and_from_pyg_gives_the_graph_back(cora):
    assert not torch.equal(cora.idx_test, cora.idx_test.sort().values)  # the Pro-GNN split is not sorted
    data = cora.to_pyg()
    assert isinstance(data, Data) and data.num_nodes == cora.num_nodes
    for part in ("train", "val", "test"):
        mask = getattr(data, f"{part}_mask")
        assert mask.dtype == torch.bool and mask.shape == (cora.num_nodes,)
        idx = getattr(cora, f"idx_{part}")
        assert int(mask.sum()) == len(idx) and bool(mask[idx].all())  # exactly the split's nodes
    _same(GraphDataset.from_pyg(data), cora)


def test_from_pyg_of_a_plain_data_takes_masks_in_node_order_and_canonicalises_edges():
    # a directed edge list with a duplicate and a self-loop, overlapping masks, as a user may hand over
    data = Data(x=torch.rand(5, 3), edge_index=torch.tensor([[0, 1, 1, 3, 2], [1, 2, 2, 3, 4]]),
                y=torch.tensor([0, 1, 0, 1, 0]), train_mask=torch.tensor([True, False, True, False, False]),
                val_mask=torch.tensor([False, True, False, False, False]),
                test_mask=torch.tensor([False, True, True, True, True]))
    g = GraphDataset.from_pyg(data)
    assert (g.name, g.split) == ("graph", "masks")
    assert g.edge_index.tolist() == [[0, 1, 1, 2, 2, 4], [1, 0, 2, 1, 4, 2]]
    assert g.idx_test.tolist() == [1, 2, 3, 4] and g.idx_train.tolist() == [0, 2]
    back = g.to_pyg()
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(back, f"{part}_mask"), getattr(data, f"{part}_mask"))
    # an index order that disagrees with the masks (an edited mask) is ignored: the masks decide
    data.idx_test = torch.tensor([4, 3, 2])
    assert GraphDataset.from_pyg(data).idx_test.tolist() == [1, 2, 3, 4]
    assert GraphDataset.from_pyg(data, name="mine", split="s").name == "mine"


def test_sbm_spec_is_seeded_and_has_the_requested_shape():
    a = load_dataset("sbm:nodes=600,classes=4,avg_degree=10,features=32", seed=3)
    b = load_dataset("sbm", nodes=600, classes=4, avg_degree=10, features=32, seed=3)
    c = load_dataset("sbm:nodes=600,classes=4,avg_degree=10,features=32", seed=4)
    _same(a, b)
    assert not torch.equal(a.edge_index, c.edge_index)
    assert (a.num_features, a.num_classes, a.split) == (32, 4, "random")
    assert dataset_info("sbm:classes=4").num_classes == 4 and dataset_info("sbm").num_classes == 10
    ei = a.edge_index
    assert (ei[0] != ei[1]).all()
    lin = ei[0] * a.num_nodes + ei[1]
    assert torch.equal(lin, torch.sort(torch.unique(lin)).values)  # sorted, no duplicates
    assert torch.equal(torch.sort(ei[1] * a.num_nodes + ei[0]).values, lin)  # symmetric
    assert abs(2 * a.num_edges / a.num_nodes - 10) < 1.0  # the average degree asked for
    # homophily 0.35 by default: far above the 1/4 of a graph without class structure
    same = (a.y[ei[0]] == a.y[ei[1]]).float().mean()
    assert 0.3 < same < 0.4
    # the LCC is connected: every node reaches node 0
    import scipy.sparse as sp
    adj = sp.coo_matrix((torch.ones(ei.shape[1]).numpy(), (ei[0].numpy(), ei[1].numpy())), shape=(a.num_nodes,) * 2)
    assert sp.csgraph.connected_components(adj)[0] == 1
    # the split: stratified 10/10/80, disjoint
    parts = [set(i.tolist()) for i in (a.idx_train, a.idx_val, a.idx_test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert abs(len(a.idx_train) - 0.1 * a.num_nodes) <= 4 and abs(len(a.idx_test) - 0.8 * a.num_nodes) <= 4
    # class-conditional features: a node's class is the one whose nodes share most of its features
    proto = torch.stack([a.x[a.y == k].mean(0) for k in range(4)])
    assert (torch.argmax(a.x @ proto.T, 1) == a.y).float().mean() > 0.6


def test_sbm_bad_options_name_the_option():
    with pytest.raises(ValueError, match="nodes"):
        load_dataset("sbm:nodes=1")
    with pytest.raises(ValueError, match="homophily"):
        load_dataset("sbm:homophily=2")
    with pytest.raises(ValueError, match="unknown options"):
        load_dataset("sbm:node=100")
    with pytest.raises(ValueError, match="one split"):
        load_dataset("sbm:public")


def test_sbm_default_graph_is_the_documented_one():
    g = load_dataset("sbm")  # the module docstring's table (seed 0): a changed generator changes this
    assert (g.num_nodes, g.num_edges, g.num_features, g.num_classes) == (1000, 9719, 128, 10)
