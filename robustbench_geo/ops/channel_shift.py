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

Two implementations: ``impl="grid_sample"`` (the default, :func:`torch.nn.functional.grid_sample`,
a training step of ``deform_cnn(offset_style="channel")`` measured 1.3x faster on one loaded CPU thread;
positions go through grid_sample's normalised coordinates, so a zero offset returns the input to
float rounding, about 1e-5 in float32 on a 28-pixel map) and ``impl="gather"`` (plain indexing in
pixel coordinates, the reference the tests compare the other against: a zero offset returns the
input bit for bit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustbench_geo.check import check_shape


IMPLS = ("grid_sample", "gather")


def shift_channels(input: torch.Tensor, offset: torch.Tensor, impl: str = "grid_sample") -> torch.Tensor:
    """Resample every channel of ``input`` at its own offset grid.

    Args:
        input: ``(B, C, H, W)`` feature map.
        offset: ``(B, 2 * C, H, W)``, per channel and pixel ``(dy, dx)`` in pixels.
        impl: ``"grid_sample"`` (fast) or ``"gather"`` (exact at integer positions); see the module.

    Returns:
        ``(B, C, H, W)``: channel ``c`` bilinearly sampled at ``(i + dy, j + dx)`` (clamped to the map).
    """
    check_shape(input, ["B", "C", "H", "W"], "input")
    b, c, h, w = input.shape
    if offset.shape != (b, 2 * c, h, w):
        raise ValueError(f"offset: expected shape {(b, 2 * c, h, w)} (B, 2 * C, H, W), got {tuple(offset.shape)}")
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {list(IMPLS)}, got {impl!r}")
    off = offset.reshape(b * c, 2, h, w)
    if impl == "grid_sample":
        ys = torch.arange(h, device=input.device, dtype=input.dtype).view(1, h, 1) + off[:, 0]
        xs = torch.arange(w, device=input.device, dtype=input.dtype).view(1, 1, w) + off[:, 1]
        # align_corners=True maps -1 and 1 to the centres of the first and last pixel; border clamps
        grid = torch.stack([xs * (2 / max(w - 1, 1)) - 1, ys * (2 / max(h - 1, 1)) - 1], dim=-1)  # (B*C, H, W, [x, y])
        out = F.grid_sample(input.reshape(b * c, 1, h, w), grid, mode="bilinear", padding_mode="border",
                            align_corners=True)
        return out.view(b, c, h, w)
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
