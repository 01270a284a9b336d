"""The ``none`` attack's outcome: clean predictions only (robust accuracy = clean accuracy)."""

from __future__ import annotations

import time

import torch

from robustbench_geo._version import versions
from robustbench_geo.data.base import GraphDataset
from robustbench_geo.evaluation.outcome import AttackOutcome, summarise
from robustbench_geo.models.predict import graph_logits, on_device, predict_logits


def clean_outcome(model, dataset, *, seed: int = 0, device=None, batch_size: int = 512) -> AttackOutcome:
    """Clean accuracy as an :class:`AttackOutcome` of the attack ``none``.

    Args:
        model: image classifier or graph model.
        dataset: images (every image is evaluated) or a graph (its test nodes).
        seed: recorded only (nothing is random).
        device: where the model runs; ``None``: where it is (the caller's model is never moved).
        batch_size: images per forward pass (compute only).

    Returns:
        Metrics ``clean_accuracy``, ``robust_accuracy`` (the same) and ``n`` (NaN accuracies for
        ``n = 0``); one row per image or test node.
    """
    t0 = time.perf_counter()
    model = on_device(model, device)
    if isinstance(dataset, GraphDataset):
        idx = dataset.idx_test
        pred = graph_logits(model, dataset).argmax(1)[idx]
        labels = dataset.y[idx]
        config = {"split": dataset.split, "split_hash": dataset.split_hash, "nodes": "test"}
    else:
        idx = torch.arange(len(dataset.labels))
        pred = predict_logits(model, dataset.images, batch_size).argmax(1)
        labels = dataset.labels
        config = {"dataset_meta": {k: v for k, v in getattr(dataset, "meta", {}).items() if k != "params"}}
    correct = (pred == labels.cpu())
    summary = summarise(correct, correct, empty=float("nan"))
    rows = [{"index": int(i), "label": int(y), "clean_pred": int(p), "correct": bool(c)}
            for i, y, p, c in zip(idx.tolist(), labels.tolist(), pred.tolist(), correct.tolist())]
    metrics = {"clean_accuracy": summary["clean_accuracy"], "robust_accuracy": summary["robust_accuracy"],
               "n": float(len(labels))}
    return AttackOutcome("none", {}, seed, metrics, rows, {}, time.perf_counter() - t0, {**config, "versions": versions()})
