"""The evaluation layer: a model + data + attack (or ``none``) -> an :class:`AttackOutcome`.

:func:`evaluate_attack` is the one entry point the API, the CLI and the sweep runner call. It
dispatches on the data: images to :mod:`~robustbench_geo.evaluation.image`, graphs to
:mod:`~robustbench_geo.evaluation.graph` (evasion/poisoning, global/targeted), the attack
``none`` to :mod:`~robustbench_geo.evaluation.clean`; few-shot episodes have their own runner
(:func:`~robustbench_geo.evaluation.fewshot.evaluate_fewshot_attack`). Every runner re-verifies
what an attack claims with its own forward passes and summarises with
:func:`~robustbench_geo.evaluation.outcome.summarise`. The caller's model is never moved and is
left in the train/eval mode it came in.
"""

from __future__ import annotations

import contextlib
import inspect

from robustbench_geo.attacks import NoAttack, get_attack, list_attacks
from robustbench_geo.check import check_finite
from robustbench_geo.data.base import GraphDataset
from robustbench_geo.evaluation.clean import clean_outcome
from robustbench_geo.evaluation.graph import evaluate_graph_attack
from robustbench_geo.evaluation.image import evaluate_image_attack
from robustbench_geo.evaluation.outcome import AttackOutcome, check_metrics, summarise
from robustbench_geo.models.predict import accuracy, graph_accuracy, graph_logits, image_accuracy, predict_logits
from robustbench_geo.threads import graph_threads


def evaluate_attack(model, dataset, attack: str, params: dict | None = None, *, seed: int = 0,
                    **kwargs) -> AttackOutcome:
    """Run ``attack`` on ``model`` over ``dataset`` and summarise it (dispatches on the dataset type).

    Args:
        model: image classifier (``(B, C, H, W)`` in ``[0, 1]`` -> logits) or graph model.
        dataset: an :class:`~robustbench_geo.data.base.ImageDataset` or a :class:`GraphDataset`.
        attack: a registered attack name (``rbgeo list attacks``), ``none`` for clean accuracy.
        params: the attack's parameters (unknown names raise, listing the valid ones).
        seed: the attack seed.
        **kwargs: the runner's options. Images: ``batch_size``, ``device``, ``progress``, ``n``;
            graphs: ``mode``, ``budget``, ``checkpoint_meta``, ``targets``, ``device``,
            ``progress``; ``none``: ``device``, ``batch_size`` (others are accepted and unused).
            Unknown options raise ``TypeError``.
    """
    entry = get_attack(attack)
    domain = "graph" if isinstance(dataset, GraphDataset) else "image"
    if not entry.applies_to(domain):
        raise ValueError(f"attack {attack!r} is a {entry.domain} attack but the dataset is {domain} data; "
                         f"{domain} attacks: {', '.join(list_attacks(domain))}")
    run = evaluate_graph_attack if domain == "graph" else evaluate_image_attack
    _check_options(run, kwargs)
    entry.fill(params or {})  # unknown or ill-typed parameters are named before the data are looked at
    check_data(dataset)
    was_training = model.training
    with graph_threads(dataset) if domain == "graph" else contextlib.nullcontext():
        try:
            if entry.cls is NoAttack:
                outcome = clean_outcome(model, dataset, seed=seed, device=kwargs.get("device"),
                                        **({"batch_size": kwargs["batch_size"]} if kwargs.get("batch_size") else {}))
            else:
                outcome = run(model, dataset, attack, params or {}, seed=seed, **kwargs)
            check_metrics(outcome.metrics, f"attack {attack!r}")  # a NaN fails the run; it is never stored
            return outcome
        finally:
            model.train(was_training)


def check_data(dataset) -> None:
    """Data that can give an accuracy: at least one evaluated sample, finite inputs (no number from NaN pixels)."""
    if isinstance(dataset, GraphDataset):
        if len(dataset.idx_test) == 0:
            raise ValueError(f"graph {dataset.name!r}: expected at least one test node, got none (the test mask is "
                             "all False): an accuracy over 0 nodes is not a number")
        check_finite(dataset.x, f"graph {dataset.name!r}: node features x")
    else:
        if len(dataset) == 0:
            raise ValueError(f"dataset {dataset.name!r}: expected at least one image, got 0")
        check_finite(dataset.images, f"dataset {dataset.name!r}: images")


def _check_options(run, kwargs: dict) -> None:
    valid = set(inspect.signature(run).parameters) - {"model", "dataset", "graph", "attack", "params", "seed"}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for {run.__name__}; valid options: {', '.join(sorted(valid))}")


__all__ = [
    "AttackOutcome", "accuracy", "check_metrics", "clean_outcome", "evaluate_attack", "evaluate_graph_attack",
    "evaluate_image_attack", "graph_accuracy", "graph_logits", "image_accuracy", "predict_logits", "summarise",
]
