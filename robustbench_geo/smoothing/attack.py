"""Empirical upper bounds beside the certificate: grid attacks on the smoothed and on the base classifier.

The certificate gives a lower bound on robust accuracy; an attack on the *same* smoothed classifier
over the *same* parameter box gives an upper bound, and certified accuracy can never exceed it (up to
the Monte Carlo error of the smoothed prediction and the certificate's ``alpha``). The attack on the
smoothed classifier evaluates its Monte Carlo prediction (argmax of ``n`` noisy samples) at a grid of
transforms that includes the box's edges and the identity; a sample counts as robust when every grid
point keeps the label. The base classifier is attacked with the same grid, without noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from robustbench_geo.smoothing.families import Family, make_family
from robustbench_geo.smoothing.tss import _device, _generator, inference_model, probe_batch, sample_counts
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
    """``(P, dims)`` evenly spaced parameters over the box (edges included): identity first, then by distance from it."""
    if int(per_axis) != per_axis or per_axis < 1:
        raise ValueError(f"points: expected a positive integer, got {per_axis!r}")
    axes = [torch.linspace(lo, hi, int(per_axis), dtype=torch.float64) for lo, hi in family.box()]
    grid = torch.stack([g.reshape(-1) for g in torch.meshgrid(*axes, indexing="ij")], 1)
    ident = family.identity()[None]
    inside = all(lo <= float(i) <= hi for i, (lo, hi) in zip(family.identity(), family.box()))
    dist = (grid - ident).abs().amax(1)
    grid = grid[torch.argsort(dist, stable=True)]  # smallest transforms first: the first fooling one is the smallest
    grid = grid[(grid - ident).abs().amax(1) > 1e-12]
    return torch.cat([ident, grid]) if inside else grid


@torch.inference_mode()
def grid_attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, transform: str | Family = "rotation", *,
                points: int = 61, sigma: float = 0.0, n: int = 100, batch_size: int = 1000, seed: int = 0,
                **family_kwargs) -> GridAttackResult:
    """Grid attack on the smoothed classifier (``sigma > 0``: argmax of ``n`` noisy samples) or the base one (``sigma = 0``).

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
    dev = _device(model)
    was_training = model.training
    model.eval()
    net = inference_model(model, probe_batch(images, sigma, dev))  # the certificate's base classifier
    b, d = images.shape[0], family.dims
    robust = torch.ones(b, dtype=torch.bool)
    worst = torch.full((b, d), float("nan"), dtype=torch.float64)
    passes = 0
    try:
        for i in range(b):
            warped = family.warp(images[i:i + 1].float().cpu(), grid).to(dev)
            if sigma > 0:
                counts = sample_counts(net, warped, n, sigma, _generator(dev, seed, i), batch_size)
                pred = counts.argmax(1)
                passes += grid.shape[0] * n
            else:
                pred = torch.cat([net(warped[s:s + batch_size]).argmax(1).cpu() for s in range(0, grid.shape[0], batch_size)])
                passes += grid.shape[0]
            wrong = (pred != int(labels[i])).nonzero()
            if wrong.numel():
                robust[i] = False
                worst[i] = family.to_user(grid[int(wrong[0])])
    finally:
        model.train(was_training)
    return GridAttackResult(robust, worst, int(grid.shape[0]), passes)
