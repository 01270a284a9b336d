"""The test-time majority vote as a model: its prediction, its randomness, and the attacks run against it."""

import copy

import pytest
import torch
import torch.nn.functional as F

from robustbench_geo.attacks import create_attack
from robustbench_geo.evaluation import evaluate_attack
from robustbench_geo.models.predict import fresh_copy
from robustbench_geo.models.vote import MajorityVote


def expected_vote(member_logits: torch.Tensor) -> torch.Tensor:
    """Loop-based majority of member predictions ``(V, B, K)``; ties go to the higher mean probability."""
    preds, probs = member_logits.argmax(2), member_logits.softmax(2).mean(0)
    out = []
    for b in range(preds.shape[1]):
        counts = {}
        for v in range(preds.shape[0]):
            counts[int(preds[v, b])] = counts.get(int(preds[v, b]), 0) + 1
        top = max(counts.values())
        tied = [c for c, n in counts.items() if n == top]
        out.append(max(tied, key=lambda c: float(probs[b, c])))
    return torch.tensor(out)


@pytest.mark.parametrize("randomness", ["fresh", "fixed"])
@pytest.mark.parametrize("votes", [1, 4, 7])
def test_prediction_is_the_majority_of_the_members(tiny_model, mnist_small, votes, randomness):
    x = mnist_small.images[:32]
    vote = MajorityVote(tiny_model, votes=votes, seed=3, randomness=randomness)
    with torch.no_grad():
        out = vote(x)
        members = vote.members(x, vote.draws(32, 0))
    assert torch.equal(out.argmax(1), expected_vote(members))
    assert torch.equal(out.floor().sum(1), torch.full((32,), float(votes)))
    if votes == 7:  # the members disagree on some images: the vote is not the plain model
        assert bool((members.argmax(2) != members.argmax(2)[:1]).any())


def _grad(model, x, y):
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    return x.grad


def test_fixed_randomness_makes_gradients_deterministic(tiny_model, mnist_small):
    x, y = mnist_small.images[:16], mnist_small.labels[:16]
    fresh_a, fresh_b = MajorityVote(tiny_model, seed=5), MajorityVote(tiny_model, seed=5)
    g1, g2 = _grad(fresh_a, x, y), _grad(fresh_b, x, y)
    assert torch.equal(g1, g2) and g1.abs().sum() > 0  # same seed, same call: the same gradient
    assert not torch.equal(_grad(fresh_a, x, y), g1)  # the next call of a deployed vote draws anew
    assert not torch.equal(_grad(MajorityVote(tiny_model, seed=6), x, y), g1)
    fixed = MajorityVote(tiny_model, seed=5, randomness="fixed")
    first = _grad(fixed, x, y)
    assert torch.equal(_grad(fixed, x, y), first) and torch.equal(_grad(fixed, x, y), first)


def test_gradient_attack_on_the_vote_is_reproducible_by_seed(tiny_model, mnist_small):
    x, y = mnist_small.images[:16], mnist_small.labels[:16]
    runs = []
    for _ in range(2):
        vote = MajorityVote(tiny_model, votes=4, seed=1)
        runs.append(create_attack("affine_pgd", vote, steps=4, restarts=1)(x, y))
    assert torch.equal(runs[0].adversarial, runs[1].adversarial)
    assert torch.equal(runs[0].success, runs[1].success)


@pytest.mark.parametrize("attack,params", [("grid", {"angle_steps": 5, "shift_steps": 3}), ("worst_of_k", {"k": 4})])
def test_grid_and_worst_of_k_are_scored_on_the_vote_as_deployed(tiny_model, mnist_small, attack, params):
    vote = MajorityVote(tiny_model, votes=4, seed=2)
    ds = mnist_small
    out = evaluate_attack(vote, ds, attack, params, progress=False)
    # the reported accuracy is the runner's own pass of the deployed vote (fresh draws) over the returned images
    deployed = fresh_copy(MajorityVote(tiny_model, votes=4, seed=2))
    with torch.no_grad():
        clean = deployed(ds.images).argmax(1) == ds.labels
    assert out.metrics["clean_accuracy"] == pytest.approx(float(clean.float().mean()))
    assert out.metrics["robust_accuracy"] <= out.metrics["clean_accuracy"]
    assert out.config["n"] == len(ds)


def test_manifool_on_the_fixed_vote_returns_transforms_that_fool_it(tiny_model, mnist_small):
    x, y = mnist_small.images[:12], mnist_small.labels[:12]
    vote = MajorityVote(tiny_model, votes=4, seed=0, randomness="fixed")
    res = create_attack("manifool", vote, steps=20)(x, y)
    assert res.success.any()
    with torch.no_grad():
        pred = copy.deepcopy(vote)(res.replay(x).clamp(0, 1)).argmax(1)
    assert torch.equal(pred != y, res.success)


def test_bad_arguments(tiny_model):
    with pytest.raises(KeyError, match="Valid randomness modes: fixed, fresh"):
        MajorityVote(tiny_model, randomness="sometimes")
    with pytest.raises(ValueError, match="votes"):
        MajorityVote(tiny_model, votes=0)
