"""Episodic training and evaluation of few-shot models (N-way K-shot, one query per episode).

Protocol (Garcia & Bruna 2018, scaled to what the offline Omniglot subsets hold):

* training episodes are drawn from a :class:`~robustbench_geo.data.omniglot.CharacterSet` with
  rotations by multiples of 90 degrees as new classes (4 x the characters), a fresh seeded batch of
  ``batch_episodes`` episodes per iteration; Adam (``lr`` 1e-3, weight decay 1e-6), learning rate
  halved every ``lr_halve_every`` iterations; cross-entropy on the query's logits;
* evaluation uses ``episodes`` seeded episodes from *held-out* characters (no rotations) and reports
  accuracy with a 95 % normal-approximation confidence interval; the same seed gives the same
  episodes to every model.

Everything runs deterministically on the CPU for a fixed seed.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from robustbench_geo.data.omniglot import CharacterSet, Episodes, sample_episodes
from robustbench_geo.models.predict import model_device


def train_fewshot(model: nn.Module, chars: CharacterSet, *, n_way: int = 5, k_shot: int = 1, iterations: int = 2000,
                  batch_episodes: int = 32, lr: float = 1e-3, weight_decay: float = 1e-6, lr_halve_every: int = 1000,
                  rotations: bool = True, seed: int = 0, progress: bool = True) -> list[dict]:
    """Train ``model`` (with ``episode(query, support, support_labels)``) in place; returns per-100-iteration history."""
    from robustbench_geo.training import seed_everything

    if getattr(model, "n_way", n_way) != n_way:
        raise ValueError(f"n_way: expected the model's {model.n_way} ways, got {n_way}")
    seed_everything(seed)
    dev = model_device(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, lr_halve_every), gamma=0.5)
    g = torch.Generator().manual_seed(seed)
    history, loss_acc, correct, seen, t0 = [], 0.0, 0, 0, time.perf_counter()
    bar = tqdm(range(iterations), desc=f"{n_way}-way {k_shot}-shot", disable=not progress, unit="it")
    model.train()
    for it in bar:
        ep = sample_episodes(chars, n_way, k_shot, batch_episodes, g, rotations=rotations)
        logits = model.episode(ep.query.to(dev), ep.support.to(dev), ep.support_labels.to(dev))
        y = ep.query_labels.to(dev)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_acc += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        if (it + 1) % 100 == 0 or it + 1 == iterations:
            rec = {"iteration": it + 1, "loss": loss_acc / seen, "train_accuracy": correct / seen,
                   "seconds": time.perf_counter() - t0, "lr": sched.get_last_lr()[0]}
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['train_accuracy']:.3f}")
            loss_acc, correct, seen = 0.0, 0, 0
    model.eval()
    return history


def test_episodes(chars: CharacterSet, n_way: int, k_shot: int, episodes: int = 1000, seed: int = 0) -> Episodes:
    """The seeded evaluation episodes (no rotations): the same for every model given the seed."""
    return sample_episodes(chars, n_way, k_shot, episodes, torch.Generator().manual_seed(10_000 + seed))


@torch.inference_mode()
def episode_logits(model: nn.Module, ep: Episodes, batch: int = 100, edge_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Query logits ``(E, N)`` of ``ep`` in eval mode, batched (CPU result)."""
    model.eval()
    dev = model_device(model)
    outs = []
    for i in range(0, len(ep), batch):
        sl = slice(i, i + batch)
        m = None if edge_mask is None else edge_mask[sl].to(dev)
        outs.append(model.episode(ep.query[sl].to(dev), ep.support[sl].to(dev), ep.support_labels[sl].to(dev), m).cpu())
    return torch.cat(outs)


def accuracy_ci(correct: torch.Tensor) -> dict:
    """Mean of a boolean vector with a 95 % normal-approximation interval (half-width)."""
    n = correct.numel()
    acc = correct.float().mean().item() if n else float("nan")
    half = 1.96 * math.sqrt(max(acc * (1 - acc), 0.0) / n) if n else float("nan")
    return {"accuracy": acc, "ci95": half, "n": n}


def evaluate_fewshot(model: nn.Module, chars: CharacterSet, n_way: int, k_shot: int, episodes: int = 1000,
                     seed: int = 0) -> dict:
    """Accuracy on seeded held-out episodes: ``{"accuracy", "ci95", "n", "n_way", "k_shot", "characters", "seed"}``."""
    ep = test_episodes(chars, n_way, k_shot, episodes, seed)
    pred = episode_logits(model, ep).argmax(1)
    return {**accuracy_ci(pred == ep.query_labels), "n_way": n_way, "k_shot": k_shot, "seed": seed,
            "characters": chars.num_characters, "subset": chars.meta.get("subset")}


def evaluate_one_shot_runs(model: nn.Module, runs: list[dict]) -> dict:
    """Lake et al.'s 20 one-shot 20-way runs (400 queries) for a 20-way model."""
    if getattr(model, "n_way", 20) != 20:
        raise ValueError(f"model: expected a 20-way model for the 20-way runs, got {model.n_way}-way")
    correct = []
    for run in runs:
        q = run["query"]
        ep = Episodes(run["support"].unsqueeze(0).expand(len(q), -1, -1, -1, -1), torch.arange(20).expand(len(q), -1),
                      q, run["query_labels"], torch.zeros(len(q), 20, 2, dtype=torch.long))
        correct.append(episode_logits(model, ep).argmax(1) == run["query_labels"])
    return {**accuracy_ci(torch.cat(correct)), "runs": len(runs)}
