"""Spatial transformer network (Jaderberg et al. 2015) in front of the ``cnn`` backbone.

A small localisation network regresses a 2x3 affine matrix (initialised to the identity) in
PyTorch's normalised coordinates; the input is resampled with ``affine_grid``/``grid_sample``
(bilinear, zero padding) and classified by :class:`~robustbench_geo.models.cnn.ConvNet`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_geo.models.cnn import CHANNELS, STRIDES, ConvNet
from robustbench_geo.models.registry import register_model


class STN(nn.Module):
    def __init__(self, in_channels=1, num_classes=10, image_size=(28, 28), channels=CHANNELS, strides=STRIDES,
                 loc_channels: tuple[int, int] = (8, 10), loc_hidden: int = 32):
        super().__init__()
        c1, c2 = loc_channels
        self.localization = nn.Sequential(
            nn.Conv2d(in_channels, c1, 7, padding=3), nn.MaxPool2d(2), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(c2 * 9, loc_hidden), nn.ReLU(inplace=True),
            nn.Linear(loc_hidden, 6),
        )
        nn.init.zeros_(self.localization[-1].weight)
        with torch.no_grad():
            self.localization[-1].bias.copy_(torch.tensor([1.0, 0, 0, 0, 1.0, 0]))
        self.classifier = ConvNet(in_channels, num_classes, image_size, channels, strides)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The input resampled by the predicted transform (what the classifier sees)."""
        theta = self.localization(x).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.transform(x))


@register_model("stn_cnn", task="image")
def stn_cnn(in_channels=1, num_classes=10, image_size=(28, 28), channels=CHANNELS, strides=STRIDES) -> STN:
    """Spatial transformer (affine localisation net, identity init) in front of ``cnn``."""
    return STN(in_channels, num_classes, image_size, channels, strides)
