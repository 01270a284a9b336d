"""Per-channel bilinear resampling of a feature map: one ``(dy, dx)`` offset per channel and pixel.

The offset layer of the Keras deformable-convolution experiment (its ``ConvOffset2D``) works this
way: a 3x3 convolution predicts ``2 * C`` offset channels, every input channel is resampled at its
own shifted grid, and an ordinary convolution follows. Dai et al.'s deformable convolution
(:func:`robustbench_geo.ops.deform_conv2d`) instead shifts each kernel tap of each output position,
shared by all input channels.

Conventions: offsets are in pixels of the feature map, ``(dy, dx)`` for channel ``c`` in offset
channels ``(2c, 2c + 1)``; output ``y[b, c, i, j]`` is ``x[b, c]`` interpolated bilinearly at
``(i + dy, j + dx)``, with coordinates clamped into ``[0, H - 1] x [0, W - 1]`` (the border value is
repeated outside, as the reference clips its sampling coordinates).
"""

from __future__ import annotations

import torch

from robustbench_geo.check import check_shape


def shift_channels(input: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Resample every channel of ``input`` at its own offset grid.

    Args:
        input: ``(B, C, H, W)`` feature map.
        offset: ``(B, 2 * C, H, W)``, per channel and pixel ``(dy, dx)`` in pixels.

    Returns:
        ``(B, C, H, W)``: channel ``c`` bilinearly sampled at ``(i + dy, j + dx)`` (clamped to the map).
    """
    check_shape(input, ["B", "C", "H", "W"], "input")
    b, c, h, w = input.shape
    if offset.shape != (b, 2 * c, h, w):
        raise ValueError(f"offset: expected shape {(b, 2 * c, h, w)} (B, 2 * C, H, W), got {tuple(offset.shape)}")
    off = offset.reshape(b * c, 2, h, w)
    # sampling positions clamped into the map; bilinear weights from the floor, so that a zero offset
    # (integer positions, weights exactly 1 and 0) returns the input bit for bit
    ys = (torch.arange(h, device=input.device, dtype=input.dtype).view(1, h, 1) + off[:, 0]).clamp(0, h - 1)
    xs = (torch.arange(w, device=input.device, dtype=input.dtype).view(1, 1, w) + off[:, 1]).clamp(0, w - 1)
    y0, x0 = ys.detach().floor(), xs.detach().floor()
    wy, wx = ys - y0, xs - x0
    y0, x0 = y0.long(), x0.long()
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    flat = input.reshape(b * c, h * w)

    def at(yi, xi):
        return flat.gather(1, (yi * w + xi).view(b * c, h * w)).view(b * c, h, w)

    top = (1 - wx) * at(y0, x0) + wx * at(y0, x1)
    bottom = (1 - wx) * at(y1, x0) + wx * at(y1, x1)
    return ((1 - wy) * top + wy * bottom).view(b, c, h, w)
