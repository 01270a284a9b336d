"""A small deterministic scene for pinning grid searches: Gaussian blobs around the centre and a half-plane classifier.

The classifier's class flips when a blob crosses a line through the centre, so which transforms fool it
follows from the geometry; its logits are scaled down so that the cross-entropy of unfooled images does
not saturate (the grid then keeps a highest-loss point, not the first).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

SIZE = 28
CENTRE = (SIZE - 1) / 2
#: the blobs' angles (degrees, counter-clockwise from the x axis); the classifier's line is at 10 degrees
ANGLES = (-60.0, -12.0, -3.0, 4.0, 18.0, 35.0, 100.0, 178.0)


def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij")


def blob(angle_deg: float, radius_px: float = 8.0, width_px: float = 2.0) -> torch.Tensor:
    """A Gaussian blob ``(1, H, W)`` at ``angle_deg`` from the centre."""
    a = math.radians(angle_deg)
    bx, by = CENTRE + radius_px * math.cos(a), CENTRE - radius_px * math.sin(a)
    ys, xs = _grid()
    return torch.exp(-((xs - bx) ** 2 + (ys - by) ** 2) / (2 * width_px ** 2))[None]


class HalfPlane(nn.Module):
    """Class 1 when the image mass lies counter-clockwise of the line through the centre at ``line_deg``."""

    def __init__(self, line_deg: float = 10.0, scale: float = 0.05):
        super().__init__()
        a = math.radians(line_deg)
        ys, xs = _grid()
        self.register_buffer("w", torch.sign(math.cos(a) * (-(ys - CENTRE)) - math.sin(a) * (xs - CENTRE))[None])
        self.scale = scale

    def forward(self, x):
        s = (x * self.w).sum(dim=(1, 2, 3))
        return self.scale * torch.stack([-s, s], 1)


def scene() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """``(model, images (8, 1, 28, 28), labels)``: labels are the clean predictions, the last one flipped
    (an image misclassified before any transform)."""
    model = HalfPlane().eval()
    images = torch.stack([blob(a) for a in ANGLES])
    with torch.no_grad():
        labels = model(images).argmax(1)
    labels[-1] = 1 - labels[-1]
    return model, images, labels


def digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes (its values and their order)."""
    import hashlib

    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()
