"""Omniglot few-shot: the data, the episode sampler, the GNN, a training step and the episode attacks."""

import pytest
import torch

from robustbench_geo.data.omniglot import load_omniglot, load_one_shot_runs, sample_episodes
from robustbench_geo.models import create_model


def test_omniglot_subsets_and_heldout_split(omniglot_small1):
    c = omniglot_small1
    assert c.images.shape == (2720, 1, 28, 28) and c.num_characters == 136
    assert c.alphabets == ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
    assert c.images.mean() < 0.2 and c.images.max() == 1.0  # ink is 1 on a 0 background
    held = load_omniglot("small2-heldout")
    assert held.alphabets == ["Japanese_(katakana)", "Sanskrit", "Tagalog"] and held.num_characters == 106
    assert not set(held.alphabets) & set(c.alphabets)


def test_one_shot_runs():
    runs = load_one_shot_runs()
    assert len(runs) == 20
    r = runs[0]
    assert r["support"].shape == (20, 1, 28, 28) and r["query"].shape == (20, 1, 28, 28)
    assert sorted(r["query_labels"].tolist()) == list(range(20))  # one test image per class


@pytest.mark.parametrize("rotations", [False, True])
def test_episode_sampler(omniglot_small1, rotations):
    c = omniglot_small1
    ep = sample_episodes(c, 5, 3, 40, torch.Generator().manual_seed(0), rotations=rotations)
    again = sample_episodes(c, 5, 3, 40, torch.Generator().manual_seed(0), rotations=rotations)
    assert torch.equal(ep.support, again.support) and torch.equal(ep.query_labels, again.query_labels)
    assert ep.support.shape == (40, 15, 1, 28, 28) and ep.query.shape == (40, 1, 28, 28)
    assert ep.support_labels[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    # the classes of an episode are distinct
    keys = ep.classes[..., 0] * 4 + ep.classes[..., 1]
    assert all(len(set(k.tolist())) == 5 for k in keys)
    assert (ep.classes[..., 1] > 0).any() == rotations
    imgs = c.images.flatten(1)
    for e in range(40):
        n, turns = ep.classes[e, ep.query_labels[e]].tolist()
        drawings = c.images[c.char == n]
        rot = torch.rot90(drawings, turns, dims=(-2, -1)).flatten(1)
        q = ep.query[e].flatten()
        assert (rot == q).all(1).any()  # the query is a drawing of its class (rotated as the class)
        shots = ep.support[e, ep.query_labels[e] * 3: ep.query_labels[e] * 3 + 3].flatten(1)
        assert (rot[:, None] == shots[None]).all(-1).any(0).all()  # the shots too
        assert not (shots == q).all(1).any()  # but the query is not one of them
    del imgs


def test_gnn_is_permutation_invariant_in_the_support(omniglot_small1):
    torch.manual_seed(0)
    model = create_model("fewshot_gnn", num_classes=5).eval()
    ep = sample_episodes(omniglot_small1, 5, 2, 3, torch.Generator().manual_seed(1))
    perm = torch.randperm(10)
    with torch.no_grad():
        a = model.episode(ep.query, ep.support, ep.support_labels)
        b = model.episode(ep.query, ep.support[:, perm], ep.support_labels[:, perm])
        # forward() with a stored support set is the same computation
        model.set_support(ep.support[0], ep.support_labels[0])  # embeds the support set once (eval mode)
        c = model(ep.query[:1])
    model.train()
    model(ep.query)  # updates BN statistics: the cached support embedding is stale and must not be used
    model.eval()
    with torch.no_grad():
        fresh = model.episode(ep.query[:1], ep.support[:1], ep.support_labels[:1])
        torch.testing.assert_close(model(ep.query[:1]), fresh, atol=1e-5, rtol=1e-5)
        model.set_support(None)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, a[:1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"labels: expected episode labels in \[0, 4\]"):
        model.set_support(ep.support[0], ep.support_labels[0] + 3)


def test_training_steps_reduce_the_loss(omniglot_small1):
    from robustbench_geo.fewshot_training import train_fewshot

    torch.manual_seed(0)
    model = create_model("fewshot_gnn", num_classes=3, nf=32)
    hist = train_fewshot(model, omniglot_small1, n_way=3, k_shot=1, iterations=2, batch_episodes=4, progress=False)
    assert [h["iteration"] for h in hist] == [2] and 0 <= hist[0]["train_accuracy"] <= 1
    # a few Adam steps on one fixed batch of episodes lower its loss (train mode, as in training)
    ep = sample_episodes(omniglot_small1, 3, 1, 8, torch.Generator().manual_seed(5), rotations=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(model.episode(ep.query, ep.support, ep.support_labels), ep.query_labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    with pytest.raises(ValueError, match="n_way: expected the model's 3 ways, got 5"):
        train_fewshot(model, omniglot_small1, n_way=5, iterations=1, progress=False)


@pytest.mark.parametrize("attack,target,params", [
    ("grid", "query", {"angle_steps": 5, "shift_steps": 1}),
    ("scale", "support", {"steps": 4, "refine_steps": 2}),
    ("adjacency", "query", {"max_edges": 2, "scope": "all"}),
])
def test_episode_attacks_are_verified(omniglot_small1, attack, target, params):
    from robustbench_geo.evaluation.fewshot import evaluate_fewshot_attack

    torch.manual_seed(0)
    model = create_model("fewshot_gnn", num_classes=3, nf=32).eval()
    ep = sample_episodes(omniglot_small1, 3, 1, 6, torch.Generator().manual_seed(2))
    out = evaluate_fewshot_attack(model, ep, attack, params, target=target, progress=False)
    m = out.metrics
    assert m["verification_mismatches"] == 0 and m["n"] == 6
    assert m["robust_accuracy"] <= m["clean_accuracy"]
    assert out.rows[0]["adv_pred"] in range(3) and model.support is None
    if attack == "adjacency":
        assert all(len(r["deleted_edges"]) <= 2 for r in out.rows)
        assert all(len(r["deleted_edges"]) == 0 for r in out.rows if r["clean_pred"] != r["label"])


def test_adjacency_deletion_changes_the_graph():
    from robustbench_geo.models.fewshot_gnn import LearnedAdjacency

    torch.manual_seed(0)
    adj = LearnedAdjacency(4, 8)
    x = torch.rand(1, 4, 4)
    mask = torch.ones(1, 4, 4)
    mask[0, 0, 1] = mask[0, 1, 0] = 0
    a, b = adj(x), adj(x, mask)
    assert torch.allclose(a.sum(-1), torch.ones(1, 4)) and torch.allclose(b.sum(-1), torch.ones(1, 4))
    assert a[0].diagonal().abs().max() == 0 and b[0, 0, 1] == 0 and b[0, 1, 0] == 0 and a[0, 0, 1] > 0


def test_support_view_is_the_episode_with_the_image_replaced():
    from robustbench_geo.attacks.fewshot import SupportView

    torch.manual_seed(0)
    model = create_model("fewshot_gnn", num_classes=5, nf=32).eval()
    s, lab, q = torch.rand(5, 1, 28, 28), torch.arange(5), torch.rand(1, 28, 28)
    view = SupportView(model, q, s, lab, 2)
    assert not view.training
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    sup = s.expand(3, 5, 1, 28, 28).clone()
    sup[:, 2] = x.detach()
    want = model.episode(q.expand(3, 1, 28, 28), sup, lab.expand(3, 5))
    got = view(x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    (grad,) = torch.autograd.grad(got[:, 0].sum(), x)
    assert grad.abs().sum() > 0  # the attacked support image drives the query's logits
