"""RoI classifier over a fixed proposal grid: plain RoI align vs deformable RoI pooling.

The task is ``mnist-cluttered`` (a digit at a random position and scale on a cluttered canvas):
a small CNN computes features at stride 4; a fixed grid of square proposals (sides
``proposal_sizes`` and centre spacing ``proposal_stride``, as fractions of the image side) is
pooled into ``output_size`` bins by

* ``pool="roi_align"``: :func:`torchvision.ops.roi_align` (``aligned=True``, 2x2 samples per bin), or
* ``pool="deform_roi"``: :class:`~robustbench_geo.ops.DeformRoIPool2d` (same sampling; the bins are
  shifted by learned offsets normalised by the RoI size; starts as RoI align), or
* ``pool="ps_deform_roi"``: position-sensitive score maps (R-FCN) with deformable bins,
  :class:`~robustbench_geo.ops.PSDeformRoIPool2d`.

Every proposal gets class logits and an objectness score; the image's logits are the
objectness-softmax-weighted average of the proposals' logits (attention over proposals), so the
model is trained from image labels alone and stays a plain ``(B, C, H, W) -> (B, K)`` classifier
that every image attack can use.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torchvision.ops as tvops

from robustbench_geo.check import unknown_name_error
from robustbench_geo.models.registry import register_model
from robustbench_geo.ops import DeformRoIPool2d, PSDeformRoIPool2d

POOLS = ("roi_align", "deform_roi", "ps_deform_roi")


def proposal_grid(image_size: tuple[int, int], sizes: Sequence[float] = (0.5, 0.75), stride: float = 0.125) -> torch.Tensor:
    """Square boxes ``(P, 4)`` ``[x1, y1, x2, y2]`` in pixels tiling the image at every size.

    Args:
        image_size: ``(H, W)``.
        sizes: box sides as fractions of ``min(H, W)``.
        stride: centre spacing as a fraction of ``min(H, W)``; centres run from the first position
            where the box fits to the last, evenly spaced and symmetric about the image centre.
    """
    h, w = image_size
    side0 = float(min(h, w))
    boxes = []
    for frac in sizes:
        s = frac * side0
        step = stride * side0

        def centres(extent):
            n = int((extent - s) // step) + 1 if extent >= s else 1
            span = (n - 1) * step
            return [extent / 2 - span / 2 + i * step for i in range(n)]

        for cy in centres(h):
            for cx in centres(w):
                boxes.append([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2])
    return torch.tensor(boxes, dtype=torch.float32)


class RoICNN(nn.Module):
    """Backbone (stride 4) -> pooled proposals -> per-proposal logits + objectness -> attention average.

    Args:
        in_channels, num_classes, image_size: the image-model protocol.
        pool: ``roi_align``, ``deform_roi`` or ``ps_deform_roi``.
        channels: backbone widths (strides 1-2-1-2 as ``cnn``).
        output_size: bins per RoI side.
        proposal_sizes, proposal_stride: the proposal grid (fractions of the image side).
        hidden: width of the per-proposal head.
        gamma: offset scale of the deformable pools.
    """

    def __init__(self, in_channels=1, num_classes=10, image_size=(56, 56), pool: str = "roi_align",
                 channels: Sequence[int] = (32, 64, 64, 64), output_size: int = 4,
                 proposal_sizes: Sequence[float] = (0.5, 0.75), proposal_stride: float = 0.125, hidden: int = 128,
                 gamma: float = 0.1):
        super().__init__()
        if pool not in POOLS:
            raise unknown_name_error("RoI pool", pool, POOLS)
        self.pool_kind, self.output_size, self.num_classes = pool, int(output_size), num_classes
        layers, cin = [], in_channels
        for cout, stride in zip(channels, (1, 2, 1, 2)):
            layers += [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        k2 = self.output_size ** 2
        if pool == "ps_deform_roi":  # position-sensitive score maps: one group of k*k maps per head channel
            ps_out = 16
            layers += [nn.Conv2d(cin, ps_out * k2, 1)]
            self.pool = PSDeformRoIPool2d(ps_out * k2, self.output_size, 0.25, 2, gamma)
            pooled = ps_out * k2
        elif pool == "deform_roi":
            self.pool = DeformRoIPool2d(cin, self.output_size, 0.25, 2, gamma, hidden=hidden)
            pooled = cin * k2
        else:
            self.pool = None
            pooled = cin * k2
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(pooled, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes + 1))
        self.register_buffer("proposals", proposal_grid(tuple(image_size), proposal_sizes, proposal_stride), persistent=False)

    def rois(self, batch: int, device, dtype) -> torch.Tensor:
        """``(B * P, 5)`` RoIs ``[batch_index, x1, y1, x2, y2]``: the proposal grid for every image."""
        p = self.proposals.to(device=device, dtype=dtype)
        idx = torch.arange(batch, device=device, dtype=dtype).repeat_interleave(p.shape[0])
        return torch.cat([idx[:, None], p.repeat(batch, 1)], dim=1)

    def proposal_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-proposal logits ``(B, P, K)`` and objectness ``(B, P)``."""
        feat = self.backbone(x)
        b = x.shape[0]
        rois = self.rois(b, x.device, feat.dtype)
        scale = feat.shape[-1] / x.shape[-1]
        if self.pool is None:
            pooled = tvops.roi_align(feat, rois, self.output_size, scale, 2, aligned=True)
        else:
            self.pool.spatial_scale = scale
            pooled = self.pool(feat, rois)
        out = self.head(pooled).view(b, -1, self.num_classes + 1)
        return out[..., :-1], out[..., -1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, score = self.proposal_outputs(x)
        attn = torch.softmax(score, dim=1)
        return (attn.unsqueeze(-1) * logits).sum(dim=1)


@register_model("roi_cnn", task="image")
def roi_cnn(in_channels=1, num_classes=10, image_size=(56, 56), pool: str = "roi_align", channels=(32, 64, 64, 64),
            output_size: int = 4, proposal_sizes=(0.5, 0.75), proposal_stride: float = 0.125, hidden: int = 128,
            gamma: float = 0.1) -> RoICNN:
    """Proposal-grid RoI classifier for mnist-cluttered; pool=roi_align|deform_roi|ps_deform_roi."""
    return RoICNN(in_channels, num_classes, image_size, pool, channels, output_size, proposal_sizes, proposal_stride,
                  hidden, gamma)
