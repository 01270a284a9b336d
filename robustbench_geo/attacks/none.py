"""The ``none`` attack: the clean input, unchanged (the baseline row of every table).

It is a registered attack like any other, so "clean accuracy" goes through the same code paths
(CLI, sweeps, :func:`robustbench_geo.evaluate`) as an attack; its robust accuracy equals the clean one.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from robustbench_geo.attacks.base import register_attack
from robustbench_geo.attacks.graph.base import GraphPerturbation
from robustbench_geo.attacks.image.core import ImageAttackResult
from robustbench_geo.data.base import GraphDataset


@register_attack("none", domain="any", description="no attack: clean accuracy (robust accuracy = clean accuracy)")
class NoAttack:
    """Returns its input unchanged; images or a graph."""

    param_docs: dict = {}

    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self, x, y: torch.Tensor | None = None, *, seed: int | None = None):
        """``x``: ``(B, C, H, W)`` images with labels ``y`` ``(B,)``, or a :class:`GraphDataset`.

        Returns:
            :class:`ImageAttackResult` of the clean images (``success``: the model is already
            wrong, from one forward pass) or a :class:`GraphPerturbation` without flips.
        """
        if isinstance(x, GraphDataset):
            none = torch.zeros(2, 0, dtype=torch.long)
            return GraphPerturbation(x.edge_index, none, none.clone(), budget=0)
        if y is None:
            raise ValueError("y: expected (B,) labels for images, got None")
        with torch.no_grad():
            logits = self.model(x)
        b = x.shape[0]
        return ImageAttackResult(x, logits.argmax(1) != y, {}, torch.zeros(b, device=x.device),
                                 forward_passes=b, backward_passes=0, kind="none")
