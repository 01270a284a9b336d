"""``mnist-cluttered``: an MNIST digit at a random position and scale on a larger canvas, with clutter.

==================  =======  ======  ==========  =======
name                train    test    shape       classes
==================  =======  ======  ==========  =======
mnist-cluttered     60,000   10,000  1 x 56x56   10
==================  =======  ======  ==========  =======

Each sample, drawn with a generator seeded by ``seed`` and the split (same call, same images):

1. the 28x28 MNIST image is scaled by a factor drawn uniformly in ``scale_range`` (default
   ``[0.7, 1.5]``: a digit box of 19.6 to 42 pixels) and placed with its box entirely inside the
   ``canvas`` x ``canvas`` image (default 56) at a uniformly drawn sub-pixel position (bilinear warp);
2. ``clutter`` (default 4) random ``clutter_px`` x ``clutter_px`` (default 8) crops of other digits of
   the same split are pasted at uniform positions (pixel-wise maximum), so a model must find the digit.

Recorded in ``dataset.meta["params"]`` (tensors, one entry per sample): ``scale``, ``x_px``/``y_px``
(top-left corner of the digit's 28x28 box on the canvas, pixels) and ``box`` (``x1, y1, x2, y2``);
the generator settings are in ``dataset.meta["transform"]``.
"""

from __future__ import annotations

import kornia.geometry.transform as KT
import torch

from robustbench_geo.check import check_interval
from robustbench_geo.data.base import ImageDataset

_SPLIT_OFFSET = {"train": 0, "test": 1}


def clutter_images(digits: torch.Tensor, *, seed: int, canvas: int = 56, scale_range=(0.7, 1.5), clutter: int = 4,
                   clutter_px: int = 8, chunk: int = 4096) -> tuple[torch.Tensor, dict]:
    """Place ``digits`` ``(N, 1, 28, 28)`` on cluttered canvases; returns ``(images (N, 1, canvas, canvas), params)``."""
    lo, hi = check_interval(scale_range, "scale_range", nonnegative=True)
    n, _, h, w = digits.shape
    if lo <= 0 or hi * max(h, w) > canvas:
        raise ValueError(f"scale_range: expected scales in (0, {canvas / max(h, w):.3g}] so a {h}x{w} digit fits a "
                         f"{canvas}x{canvas} canvas, got {scale_range}")
    if clutter < 0 or not 0 < clutter_px <= min(h, w):
        raise ValueError(f"clutter, clutter_px: expected clutter >= 0 and 0 < clutter_px <= {min(h, w)}, got {clutter}, {clutter_px}")
    g = torch.Generator().manual_seed(seed)
    scale = lo + (hi - lo) * torch.rand(n, generator=g)
    room_x, room_y = canvas - scale * w, canvas - scale * h
    x = torch.rand(n, generator=g) * room_x
    y = torch.rand(n, generator=g) * room_y
    out = torch.empty(n, 1, canvas, canvas)
    for i in range(0, n, chunk):
        sl = slice(i, i + chunk)
        m = torch.zeros(scale[sl].shape[0], 2, 3)
        # source pixel (u, v) -> canvas pixel (x + s (u + 0.5) - 0.5, ...): the box [0, 28] maps to [x, x + 28 s]
        m[:, 0, 0] = scale[sl]
        m[:, 1, 1] = scale[sl]
        m[:, 0, 2] = x[sl] + 0.5 * scale[sl] - 0.5
        m[:, 1, 2] = y[sl] + 0.5 * scale[sl] - 0.5
        out[sl] = KT.warp_affine(digits[sl], m, dsize=(canvas, canvas), mode="bilinear", padding_mode="zeros",
                                 align_corners=True)
    if clutter:
        src = torch.randint(0, n, (n, clutter), generator=g)
        cy = torch.randint(0, h - clutter_px + 1, (n, clutter), generator=g)
        cx = torch.randint(0, w - clutter_px + 1, (n, clutter), generator=g)
        py = torch.randint(0, canvas - clutter_px + 1, (n, clutter), generator=g)
        px = torch.randint(0, canvas - clutter_px + 1, (n, clutter), generator=g)
        ar = torch.arange(clutter_px)
        rows = (slice(None), None, None)
        for k in range(clutter):
            piece = digits[src[:, k][rows], 0, (cy[:, k, None] + ar)[:, :, None], (cx[:, k, None] + ar)[:, None, :]]
            ys = (py[:, k, None] + ar)[:, :, None]
            xs = (px[:, k, None] + ar)[:, None, :]
            nn_ = torch.arange(n)[rows]
            out[nn_, 0, ys, xs] = torch.maximum(out[nn_, 0, ys, xs], piece)
    out.clamp_(0.0, 1.0)
    box = torch.stack([x, y, x + scale * w, y + scale * h], dim=1)
    return out, {"scale": scale, "x_px": x, "y_px": y, "box": box}


def load_mnist_cluttered(split="train", root=None, download=True, seed: int = 0, canvas: int = 56,
                         scale_min: float = 0.7, scale_max: float = 1.5, clutter: int = 4,
                         clutter_px: int = 8) -> ImageDataset:
    from robustbench_geo.data.images import load_mnist

    base = load_mnist(split, root, download)
    images, params = clutter_images(base.images, seed=seed * 2 + _SPLIT_OFFSET.get(split, 0), canvas=canvas,
                                    scale_range=(scale_min, scale_max), clutter=clutter, clutter_px=clutter_px)
    transform = {"canvas": canvas, "scale_range": [scale_min, scale_max], "clutter": clutter, "clutter_px": clutter_px,
                 "warp": "bilinear, align_corners=True"}
    meta = {**base.meta, "dataset": "mnist-cluttered", "base": "mnist", "seed": seed, "transform": transform,
            "params": params}
    return ImageDataset("mnist-cluttered", images, base.labels, base.classes, meta)
