"""Empirical upper bounds beside the certificate: grid attacks on the smoothed and on the base classifier.

The certificate gives a lower bound on robust accuracy; an attack on the *same* smoothed classifier
over the *same* parameter box gives an upper bound, and certified accuracy can never exceed it (up to
the Monte Carlo error of the smoothed prediction and the certificate's ``alpha``). The attack on the
smoothed classifier evaluates its Monte Carlo prediction (argmax of ``n`` noisy samples) at a grid of
transforms that includes the box's edges and the identity; a sample counts as robust when every grid
point keeps the label. The base classifier is attacked with the same grid, without noise.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn as nn

from robustbench_geo.attacks.image.search import by_size, grid_search
from robustbench_geo.smoothing.families import Family, make_family
from robustbench_geo.models.predict import model_device
from robustbench_geo.smoothing.tss import image_generator, inference_model, probe_batch, sample_counts
from robustbench_geo.check import check_shape


@dataclass(frozen=True)
class GridAttackResult:
    """Per-sample outcome ``(B,)``: robust at every grid point, and the first grid parameter that fooled it.

    ``worst`` holds parameters in the family's user unit (degrees, content scale, pixels), ``nan`` when
    the sample was robust; ``points`` is the number of grid points per sample.
    """

    robust: torch.Tensor
    worst: torch.Tensor
    points: int
    forward_passes: int

    @property
    def accuracy(self) -> float:
        return float(self.robust.float().mean()) if self.robust.numel() else float("nan")


def grid_points(family: Family, per_axis: int) -> torch.Tensor:
    """``(P, dims)`` evenly spaced parameters over the box (edges included): identity first, then smallest first
    (:func:`~robustbench_geo.attacks.image.search.by_size`: the largest distance from the identity as a fraction
    of the box's reach on that axis, then the values), so the first fooling point found is a smallest one."""
    if int(per_axis) != per_axis or per_axis < 1:
        raise ValueError(f"points: expected a positive integer, got {per_axis!r}")
    box, ident = family.box(), tuple(family.identity().tolist())
    axes = [torch.linspace(lo, hi, int(per_axis), dtype=torch.float64).tolist() for lo, hi in box]
    pts = [p for p in itertools.product(*axes) if max(abs(v - i) for v, i in zip(p, ident)) > 1e-12]
    if all(lo <= i <= hi for i, (lo, hi) in zip(ident, box)):
        pts.insert(0, ident)
    reach = tuple(max(abs(lo - i), abs(hi - i)) for i, (lo, hi) in zip(ident, box))
    return torch.tensor([pts[i] for i in by_size(pts, ident, reach, sum_ties=False)], dtype=torch.float64)


@torch.inference_mode()
def grid_attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, transform: str | Family = "rotation", *,
                points: int = 61, sigma: float = 0.0, n: int = 100, batch_size: int = 1000, seed: int = 0,
                **family_kwargs) -> GridAttackResult:
    """Grid attack on the smoothed classifier (``sigma > 0``: argmax of ``n`` noisy samples) or the base one (``sigma = 0``).

    The search is the attacks' :func:`~robustbench_geo.attacks.image.search.grid_search`, with every grid
    point of an image classified in one go (one noise stream per image, as the certificate draws it).

    Args:
        model: base classifier.
        images: ``(B, C, H, W)`` in ``[0, 1]``; labels ``(B,)``.
        transform: family name or instance (with ``family_kwargs`` as in :func:`~robustbench_geo.smoothing.certify`).
        points: grid points per parameter axis (``points ** dims`` in all, plus the identity).
        sigma: smoothing noise; 0 attacks the base classifier.
        n: noisy samples per grid point for the smoothed prediction (ignored when ``sigma = 0``).
        batch_size: images per model call.
        seed: noise seed (image ``i`` uses its own stream).
    """
    check_shape(images, ["B", "C", "H", "W"], "images")
    check_shape(labels, [images.shape[0]], "labels")
    family = make_family(transform, **family_kwargs)
    grid = grid_points(family, points)
    dev = model_device(model)
    was_training = model.training
    model.eval()
    net = inference_model(model, probe_batch(images, sigma, dev))  # the certificate's base classifier
    b, t_total = images.shape[0], grid.shape[0]

    def predict(i: int) -> torch.Tensor:  # image i's (smoothed) prediction at every grid point
        warped = family.warp(images[i:i + 1].float().cpu(), grid).to(dev)
        if sigma > 0:
            return sample_counts(net, warped, n, sigma, image_generator(dev, seed, i), batch_size).argmax(1)
        return torch.cat([net(warped[s:s + batch_size]).argmax(1).cpu() for s in range(0, t_total, batch_size)])

    def evaluate(t, c, active):
        return torch.stack([predict(int(i)) != int(labels[i]) for i in active], 1), None

    try:
        pick, fooled, _ = grid_search(b, t_total, evaluate, lambda a: t_total)
    finally:
        model.train(was_training)
    worst = torch.full((b, family.dims), float("nan"), dtype=torch.float64)
    for i in fooled.nonzero().squeeze(1).tolist():
        worst[i] = family.to_user(grid[int(pick[i])])
    return GridAttackResult(~fooled, worst, t_total, b * t_total * (n if sigma > 0 else 1))
