"""Evaluation on few-shot episodes: an image attack on the query or a support image, or the
adjacency attack on the learned graph (threat models: :mod:`robustbench_geo.attacks.fewshot`).

One query per episode; an episode is *fooled* when the query's predicted label is wrong. Every
result is re-verified with our own forward pass of the attacked episode.
"""

from __future__ import annotations

import time

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from robustbench_geo._version import versions
from robustbench_geo.attacks.base import check_params, create_attack, get_attack
from robustbench_geo.attacks.fewshot import ADJACENCY, TARGETS, AdjacencyAttack, SupportView
from robustbench_geo.data.omniglot import Episodes
from robustbench_geo.evaluation.outcome import AttackOutcome, summarise
from robustbench_geo.models.predict import fresh_copy, model_device


def _episode_logits(model, query, support, labels, mask=None):
    model.eval()
    with torch.inference_mode():
        return model.episode(query, support, labels, mask)


def evaluate_fewshot_attack(model: nn.Module, episodes: Episodes, attack: str, params: dict | None = None, *,
                            target: str = "query", seed: int = 0, progress: bool = True) -> AttackOutcome:
    """Attack every episode and summarise (metrics as the image runner: clean/robust accuracy, success rate).

    Args:
        model: a few-shot model with ``episode(query, support, support_labels, edge_mask=None)``.
        episodes: the episodes (one query each).
        attack: a registered image attack (with ``target``) or ``"adjacency"``.
        params: attack parameters; target: ``query`` or ``support`` (image attacks only).
    """
    params = dict(params or {})
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {', '.join(TARGETS)}, got {target!r}")
    if attack == "adjacency":
        atk_params = filled = ADJACENCY.fill(params)
    else:
        entry = get_attack(attack)
        if entry.domain != "image":
            raise ValueError(f"attack {attack!r} is a {entry.domain} attack; few-shot episodes take image attacks or 'adjacency'")
        params = check_params(entry, params)
        if "seed" in entry.params:
            params["seed"] = seed
        filled = {**entry.defaults(), **params}
    model.eval()
    pristine = fresh_copy(model)  # before the attacks run: each episode is re-verified on a new copy of it
    dev = model_device(model)
    k_shot = int((episodes.support_labels[0] == 0).sum())
    rows, fw, mismatches, t0 = [], 0, 0, time.perf_counter()
    correct_all, attacked_all = [], []
    for e in tqdm(range(len(episodes)), desc=f"{attack} ({target})", disable=not progress, unit="episode"):
        q, s, lab = episodes.query[e:e + 1].to(dev), episodes.support[e].to(dev), episodes.support_labels[e].to(dev)
        y = episodes.query_labels[e:e + 1].to(dev)
        check = fresh_copy(pristine)
        clean = _episode_logits(check, q, s[None], lab[None]).argmax(1)
        row = {"episode": e, "label": int(y), "clean_pred": int(clean)}
        if attack == "adjacency":
            res = AdjacencyAttack(model, **atk_params)(q, s[None], lab[None], y)
            adv_pred = _episode_logits(check, q, s[None], lab[None], res["mask"][None]).argmax(1)
            claimed, fw = res["success"], fw + res["forward_passes"]
            row["deleted_edges"] = res["deleted"]
        else:
            slot = int(y) * k_shot
            view = SupportView(model, q[0], s, lab, slot) if target == "support" else None
            if view is None:
                model.set_support(s, lab)
            try:
                atk = create_attack(attack, view if view is not None else model, **params)
                x = s[slot:slot + 1] if target == "support" else q
                res = atk(x, y)
            finally:
                model.set_support(None)
            if target == "support":
                s_adv = s.clone()
                s_adv[slot] = res.adversarial[0]
                adv_pred = _episode_logits(check, q, s_adv[None], lab[None]).argmax(1)
            else:
                adv_pred = _episode_logits(check, res.adversarial, s[None], lab[None]).argmax(1)
            claimed, fw = bool(res.success[0]), fw + res.forward_passes
            row.update({k: v for k, v in res.flat_params()[0].items()})
        fooled = bool(adv_pred.item() != y.item())
        mismatches += int(claimed != fooled)
        ok = bool(clean.item() == y.item())
        correct_all.append(ok)
        attacked_all.append(not fooled)
        row.update({"adv_pred": int(adv_pred), "success": ok and fooled})
        rows.append(row)
    n = len(episodes)
    metrics = {**summarise(torch.tensor(correct_all, dtype=torch.bool), torch.tensor(attacked_all, dtype=torch.bool)),
               "forward_passes": float(fw), "verification_mismatches": float(mismatches), "n": float(n)}
    config = {"attack": attack, "target": target if attack != "adjacency" else "adjacency", "params": filled,
              "seed": seed, "episodes": n, "n_way": int(episodes.support_labels.max()) + 1, "k_shot": k_shot,
              "versions": versions()}
    return AttackOutcome(attack=attack, params=filled, seed=seed, metrics=metrics, rows=rows,
                         seconds=time.perf_counter() - t0, config=config)
