"""Run an image attack over a dataset, re-verify it, and summarise it as an :class:`AttackOutcome`.

The runner never trusts the attack's bookkeeping: clean predictions come from its own forward
pass of the clean images and adversarial predictions from its own forward pass of the returned
images, both in eval mode, batched independently of the attack.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from robustbench_geo._version import versions
from robustbench_geo.attacks.base import check_params, create_attack, get_attack
from robustbench_geo.evaluation.outcome import AttackOutcome, summarise
from robustbench_geo.models.predict import fresh_copy, model_device, on_device, predict_logits

#: the number of example pairs kept in ``artefacts["examples"]``
MAX_EXAMPLES = 16


def _batch_seed(seed: int, start: int) -> int:
    """A distinct, reproducible seed per batch (depends on the attack seed and the batch start)."""
    return (seed * 1_000_003 + start) % (2 ** 63 - 1)


def evaluate_image_attack(model, dataset, attack: str, params: dict, *, seed: int = 0, batch_size: int = 256,
                          device=None, progress: bool = True, n: int | None = None) -> AttackOutcome:
    """Attack every image of ``dataset`` and summarise.

    Args:
        model: image classifier ``(B, C, H, W)`` in ``[0, 1]`` -> logits.
        dataset: :class:`~robustbench_geo.data.base.ImageDataset` (all its images are attacked), or
            anything with ``images`` ``(N, C, H, W)`` in ``[0, 1]`` and ``labels`` ``(N,)``.
        attack: registered attack name (``grid``, ``art:ProjectedGradientDescent``, ...).
        params: attack parameters (``rbgeo list attacks``); defaults are filled in and recorded.
        seed: attack seed (batch ``i`` uses a seed derived from it and the batch start).
        batch_size: images per attack call.
        device: where the model runs; ``None`` (default): where it is. A model on another device is
            evaluated on a copy there; the caller's model is never moved.
        n: the number of images the caller selected (recorded by sweeps; must equal ``len(dataset)``).

    Returns:
        :class:`AttackOutcome` with metrics ``clean_accuracy``, ``robust_accuracy`` (correct and
        not fooled, over all ``n``), ``success_rate`` (fooled among the initially correct),
        ``forward_passes``, ``backward_passes`` and attack-specific numbers; one row per image;
        up to 16 example pairs (fooled ones first).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive number of images, got {batch_size}")
    entry = get_attack(attack)
    params = check_params(entry, params)
    if "seed" in entry.params:
        params["seed"] = seed
    filled = {**entry.defaults(), **params}
    model = on_device(model, device).eval()
    pristine = fresh_copy(model)  # before the attack's forward passes: what re-verification copies
    device = model_device(model)
    atk = create_attack(attack, model, **params)
    images, labels = dataset.images, dataset.labels
    if n is not None and n != images.shape[0]:
        raise ValueError(f"n: expected the number of images in the dataset ({images.shape[0]}), got {n}")
    n = images.shape[0]
    t0 = time.perf_counter()
    rows, adv_all, results = [], [], []
    fw = bw = 0
    extra_sums: dict[str, float] = {}
    bar = tqdm(total=n, desc=f"{attack}", disable=not progress, unit="img")
    for s in range(0, n, batch_size):
        x, y = images[s:s + batch_size].to(device), labels[s:s + batch_size].to(device)
        res = atk(x, y, seed=_batch_seed(seed, s)) if "seed" in entry.params else atk(x, y)
        fw += res.forward_passes
        bw += res.backward_passes
        adv_all.append(res.adversarial.detach().cpu())
        results.append(res)
        for k, v in res.info.items():
            if isinstance(v, (int, float)):
                extra_sums[k] = extra_sums.get(k, 0.0) + float(v)
        bar.update(x.shape[0])
    bar.close()
    seconds = time.perf_counter() - t0
    adv = torch.cat(adv_all) if adv_all else images[:0]
    if adv.shape != images.shape:
        raise ValueError(f"attack {attack!r} returned images of shape {tuple(adv.shape)}, expected {tuple(images.shape)}")
    # independent verification: our own forward passes of the clean and the returned images
    # (each on a new copy of the model as it was before the attack, so no state the attack left is read)
    clean_pred = predict_logits(fresh_copy(pristine), images).argmax(1)
    adv_pred = predict_logits(fresh_copy(pristine), adv).argmax(1)
    correct = clean_pred == labels
    fooled = adv_pred != labels
    claimed = torch.cat([r.success.cpu() for r in results]) if results else fooled
    loss = torch.cat([r.loss.detach().float().cpu() for r in results]) if results else torch.zeros(0)
    flat = [p for r in results for p in r.flat_params()]
    for i in range(n):
        rows.append({"index": i, "label": int(labels[i]), "clean_pred": int(clean_pred[i]), "adv_pred": int(adv_pred[i]),
                     "success": bool(fooled[i] and correct[i]), "loss": float(loss[i]), **flat[i]})
    metrics = {
        **summarise(correct, ~fooled),
        "forward_passes": float(fw), "backward_passes": float(bw),
        "verification_mismatches": float(int((claimed != fooled).sum())),
        "max_pixel_range_violation": float(max(0.0, (adv.max().item() - 1) if n else 0.0, (-adv.min().item()) if n else 0.0)),
        "n": float(n),
    }
    for k, v in extra_sums.items():
        metrics[k] = v / max(1, len(results))
    per_sample_means = _mean_info(results, correct & fooled)
    metrics.update(per_sample_means)
    artefacts = {"examples": None}
    if results and all(isinstance(r.info.get("min_fooling_budget"), torch.Tensor) for r in results):
        smallest = torch.cat([r.info["min_fooling_budget"].detach().double().cpu() for r in results])
        smallest = torch.where(fooled, smallest, torch.full_like(smallest, float("inf")))  # as re-verified
        artefacts["budget_curve"] = {"unit": str(results[0].info.get("budget_unit", "budget")),
                                     "min_fooling_budget": smallest, "correct": correct.clone()}
    first = results[0] if results else None
    config = {
        "attack": attack, "params": filled, "seed": seed, "n": n, "batch_size": batch_size, "device": str(device),
        "warp": first.warp if first is not None and first.kind != "none" else None,
        "kind": first.kind if first is not None else None,
        "dataset": getattr(dataset, "name", None), "dataset_meta": getattr(dataset, "meta", {}),
        "versions": versions(),
    }
    artefacts["examples"] = _examples(images, adv, labels, clean_pred, adv_pred, correct & fooled, flat)
    return AttackOutcome(attack=attack, params=filled, seed=seed, metrics=metrics, rows=rows,
                         artefacts=artefacts, seconds=seconds, config=config)


def budget_curve(correct: torch.Tensor, min_fooling_budget: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy at every budget, in one pass, from each image's smallest fooling budget.

    An image counts as robust at budget ``r`` when it is correctly classified and no transform of
    size ``<= r`` fooled it (``min_fooling_budget > r``; ``inf`` where none was found, ``0`` for a
    misclassified clean image). The curve is a step function that drops at each image's budget.

    Args:
        correct: ``(n,)`` bool, correct on the clean image.
        min_fooling_budget: ``(n,)`` smallest fooling budget per image (the attack's unit).

    Returns:
        ``(budgets, accuracy)``: budget ``0`` and every distinct finite budget of a correctly classified
        image, increasing, and the accuracy in ``[0, 1]`` at each (float64 tensors).
    """
    correct, b = correct.bool().cpu(), min_fooling_budget.double().cpu()
    if correct.shape != b.shape or correct.dim() != 1:
        raise ValueError(f"expected two (n,) tensors of one shape, got {tuple(correct.shape)} and {tuple(b.shape)}")
    n = correct.numel()
    finite = b[correct & b.isfinite()]
    budgets = torch.unique(torch.cat([torch.zeros(1, dtype=torch.float64), finite]))
    if n == 0:
        return budgets, torch.zeros_like(budgets)
    fooled_at = torch.searchsorted(budgets, finite, right=False)  # index of the first budget >= the image's
    drops = torch.bincount(fooled_at, minlength=budgets.numel()).cumsum(0)
    return budgets, (int(correct.sum()) - drops).double() / n


def _mean_info(results, success: torch.Tensor) -> dict[str, float]:
    """Means of per-sample ``info`` tensors (e.g. ``flow_px``) over successful samples: ``mean_<name>``."""
    out = {}
    if not results:
        return out
    for key in results[0].info:
        if key == "min_fooling_budget":  # summarised by artefacts["budget_curve"] instead
            continue
        vals = [r.info[key] for r in results]
        if all(isinstance(v, torch.Tensor) and v.dim() == 1 for v in vals):
            v = torch.cat([t.detach().float().cpu() for t in vals])
            keep = success & v.isfinite()  # an image the attack gave up on but the re-verification calls fooled
            out[f"mean_{key}"] = float(v[keep].mean()) if keep.any() else 0.0
    return out


def _examples(images, adv, labels, clean_pred, adv_pred, success, flat) -> dict:
    order = torch.cat([success.nonzero().squeeze(1), (~success).nonzero().squeeze(1)])[:MAX_EXAMPLES]
    idx = order.tolist()
    return {"clean": images[order].clone(), "adversarial": adv[order].clone(), "label": [int(labels[i]) for i in idx],
            "clean_pred": [int(clean_pred[i]) for i in idx], "adv_pred": [int(adv_pred[i]) for i in idx],
            "params": [flat[i] for i in idx], "index": idx}
