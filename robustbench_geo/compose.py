"""The one composer: a model source and a dataset spec, with an attack or a certificate, give outcomes.

``rbgeo eval`` (the attack ``none``), ``rbgeo attack``, ``rbgeo certify``, a sweep's cells and the
Python API's :func:`~robustbench_geo.api.benchmark` all call :func:`evaluate_source` or, with a model they
already hold, :func:`evaluate_model`; they only parse their arguments and print or store what comes back.
It sits above :mod:`robustbench_geo.evaluation` (attacks) and :mod:`robustbench_geo.smoothing`
(certificates), and below the sweep. Loading (a checkpoint, a plug-in factory, or a
registered name or factory with weights, and the data it is evaluated on) is
:func:`robustbench_geo.loading.load_evaluated`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

from robustbench_geo.attacks import get_attack
from robustbench_geo.attacks.base import check_params
from robustbench_geo.check import check_number
from robustbench_geo.data import dataset_info
from robustbench_geo.data.base import GraphDataset
from robustbench_geo.evaluation import evaluate_attack
from robustbench_geo.evaluation.outcome import AttackOutcome
from robustbench_geo.loading import Evaluated, load_evaluated
from robustbench_geo.models.deformable import set_deform_backend
from robustbench_geo.models.vote import MajorityVote
from robustbench_geo.smoothing.certification import certify_outcome

#: images attacked and attack batch size when ``n`` / ``batch_size`` are not given
DEFAULT_N, DEFAULT_BATCH = 1000, 256


@dataclass(frozen=True, eq=False)
class Evaluation:
    """What :func:`evaluate_source` returns.

    Attributes:
        outcomes: one :class:`AttackOutcome` per seed.
        model: the model as evaluated (inside a :class:`MajorityVote` with ``vote``); meta: its metadata.
        data: the evaluation data; differences: how it differs from the checkpoint's training data (``force``).
        defense: the test-time defense's description (``vote``), else ``None``.
    """

    outcomes: list[AttackOutcome]
    model: nn.Module
    meta: dict
    data: object
    differences: list[str] = field(default_factory=list)
    defense: dict | None = None

    def spread(self, metric: str) -> tuple[float, float]:
        """Mean and sample std (0 for one seed) of ``metric`` over the seeds, as fractions."""
        values = [o.metrics[metric] for o in self.outcomes]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def evaluate_model(model: nn.Module, data, attack: str = "none", params: dict | None = None, *, seed: int = 0,
                   certificate: dict | None = None, meta: dict | None = None, progress: bool = False,
                   **options) -> AttackOutcome:
    """Attack (or, with ``certificate``, certify) a loaded model on its data; one seed.

    Args:
        attack, params: a registered attack and its parameters (``none``: clean accuracy).
        certificate: TSS certificate settings (``transform``, ``family`` and optional smoothing settings,
            :func:`~robustbench_geo.smoothing.certify_outcome`) instead of an attack.
        meta: the model's metadata (a graph poisoning attack retrains from its recipe; a certificate
            reads the training noise from it).
        options: the runner's options (:func:`~robustbench_geo.evaluation.evaluate_attack`).
    """
    if certificate is not None:
        return certify_outcome(model, data, dict(certificate), checkpoint_meta=meta, seed=seed, progress=progress)
    if isinstance(data, GraphDataset) and get_attack(attack).domain == "graph":
        options = {"checkpoint_meta": meta, **options}
    return evaluate_attack(model, data, attack, dict(params or {}), seed=seed, progress=progress, **options)


def evaluate_source(dataset: str, attack: str = "none", params: dict | None = None, *, spec: str | None = None,
                    checkpoint=None, weights=None, preprocessing=None, certificate: dict | None = None,
                    n: int | None = None, seed: int = 0, seeds: int = 1, batch_size: int | None = None,
                    budget: float | None = None, mode: str | None = None, vote: int | None = None,
                    vote_randomness: str = "fresh", deform_backend: str = "auto", device="cpu", data_root=None,
                    force: bool = False, progress: bool = False,
                    image_defaults: tuple[int, int] | None = (DEFAULT_N, DEFAULT_BATCH), on_loaded: Callable[[Evaluated], None] | None = None,
                    on_outcome: Callable[[AttackOutcome], None] | None = None) -> Evaluation:
    """Load a model and its data, then attack or certify it for ``seeds`` seeds (``seed``, ``seed + 1``, ...).

    The attack and its parameters, and options that do not apply to the dataset's kind, are refused before
    anything is loaded.

    Args:
        dataset: the dataset spec; images are a seeded subset of ``n`` test images (all for ``n=None`` with a
            certificate), graphs their test nodes.
        attack, params, certificate: as in :func:`evaluate_model`.
        spec, checkpoint, weights, preprocessing: the model (:func:`~robustbench_geo.loading.load_model`).
        batch_size: images per attack call; budget, mode: graph attacks' budget and protocol.
        image_defaults: ``(n, batch_size)`` for an attack on images when they are ``None``; ``None``: every
            test image, at the runner's batch size.
        vote: evaluate the test-time majority vote over this many random rotations and shifts.
        deform_backend: the deformable layers' backend; force: accept data the checkpoint was not trained on.
        on_loaded: called with the loaded model and data before the first seed runs (to show ``differences``).
        on_outcome: called with each seed's outcome as soon as it is there.
    """
    entry = get_attack(attack) if certificate is None else None  # unknown names fail before anything is loaded
    if entry is not None:
        params = check_params(entry, dict(params or {}))
    seeds = check_number(seeds, "--seeds", integer=True, low=1)
    if entry is not None:
        _check_options(entry, attack, {"image": {"--n": n, "--batch-size": batch_size, "--vote": vote},
                                       "graph": {"--budget": budget, "--mode": mode}})
    task = dataset_info(dataset).task
    if entry is not None and not entry.applies_to(task):
        raise ValueError(f"attack {attack!r} is a {entry.domain} attack but dataset {dataset!r} is {task} data")
    options: dict = {"device": device}
    if task == "image" and entry is not None:
        default_n, default_batch = image_defaults or (None, None)
        n = default_n if n is None else check_number(n, "--n", integer=True, low=1)
        if batch_size is not None or default_batch is not None:
            options["batch_size"] = check_number(default_batch if batch_size is None else batch_size, "--batch-size",
                                                 integer=True, low=1)
    if task == "graph" and entry is not None and attack != "none":
        if mode == "poisoning" and checkpoint is None:
            raise ValueError("--mode poisoning retrains the model from scratch with its training recipe, which only a "
                             "checkpoint records; a --model/--weights model supports --mode evasion")
        options.update(mode=mode or "evasion", budget=None if budget is None else check_number(budget, "--budget", low=0.0))
    loaded = load_evaluated(dataset, spec, checkpoint, weights, n=n, seed=seed, data_root=data_root,
                            preprocessing=preprocessing, device=device, force=force)
    if on_loaded is not None:
        on_loaded(loaded)
    model, defense = loaded.model, None
    set_deform_backend(model, deform_backend)
    if vote is not None:
        model = MajorityVote(model, votes=check_number(vote, "--vote", integer=True, low=1), seed=seed,
                             randomness=vote_randomness)
        defense = model.describe()
    outcomes = []
    for s in range(seed, seed + seeds):
        outcome = evaluate_model(model, loaded.data, attack, params, seed=s, certificate=certificate, meta=loaded.meta,
                                 progress=progress, **({} if certificate is not None else options))
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return Evaluation(outcomes, model, loaded.meta, loaded.data, loaded.differences, defense)


def _check_options(entry, attack: str, given: dict) -> None:
    """Options of one kind of data (``--n`` for images, ``--budget`` for graphs) refused for an attack of the other."""
    for domain, options in given.items():
        extra = [k for k, v in options.items() if v is not None and not entry.applies_to(domain)]
        if extra:
            verb, article = "applies" if len(extra) == 1 else "apply", "an" if entry.domain == "image" else "a"
            raise ValueError(f"{', '.join(extra)} {verb} to {domain} attacks only; {attack!r} is {article} "
                             f"{entry.domain} attack")
