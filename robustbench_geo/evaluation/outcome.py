"""The outcome of evaluating a model under an attack, and the one clean/robust/success summary.

Definitions (stated once, here; every runner uses :func:`summarise`):

* ``clean_accuracy``: correct on the clean input, over all ``n`` evaluated samples;
* ``robust_accuracy``: correct on the attacked input, over all ``n``. For attacks that start from
  each clean sample separately (images, few-shot episodes, targeted graph attacks) a sample that
  is wrong on the clean input counts as not robust (``robust = clean & attacked``); a global
  structure attack perturbs one graph for all test nodes and is scored on the perturbed graph
  alone (``robust = attacked``), as in the literature;
* ``success_rate``: wrong after the attack among the samples correct before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from robustbench_geo.check import check_number


@dataclass
class AttackOutcome:
    """One attack run summarised for the CLI, the sweep store and reports.

    Attributes:
        attack: attack name.
        params: the parameters used (defaults filled in).
        seed: the attack seed.
        metrics: numbers only: ``clean_accuracy``, ``robust_accuracy``, ``success_rate`` and
            attack-specific ones (``flips``, ``mean_flow_px``, ``forward_passes``, ...).
        rows: per-sample (images) or per-target (graphs) records, plain Python values.
        artefacts: extra data for reports (example images, found parameters, edge flips, ...).
        seconds: wall time of the attack.
        config: everything needed to reproduce the run (model, dataset, versions, warp settings...).
    """

    attack: str
    params: dict
    seed: int
    metrics: dict[str, float]
    rows: list[dict] = field(default_factory=list)
    artefacts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    config: dict = field(default_factory=dict)


def summarise(clean_correct: torch.Tensor, attacked_correct: torch.Tensor, *,
              robust_needs_clean: bool = True, empty: float = 0.0) -> dict[str, float]:
    """``clean_accuracy``, ``robust_accuracy`` and ``success_rate`` in ``[0, 1]`` (module docstring).

    Args:
        clean_correct: ``(n,)`` bool, correct on the clean input.
        attacked_correct: ``(n,)`` bool, correct on the attacked input.
        robust_needs_clean: ``robust = clean & attacked`` (per-sample attacks) or ``attacked``
            (global structure attacks).
        empty: the accuracies reported for ``n = 0``.
    """
    clean_correct, attacked_correct = clean_correct.bool().cpu(), attacked_correct.bool().cpu()
    if clean_correct.shape != attacked_correct.shape or clean_correct.dim() != 1:
        raise ValueError(f"expected two (n,) masks of one shape, got {tuple(clean_correct.shape)} and "
                         f"{tuple(attacked_correct.shape)}")
    n, n_correct = clean_correct.numel(), int(clean_correct.sum())
    robust = clean_correct & attacked_correct if robust_needs_clean else attacked_correct
    fooled = int((clean_correct & ~attacked_correct).sum())
    return {"clean_accuracy": n_correct / n if n else empty,
            "robust_accuracy": int(robust.sum()) / n if n else empty,
            "success_rate": fooled / n_correct if n_correct else 0.0}


def check_metrics(metrics: dict, what: str) -> dict:
    """Every metric is a finite number before anything is printed or stored (NaN never counts as fooled)."""
    for k, v in metrics.items():
        if v is not None:
            check_number(v, f"{what}: metric {k}")
    return metrics
