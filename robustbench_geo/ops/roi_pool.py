"""Deformable RoI pooling and its position-sensitive variant (Dai et al. 2017), vectorised PyTorch.

Conventions (shared with :func:`torchvision.ops.roi_align` with ``aligned=True``):

* ``input``: ``(B, C, H, W)`` feature map; ``rois``: ``(R, 5)`` rows ``[batch_index, x1, y1, x2, y2]``
  in *image* pixels; ``spatial_scale`` maps them to feature pixels (``1 / stride``). Pixel centres
  sit at integer coordinates, so a box's feature-space extent starts at ``x1 * spatial_scale - 0.5``.
* The RoI is split into ``output_size = (kh, kw)`` bins; each bin averages
  ``sampling_ratio x sampling_ratio`` bilinear samples placed at the centres of a regular sub-grid.
  A sample outside ``[-1, H] x [-1, W]`` contributes 0; inside, coordinates are clamped to the map
  (torchvision's rule), so with zero offsets :func:`deform_roi_pool` equals ``roi_align(aligned=True)``
  and :func:`ps_deform_roi_pool` equals ``ps_roi_align``.
* ``offset``: ``(R, 2, kh, kw)``, channel 0 = ``dy``, channel 1 = ``dx`` (the ``(dy, dx)`` order of
  :func:`~robustbench_geo.ops.deform_conv2d`) in units of the RoI's height / width. Bin ``(i, j)`` is
  shifted by ``gamma * offset[:, :, i, j] * (roi_h, roi_w)`` feature pixels, so the same normalised
  offset moves a bin by the same *fraction* of any RoI: offsets are invariant to RoI size. ``gamma``
  (0.1 in the paper) scales the learned offsets down to keep training stable.

Forward and backward (for ``input`` and ``offset``; ``rois`` too, where defined) are autograd
through a vectorised gather of the four bilinear neighbours. The obviously-correct loop version
lives in the tests and every result is compared against it, gradients included (``gradcheck``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.modules.utils import _pair

from robustbench_geo.check import check_shape


def _check(input, rois, offset, kh, kw, sampling_ratio, gamma, channels_per_bin: bool):
    check_shape(input, ["B", "C", "H", "W"], "input")
    check_shape(rois, ["R", 5], "rois")
    if sampling_ratio < 1:
        raise ValueError(f"sampling_ratio: expected a positive number of samples per bin side, got {sampling_ratio}")
    if kh < 1 or kw < 1:
        raise ValueError(f"output_size: expected positive bin counts, got {(kh, kw)}")
    if offset is not None:
        check_shape(offset, [rois.shape[0], 2, kh, kw], "offset")
    if channels_per_bin and input.shape[1] % (kh * kw):
        raise ValueError(f"input: expected channels divisible by kh*kw = {kh * kw} (position-sensitive score maps), "
                         f"got {input.shape[1]}")
    if gamma < 0:
        raise ValueError(f"gamma: expected a non-negative offset scale, got {gamma}")


def _sample_points(rois, offset, kh, kw, sampling_ratio, spatial_scale, gamma):
    """Sample coordinates ``y, x`` of shape ``(R, kh, kw, S, S)`` in feature pixels."""
    dt, dev = rois.dtype, rois.device
    x1, y1 = rois[:, 1] * spatial_scale - 0.5, rois[:, 2] * spatial_scale - 0.5
    roi_w = rois[:, 3] * spatial_scale - 0.5 - x1
    roi_h = rois[:, 4] * spatial_scale - 0.5 - y1
    bin_h, bin_w = roi_h / kh, roi_w / kw
    s = sampling_ratio
    ph = torch.arange(kh, device=dev, dtype=dt).view(1, kh, 1)
    pw = torch.arange(kw, device=dev, dtype=dt).view(1, 1, kw)
    start_y = y1.view(-1, 1, 1) + ph * bin_h.view(-1, 1, 1)  # (R, kh, 1)
    start_x = x1.view(-1, 1, 1) + pw * bin_w.view(-1, 1, 1)  # (R, 1, kw)
    start_y, start_x = start_y.expand(-1, kh, kw), start_x.expand(-1, kh, kw)
    if offset is not None:
        start_y = start_y + gamma * roi_h.view(-1, 1, 1) * offset[:, 0]
        start_x = start_x + gamma * roi_w.view(-1, 1, 1) * offset[:, 1]
    frac = (torch.arange(s, device=dev, dtype=dt) + 0.5) / s
    y = start_y[..., None, None] + (frac.view(s, 1) * bin_h.view(-1, 1, 1, 1, 1))
    x = start_x[..., None, None] + (frac.view(1, s) * bin_w.view(-1, 1, 1, 1, 1))
    return y.expand(-1, kh, kw, s, s), x.expand(-1, kh, kw, s, s)


def _bilinear_rows(y: torch.Tensor, x: torch.Tensor, h: int, w: int):
    """Four neighbour indices (flat ``y * W + x``) and weights per sample, torchvision's border rule."""
    valid = (y >= -1.0) & (y <= h) & (x >= -1.0) & (x <= w)
    y = y.clamp(min=0.0)
    x = x.clamp(min=0.0)
    y0, x0 = y.detach().floor().long(), x.detach().floor().long()
    y = torch.where(y0 >= h - 1, torch.full_like(y, h - 1), y)
    x = torch.where(x0 >= w - 1, torch.full_like(x, w - 1), x)
    y0, x0 = y0.clamp(max=h - 1), x0.clamp(max=w - 1)
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    ly, lx = y - y0.to(y.dtype), x - x0.to(x.dtype)
    hy, hx = 1.0 - ly, 1.0 - lx
    m = valid.to(y.dtype)
    idx = torch.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], dim=-1)
    wts = torch.stack([hy * hx, hy * lx, ly * hx, ly * lx], dim=-1) * m.unsqueeze(-1)
    return idx, wts


def _pool(input, rois, offset, output_size, spatial_scale, sampling_ratio, gamma, position_sensitive: bool):
    kh, kw = _pair(output_size)
    _check(input, rois, offset, kh, kw, sampling_ratio, gamma, position_sensitive)
    b, c, h, w = input.shape
    c_out = c // (kh * kw) if position_sensitive else c
    r = rois.shape[0]
    if r == 0:
        return input.new_zeros(0, c_out, kh, kw)
    rois = rois.to(input.dtype)
    y, x = _sample_points(rois, None if offset is None else offset.to(input.dtype), kh, kw, sampling_ratio,
                          spatial_scale, gamma)
    idx, wts = _bilinear_rows(y, x, h, w)  # (R, kh, kw, S, S, 4)
    bidx = rois[:, 0].long().view(-1, 1, 1, 1, 1, 1)
    if position_sensitive:
        # rows of (B * kh * kw * H * W, C_out): bin (i, j) of output channel c reads input channel (c*kh + i)*kw + j
        flat = input.reshape(b, c_out, kh * kw, h * w).permute(0, 2, 3, 1).reshape(-1, c_out)
        bins = torch.arange(kh * kw, device=input.device).view(1, kh, kw, 1, 1, 1)
        rows = (bidx * (kh * kw) + bins) * (h * w) + idx
    else:
        flat = input.permute(0, 2, 3, 1).reshape(-1, c)
        rows = bidx * (h * w) + idx
    vals = flat[rows.reshape(-1)].view(*rows.shape, c_out)  # (R, kh, kw, S, S, 4, C)
    out = (vals * wts.unsqueeze(-1)).sum(dim=(3, 4, 5)) / (sampling_ratio * sampling_ratio)
    return out.permute(0, 3, 1, 2).contiguous()


def deform_roi_pool(input: torch.Tensor, rois: torch.Tensor, offset: torch.Tensor | None = None,
                    output_size=(7, 7), spatial_scale: float = 1.0, sampling_ratio: int = 2,
                    gamma: float = 0.1) -> torch.Tensor:
    """Deformable RoI pooling (average of bilinear samples per bin, bins shifted by normalised offsets).

    Args:
        input: ``(B, C, H, W)`` features.
        rois: ``(R, 5)`` ``[batch_index, x1, y1, x2, y2]`` in image pixels.
        offset: ``(R, 2, kh, kw)`` normalised ``(dy, dx)`` per bin (fractions of RoI height/width,
            times ``gamma``), or ``None`` for plain RoI align.
        output_size: ``(kh, kw)`` bins (or one int).
        spatial_scale: feature pixels per image pixel.
        sampling_ratio: samples per bin side (positive).
        gamma: offset scale.

    Returns:
        ``(R, C, kh, kw)``.
    """
    return _pool(input, rois, offset, output_size, spatial_scale, sampling_ratio, gamma, False)


def ps_deform_roi_pool(input: torch.Tensor, rois: torch.Tensor, offset: torch.Tensor | None = None,
                       output_size=(7, 7), spatial_scale: float = 1.0, sampling_ratio: int = 2,
                       gamma: float = 0.1) -> torch.Tensor:
    """Position-sensitive deformable RoI pooling (R-FCN score maps with deformable bins).

    Args:
        input: ``(B, C_out * kh * kw, H, W)`` position-sensitive score maps; output channel ``c`` at
            bin ``(i, j)`` reads input channel ``(c * kh + i) * kw + j`` (torchvision's ``ps_roi_align``).
        rois, offset, output_size, spatial_scale, sampling_ratio, gamma: as :func:`deform_roi_pool`.

    Returns:
        ``(R, C_out, kh, kw)``.
    """
    return _pool(input, rois, offset, output_size, spatial_scale, sampling_ratio, gamma, True)


class DeformRoIPool2d(nn.Module):
    """Deformable RoI pooling with its offset predictor (paper, Sec. 2.2).

    Plain RoI align pools the RoI, two fully connected layers map the pooled ``(C, kh, kw)`` feature
    to normalised offsets ``(2, kh, kw)``, and the RoI is pooled again with the bins shifted. The last
    layer starts at zero, so a fresh module is exactly RoI align.

    Args:
        in_channels: feature channels ``C``.
        output_size, spatial_scale, sampling_ratio, gamma: as :func:`deform_roi_pool`.
        hidden: width of the offset predictor's hidden layer.
    """

    def __init__(self, in_channels: int, output_size=(7, 7), spatial_scale: float = 1.0, sampling_ratio: int = 2,
                 gamma: float = 0.1, hidden: int = 64):
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale, self.sampling_ratio, self.gamma = spatial_scale, sampling_ratio, gamma
        kh, kw = self.output_size
        self.offset_fc = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * kh * kw, hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, 2 * kh * kw))
        nn.init.zeros_(self.offset_fc[-1].weight)
        nn.init.zeros_(self.offset_fc[-1].bias)
        self.record = False
        self.last_offset: torch.Tensor | None = None

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        kw = dict(output_size=self.output_size, spatial_scale=self.spatial_scale, sampling_ratio=self.sampling_ratio,
                  gamma=self.gamma)
        plain = deform_roi_pool(input, rois, None, **kw)
        offset = self.offset_fc(plain).view(-1, 2, *self.output_size)
        if self.record:
            self.last_offset = offset.detach()
        return deform_roi_pool(input, rois, offset, **kw)


class PSDeformRoIPool2d(nn.Module):
    """Position-sensitive deformable RoI pooling with its offset branch (deformable R-FCN).

    A ``3x3`` convolution (zero-initialised) turns the score maps into ``2 * kh * kw`` offset maps,
    which are position-sensitively pooled (offsets of bin ``(i, j)`` come from that bin's pair of maps)
    into normalised offsets ``(R, 2, kh, kw)``; then the score maps are pooled with deformed bins.

    Args:
        in_channels: ``C_out * kh * kw`` score-map channels.
        output_size, spatial_scale, sampling_ratio, gamma: as :func:`ps_deform_roi_pool`.
    """

    def __init__(self, in_channels: int, output_size=(7, 7), spatial_scale: float = 1.0, sampling_ratio: int = 2,
                 gamma: float = 0.1):
        super().__init__()
        self.output_size = _pair(output_size)
        kh, kw = self.output_size
        if in_channels % (kh * kw):
            raise ValueError(f"in_channels: expected a multiple of kh*kw = {kh * kw}, got {in_channels}")
        self.spatial_scale, self.sampling_ratio, self.gamma = spatial_scale, sampling_ratio, gamma
        self.offset_conv = nn.Conv2d(in_channels, 2 * kh * kw, 3, padding=1)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        kw = dict(output_size=self.output_size, spatial_scale=self.spatial_scale, sampling_ratio=self.sampling_ratio,
                  gamma=self.gamma)
        offset = ps_deform_roi_pool(self.offset_conv(input), rois, None, **kw)  # (R, 2, kh, kw)
        return ps_deform_roi_pool(input, rois, offset, **kw)
