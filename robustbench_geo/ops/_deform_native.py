"""Native deformable convolution: vectorised bilinear gathers + one GEMM, exact torchvision semantics.

The op is computed in channels-last "column" form. For every output row ``r = (b, ho, wo)``, tap
``k = (i, j)`` and offset group ``g`` the sampling point is

    y = ho * stride_h - pad_h + i * dilation_h + offset[b, g, k, 0, ho, wo]   (pixels)
    x = wo * stride_w - pad_w + j * dilation_w + offset[b, g, k, 1, ho, wo]

and the input is read there by bilinear interpolation with zeros outside the image (the same
function as torchvision's ``bilinear_interpolate``: it is 0 for ``y <= -1``, ``y >= H``, ...).
The four corner rows of ``C / offset_groups`` channels are gathered from a zero-padded,
channels-last copy of the input (``index_select`` of contiguous rows; corners beyond the border
are clamped onto the zero padding, so no validity masks are needed) and blended with weights
computed once per row/tap/group (modulation mask folded in). The resulting column matrix
``(rows, kh * kw * C_in)`` meets the weight in one GEMM (or one batched GEMM per conv group).

Backward recomputes the gathers (nothing but the inputs is saved), gets ``grad_columns`` from one
GEMM, the weight gradient from another, offset and mask gradients from the four per-corner dot
products ``<grad_columns, corner>``, and the input gradient by ``index_add_`` of the weighted
``grad_columns`` into the padded input. Derivatives at integer sampling coordinates (the kinks of
bilinear interpolation) are right-hand derivatives (``floor`` convention), like torchvision's.

Memory: the rows are processed in chunks so that one chunk's column matrix holds at most
:func:`get_column_budget` bytes (default 1 GiB, see :func:`set_column_budget`); peak extra
memory is a small multiple of that (about 3x in backward: columns, their gradient, one corner).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

_DEFAULT_BUDGET = 1 << 30
_column_budget = [_DEFAULT_BUDGET]


def get_column_budget() -> int:
    """Bytes one chunk's column matrix may hold in the native backend (default 1 GiB)."""
    return _column_budget[0]


def set_column_budget(nbytes: int | None) -> int:
    """Set the native backend's column-buffer budget in bytes (``None`` restores 1 GiB); returns the old one.

    The batch (more precisely the ``B * H_out * W_out`` output positions) is processed in chunks
    whose column matrix ``(positions, kh * kw * C_in)`` stays within this many bytes (at least one
    output position per chunk). Smaller budgets trade speed for memory; results do not change
    beyond float rounding of the weight-gradient sum.
    """
    old = _column_budget[0]
    if nbytes is None:
        nbytes = _DEFAULT_BUDGET
    if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes <= 0:
        raise ValueError(f"column budget: expected a positive number of bytes, got {nbytes!r}")
    _column_budget[0] = nbytes
    return old


class _Geometry:
    """Static geometry of one call: sizes, strides and the per-tap base coordinates."""

    def __init__(self, input, offset, weight, stride, padding, dilation):
        self.b, self.c, self.h, self.w = input.shape
        self.co, cpg, self.kh, self.kw = weight.shape
        self.k = self.kh * self.kw
        self.groups = self.c // cpg
        self.g = offset.shape[1] // (2 * self.k)
        self.cg = self.c // self.g
        self.ho, self.wo = offset.shape[2], offset.shape[3]
        self.l = self.ho * self.wo
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        dev, dt = input.device, offset.dtype
        ky = torch.arange(self.kh, device=dev).repeat_interleave(self.kw) * dh  # (K,)
        kx = torch.arange(self.kw, device=dev).repeat(self.kh) * dw
        oy = torch.arange(self.ho, device=dev).repeat_interleave(self.wo) * sh - ph  # (L,)
        ox = torch.arange(self.wo, device=dev).repeat(self.ho) * sw - pw
        self.base_y = (oy[:, None] + ky[None, :]).to(dt)  # (L, K) integer-valued, exact in float
        self.base_x = (ox[:, None] + kx[None, :]).to(dt)


def _corners(geo: _Geometry, off_rows: torch.Tensor, mask_rows, r0: int, r1: int):
    """Corner row indices and blending weights for output rows ``[r0, r1)``.

    Args:
        off_rows: ``(B * L, K, G, 2)`` offsets in (row, tap, group, yx) order.
        mask_rows: ``(B * L, K, G)`` modulation or ``None``.

    Returns:
        ``idx``: 4 index tensors ``(n,)`` into the padded channels-last input viewed as
        ``(B * (H + 2) * (W + 2) * G, C / G)``, n = (r1 - r0) * K * G in (row, tap, group) order;
        ``wts``: 4 blending weights ``(n, 1)`` with the mask folded in;
        ``ly, lx``: fractional parts ``(n,)``; ``mask``: ``(n,)`` or None.
    """
    rows = torch.arange(r0, r1, device=off_rows.device)
    l = rows % geo.l
    off = off_rows[r0:r1]
    py = geo.base_y[l].unsqueeze(-1) + off[..., 0]  # (n_rows, K, G)
    px = geo.base_x[l].unsqueeze(-1) + off[..., 1]
    y0f, x0f = torch.floor(py), torch.floor(px)
    ly, lx = (py - y0f).reshape(-1), (px - x0f).reshape(-1)
    # corners outside [-1, H] x [-1, W] land on the zero border: the value is 0 there anyway
    y0, y1 = y0f.clamp(-1, geo.h).long(), (y0f + 1).clamp(-1, geo.h).long()
    x0, x1 = x0f.clamp(-1, geo.w).long(), (x0f + 1).clamp(-1, geo.w).long()
    wp = geo.w + 2
    plane = (rows // geo.l) * (geo.h + 2) * wp  # (n_rows,)
    gidx = torch.arange(geo.g, device=rows.device)

    def flat(yy, xx):
        pos = plane[:, None, None] + (yy + 1) * wp + (xx + 1)
        return (pos * geo.g + gidx).reshape(-1)

    idx = [flat(y0, x0), flat(y0, x1), flat(y1, x0), flat(y1, x1)]
    hy, hx = 1 - ly, 1 - lx
    wts = [hy * hx, hy * lx, ly * hx, ly * lx]
    m = None
    if mask_rows is not None:
        m = mask_rows[r0:r1].reshape(-1)
        wts = [w * m for w in wts]
    return idx, [w.unsqueeze(1) for w in wts], ly, lx, m


def _columns(src: torch.Tensor, idx, wts) -> torch.Tensor:
    """Blend the four gathered corners: ``(n, C / G)`` column rows."""
    cols = src.index_select(0, idx[0]).mul_(wts[0])
    for i, w in zip(idx[1:], wts[1:]):
        cols.addcmul_(src.index_select(0, i), w)
    return cols


def _padded_rows(input: torch.Tensor, g: int) -> torch.Tensor:
    """Zero-padded channels-last input as ``(B * (H + 2) * (W + 2) * G, C / G)`` rows."""
    b, c, h, w = input.shape
    src = input.new_zeros(b, h + 2, w + 2, c)
    src[:, 1:-1, 1:-1].copy_(input.permute(0, 2, 3, 1))
    return src.view(-1, c // g)


def _weight_matrix(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """``(groups, K * C_in / groups, C_out / groups)``: weight in (tap, channel) row order."""
    co, cpg, kh, kw = weight.shape
    return weight.reshape(groups, co // groups, cpg, kh * kw).permute(0, 3, 2, 1).reshape(groups, kh * kw * cpg, co // groups)


def _cols_by_group(cols: torch.Tensor, nrows: int, geo: _Geometry) -> torch.Tensor:
    """``(groups, rows, K * C_in / groups)`` view/copy of ``(rows * K * G, C / G)`` column rows."""
    if geo.groups == 1:
        return cols.view(1, nrows, geo.k * geo.c)
    cpg = geo.c // geo.groups
    return cols.view(nrows, geo.k, geo.groups, cpg).permute(2, 0, 1, 3).reshape(geo.groups, nrows, geo.k * cpg)


def _chunk_rows(geo: _Geometry, elem: int) -> int:
    return max(1, get_column_budget() // max(1, geo.k * geo.c * elem))


def _prepare(input, offset, mask, geo: _Geometry):
    off_rows = offset.reshape(geo.b, geo.g, geo.k, 2, geo.l).permute(0, 4, 2, 1, 3).reshape(geo.b * geo.l, geo.k, geo.g, 2)
    mask_rows = None
    if mask is not None:
        mask_rows = mask.reshape(geo.b, geo.g, geo.k, geo.l).permute(0, 3, 2, 1).reshape(geo.b * geo.l, geo.k, geo.g)
    return _padded_rows(input, geo.g), off_rows, mask_rows


class DeformConv2dFunction(torch.autograd.Function):
    """Autograd function of the native backend (see the module docstring for the algorithm)."""

    @staticmethod
    def forward(ctx, input, offset, mask, weight, bias, stride, padding, dilation):
        geo = _Geometry(input, offset, weight, stride, padding, dilation)
        ctx.geo = geo
        ctx.has_mask, ctx.has_bias = mask is not None, bias is not None
        ctx.save_for_backward(input, offset, mask, weight)
        out = input.new_empty(geo.b, geo.l, geo.co)
        if out.numel() == 0:
            return out.view(geo.b, geo.ho, geo.wo, geo.co).permute(0, 3, 1, 2).contiguous()
        src, off_rows, mask_rows = _prepare(input, offset, mask, geo)
        wmat = _weight_matrix(weight, geo.groups)
        out_rows = out.view(geo.b * geo.l, geo.groups, geo.co // geo.groups)
        step = _chunk_rows(geo, input.element_size())
        for r0 in range(0, geo.b * geo.l, step):
            r1 = min(r0 + step, geo.b * geo.l)
            idx, wts, *_ = _corners(geo, off_rows, mask_rows, r0, r1)
            cols = _cols_by_group(_columns(src, idx, wts), r1 - r0, geo)
            if geo.groups == 1:
                torch.mm(cols[0], wmat[0], out=out_rows[r0:r1, 0])
            else:
                out_rows[r0:r1] = torch.bmm(cols, wmat).transpose(0, 1)
        if bias is not None:
            out.add_(bias)
        return out.view(geo.b, geo.ho, geo.wo, geo.co).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        input, offset, mask, weight = ctx.saved_tensors
        geo: _Geometry = ctx.geo
        need_in, need_off, need_mask, need_w, need_b = ctx.needs_input_grad[:5]
        grad_bias = grad_out.sum((0, 2, 3)) if ctx.has_bias and need_b else None
        grad_in = torch.zeros_like(input) if need_in else None
        grad_off = torch.zeros_like(offset) if need_off else None
        grad_mask = torch.zeros_like(mask) if (ctx.has_mask and need_mask) else None
        grad_w = torch.zeros_like(weight) if need_w else None
        if grad_out.numel() == 0 or not (need_in or need_off or need_mask or need_w):
            return grad_in, grad_off, grad_mask, grad_w, grad_bias, None, None, None
        src, off_rows, mask_rows = _prepare(input, offset, mask, geo)
        wmat = _weight_matrix(weight, geo.groups)  # (groups, K*cpg, cog)
        go = grad_out.permute(0, 2, 3, 1).reshape(geo.b * geo.l, geo.groups, geo.co // geo.groups).transpose(0, 1)
        gw = torch.zeros_like(wmat) if need_w else None
        g_src = torch.zeros_like(src) if need_in else None
        n_rows = geo.b * geo.l
        g_off_rows = offset.new_empty(n_rows, geo.k, geo.g, 2) if need_off else None
        g_mask_rows = offset.new_empty(n_rows, geo.k, geo.g) if grad_mask is not None else None
        need_geom = need_in or need_off or grad_mask is not None
        step = _chunk_rows(geo, input.element_size())
        for r0 in range(0, n_rows, step):
            r1 = min(r0 + step, n_rows)
            idx, wts, ly, lx, m = _corners(geo, off_rows, mask_rows, r0, r1)
            go_c = go[:, r0:r1]
            if need_w:
                cols = _cols_by_group(_columns(src, idx, wts), r1 - r0, geo)
                gw.baddbmm_(cols.transpose(1, 2), go_c)
                del cols
            if not need_geom:
                continue
            gcols = torch.bmm(go_c, wmat.transpose(1, 2))  # (groups, rows, K*cpg)
            if geo.groups == 1:
                gcols = gcols.view(-1, geo.cg)
            else:
                cpg = geo.c // geo.groups
                gcols = gcols.view(geo.groups, r1 - r0, geo.k, cpg).permute(1, 2, 0, 3).reshape(-1, geo.cg)
            if need_off or grad_mask is not None:
                s = [torch.bmm(src.index_select(0, i).unsqueeze(1), gcols.unsqueeze(2)).view(-1) for i in idx]
                if need_off:
                    mm = 1 if m is None else m
                    gy = ((1 - lx) * (s[2] - s[0]) + lx * (s[3] - s[1])) * mm
                    gx = ((1 - ly) * (s[1] - s[0]) + ly * (s[3] - s[2])) * mm
                    g_off_rows[r0:r1] = torch.stack([gy, gx], 1).view(r1 - r0, geo.k, geo.g, 2)
                if grad_mask is not None:
                    hy, hx = 1 - ly, 1 - lx
                    gm = hy * hx * s[0] + hy * lx * s[1] + ly * hx * s[2] + ly * lx * s[3]
                    g_mask_rows[r0:r1] = gm.view(r1 - r0, geo.k, geo.g)
            if need_in:
                for i, w in zip(idx, wts):
                    g_src.index_add_(0, i, gcols * w)
        if need_w:
            co, cpg = geo.co, geo.c // geo.groups
            grad_w = gw.view(geo.groups, geo.kh, geo.kw, cpg, co // geo.groups).permute(0, 4, 3, 1, 2).reshape(co, cpg, geo.kh, geo.kw)
        if need_in:
            grad_in = g_src.view(geo.b, geo.h + 2, geo.w + 2, geo.c)[:, 1:-1, 1:-1].permute(0, 3, 1, 2).contiguous()
        if need_off:
            grad_off = g_off_rows.view(geo.b, geo.l, geo.k, geo.g, 2).permute(0, 3, 2, 4, 1).reshape(offset.shape)
        if grad_mask is not None:
            grad_mask = g_mask_rows.view(geo.b, geo.l, geo.k, geo.g).permute(0, 3, 2, 1).reshape(mask.shape)
        return grad_in, grad_off, grad_mask, grad_w, grad_bias, None, None, None


def deform_conv2d_native(input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask=None):
    """Native deformable convolution (inputs already validated; int pairs for stride/padding/dilation)."""
    return DeformConv2dFunction.apply(input, offset, mask, weight, bias, stride, padding, dilation)
