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
through one :func:`torch.nn.functional.grid_sample` call per op (all RoIs of an image side by side). The obviously-correct loop version
lives in the tests and every result is compared against it, gradients included (``gradcheck``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
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


def _to_grid(y: torch.Tensor, x: torch.Tensor, h: int, w: int):
    """Sample coordinates -> ``grid_sample`` grid (``align_corners=True``) and the validity mask.

    torchvision's border rule: a sample outside ``[-1, H] x [-1, W]`` is 0; inside, its coordinates are
    clamped to ``[0, H-1] x [0, W-1]``. Clamped coordinates with ``padding_mode="border"`` reproduce
    that rule exactly (and its gradient: zero where the coordinate was clamped).
    """
    valid = ((y >= -1.0) & (y <= h) & (x >= -1.0) & (x <= w)).to(y.dtype)
    gy = y.clamp(0.0, h - 1) * (2.0 / max(h - 1, 1)) - 1.0
    gx = x.clamp(0.0, w - 1) * (2.0 / max(w - 1, 1)) - 1.0
    return torch.stack([gx, gy], dim=-1), valid


def _slots(bidx: torch.Tensor, batch: int):
    """Position of every RoI among its image's RoIs, and the largest count per image."""
    counts = torch.bincount(bidx, minlength=batch)
    order = torch.argsort(bidx, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.empty_like(bidx)
    pos[order] = torch.arange(bidx.shape[0], device=bidx.device) - starts[bidx[order]]
    return pos, int(counts.max())


def _pool(input, rois, offset, output_size, spatial_scale, sampling_ratio, gamma, position_sensitive: bool):
    kh, kw = _pair(output_size)
    _check(input, rois, offset, kh, kw, sampling_ratio, gamma, position_sensitive)
    b, c, h, w = input.shape
    c_out = c // (kh * kw) if position_sensitive else c
    r, s, kk = rois.shape[0], sampling_ratio, kh * kw
    if r == 0:
        return input.new_zeros(0, c_out, kh, kw)
    rois = rois.to(input.dtype)
    bidx = rois[:, 0].long()
    if bidx.min() < 0 or bidx.max() >= b:
        raise ValueError(f"rois: expected batch indices in [0, {b - 1}], got [{int(bidx.min())}, {int(bidx.max())}]")
    y, x = _sample_points(rois, None if offset is None else offset.to(input.dtype), kh, kw, s, spatial_scale, gamma)
    pts, valid = _to_grid(y, x, h, w)  # (R, kh, kw, S, S, 2), (R, kh, kw, S, S)
    # one grid_sample call: every image's RoIs side by side (padded to the largest RoI count per image)
    pos, m = _slots(bidx, b)
    if position_sensitive:  # bin t of output channel c reads input channel c * kk + t: sample bin t's maps only
        grid = input.new_zeros(b, kk, m, s, s, 2)
        grid[bidx[:, None], torch.arange(kk, device=input.device)[None], pos[:, None]] = pts.reshape(r, kk, s, s, 2)
        maps = input.reshape(b, c_out, kk, h, w).transpose(1, 2).reshape(b * kk, c_out, h, w)
        out = F.grid_sample(maps, grid.view(b * kk, m * s, s, 2), mode="bilinear", padding_mode="border",
                            align_corners=True)
        out = out.view(b, kk, c_out, m, s, s).permute(0, 3, 1, 2, 4, 5)[bidx, pos]  # (R, kk, C_out, S, S)
        out = (out * valid.reshape(r, kk, 1, s, s)).mean(dim=(-2, -1))
        return out.transpose(1, 2).reshape(r, c_out, kh, kw)
    grid = input.new_zeros(b, m, kh, kw, s, s, 2)
    grid[bidx, pos] = pts
    grid = grid.permute(0, 1, 2, 4, 3, 5, 6).reshape(b, m * kh * s, kw * s, 2)
    out = F.grid_sample(input, grid, mode="bilinear", padding_mode="border", align_corners=True)
    out = out.view(b, c, m, kh, s, kw, s).permute(0, 2, 1, 3, 5, 4, 6)[bidx, pos]  # (R, C, kh, kw, S, S)
    return (out * valid.unsqueeze(1)).mean(dim=(-2, -1))


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
