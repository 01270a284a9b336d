"""Native deformable convolution: bilinear sampling into a column matrix + GEMMs, torchvision's semantics.

For every output row ``r = (b, ho, wo)``, tap ``k = (i, j)`` and offset group ``g`` the sampling
point is (pixels)

    y = ho * stride_h - pad_h + i * dilation_h + offset[b, g, k, 0, ho, wo]
    x = wo * stride_w - pad_w + j * dilation_w + offset[b, g, k, 1, ho, wo]

and the input is read there by bilinear interpolation with zeros outside the image (the same
function as torchvision's ``bilinear_interpolate``, which is 0 for ``y <= -1``, ``y >= H``, ...).
The bilinear weights of a (row, tap, group) are computed once (modulation mask folded in) and
applied to its ``C / offset_groups`` channels, read from a zero-padded channels-last copy of the
input; corners beyond the border are clamped onto the zero padding, so no validity masks are
needed. The result is a channels-last column matrix ``(rows, kh * kw * C_in)`` that meets the
weight in one (batched) GEMM writing the NCHW output directly. Backward: ``grad_columns`` and the
weight gradient are GEMMs; offset and mask gradients come from the four per-corner dot products
``<grad_columns, corner>``; the input gradient is the weighted ``grad_columns`` scattered back onto
the four corners. Derivatives at integer sampling coordinates (the kinks of bilinear
interpolation) are right-hand derivatives (``floor`` convention), like torchvision's.

Two implementations of the sampling steps compute the same function:

* compiled CPU kernels (:mod:`robustbench_geo.ops._deform_kernel`, float32/float64; built on first
  use with the system C++ compiler, threads over rows / over images for the scatter);
* pure PyTorch (any device/dtype): ``index_select`` gathers, ``bmm`` dot products and
  ``index_add_``; the fallback where no compiler exists. It is memory-bound and measured slower than
  torchvision on the (loaded) 2-core development machine, so ``backend="auto"`` then picks torchvision.

Memory: output rows are processed in chunks (whole images, or parts of one image when a single
image is too large) whose column matrix holds at most :func:`get_column_budget` bytes (default
1 GiB, :func:`set_column_budget`). When everything fits one chunk, the forward's column matrix is
kept for the weight gradient; otherwise backward recomputes it chunk by chunk. Peak extra memory
is about twice the budget in backward (columns and their gradient), plus a padded copy of the
input and, in the pure-PyTorch path, one gathered corner.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from robustbench_geo.ops import _deform_kernel as _kernel

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

    def __init__(self, input, offset, weight, stride, padding, dilation, has_mask):
        self.b, self.c, self.h, self.w = input.shape
        self.co, cpg, self.kh, self.kw = weight.shape
        self.k = self.kh * self.kw
        self.groups = self.c // cpg
        self.g = offset.shape[1] // (2 * self.k)
        self.cg = self.c // self.g
        self.ho, self.wo = offset.shape[2], offset.shape[3]
        self.l = self.ho * self.wo
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.has_mask = has_mask
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
    y0, y1 = _clamp_index(y0f, geo.h), _clamp_index(y0f + 1, geo.h)
    x0, x1 = _clamp_index(x0f, geo.w), _clamp_index(x0f + 1, geo.w)
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


def _clamp_index(v: torch.Tensor, hi: int) -> torch.Tensor:
    """Integer corner coordinate clamped to ``[-1, hi]`` (NaN -> -1, a zero-border read)."""
    return v.clamp(-1, hi).nan_to_num_(-1.0).long()


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


def _chunks(geo: _Geometry, elem: int) -> list[tuple[int, int]]:
    """Output-row ranges ``[r0, r1)`` whose column matrix fits the budget: whole images, or parts of one."""
    rows = max(1, get_column_budget() // max(1, geo.k * geo.c * elem))
    n = geo.b * geo.l
    if rows >= geo.l:
        step = (rows // geo.l) * geo.l
        return [(r0, min(r0 + step, n)) for r0 in range(0, n, step)]
    return [(b * geo.l + l0, b * geo.l + min(l0 + rows, geo.l)) for b in range(geo.b) for l0 in range(0, geo.l, rows)]


def _use_kernel(impl: str, input: torch.Tensor) -> bool:
    if impl not in ("auto", "kernel", "torch"):
        raise ValueError(f"impl: expected 'auto', 'kernel' or 'torch', got {impl!r}")
    if impl == "torch":
        return False
    ok = input.device.type == "cpu" and input.dtype in (torch.float32, torch.float64) and _kernel.available()
    if impl == "kernel" and not ok:
        raise RuntimeError("impl='kernel': the compiled CPU kernel needs a C++ compiler and float32/float64 CPU tensors")
    return ok


def _write_output(out: torch.Tensor, cols: torch.Tensor, wmat: torch.Tensor, geo: _Geometry, r0: int, r1: int) -> None:
    """``out[(B, C_out, L)] <- columns @ weight`` for rows ``[r0, r1)`` (whole images or part of one)."""
    n = r1 - r0
    cols = _cols_by_group(cols, n, geo)  # (groups, n, K*cpg)
    cog = geo.co // geo.groups
    out4 = out.view(geo.b, geo.groups, cog, geo.l)
    whole = r0 % geo.l == 0 and r1 % geo.l == 0
    if geo.groups == 1 and whole and geo.l >= 128:  # batched GEMM straight into NCHW (measured faster for L >= ~128)
        b0, b1 = r0 // geo.l, r1 // geo.l
        torch.matmul(wmat[0].t(), cols[0].view(b1 - b0, geo.l, -1).transpose(1, 2), out=out4[b0:b1, 0])
        return
    res = torch.bmm(cols, wmat)  # (groups, n, cog)
    if whole:
        b0, b1 = r0 // geo.l, r1 // geo.l
        out4[b0:b1].copy_(res.view(geo.groups, b1 - b0, geo.l, cog).permute(1, 0, 3, 2))
    else:
        b, l0 = r0 // geo.l, r0 % geo.l
        out4[b, :, :, l0:l0 + n].copy_(res.transpose(1, 2))


class DeformConv2dFunction(torch.autograd.Function):
    """Autograd function of the native backend (see the module docstring for the algorithm)."""

    @staticmethod
    def forward(ctx, input, offset, mask, weight, bias, stride, padding, dilation, impl):
        geo = _Geometry(input, offset, weight, stride, padding, dilation, mask is not None)
        ctx.geo, ctx.has_bias, ctx.cols = geo, bias is not None, None
        ctx.save_for_backward(weight)
        out = input.new_empty(geo.b, geo.co, geo.ho, geo.wo)
        sampler = (_KernelSampler if _use_kernel(impl, input) else _TorchSampler)(geo, input, offset, mask)
        ctx.sampler = sampler
        if out.numel() == 0:
            return out
        wmat = _weight_matrix(weight, geo.groups)
        chunks = _chunks(geo, input.element_size())
        for r0, r1 in chunks:
            cols = sampler.columns(r0, r1)
            if len(chunks) == 1 and ctx.needs_input_grad[3]:  # one chunk: keep it for the weight gradient
                ctx.cols = cols
            _write_output(out, cols, wmat, geo, r0, r1)
        if bias is not None:
            out.add_(bias.view(-1, 1, 1))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (weight,) = ctx.saved_tensors
        geo: _Geometry = ctx.geo
        sampler = ctx.sampler
        need_in, need_off, need_mask, need_w, need_b = ctx.needs_input_grad[:5]
        need_mask = need_mask and geo.has_mask
        grad_bias = grad_out.sum((0, 2, 3)) if ctx.has_bias and need_b else None
        grads = [None, None, None, None]
        if grad_out.numel() == 0 or not (need_in or need_off or need_mask or need_w):
            shapes = (sampler.input_shape, sampler.offset_shape, sampler.mask_shape, weight.shape)
            grads = [grad_out.new_zeros(sh) if n else None for sh, n in zip(shapes, (need_in, need_off, need_mask, need_w))]
            return (*grads, grad_bias, None, None, None, None)
        wmat = _weight_matrix(weight, geo.groups)  # (groups, K*cpg, cog)
        wmat_t = wmat.transpose(1, 2).contiguous() if geo.groups > 1 else None
        go = grad_out.permute(0, 2, 3, 1).reshape(geo.b * geo.l, geo.groups, geo.co // geo.groups).transpose(0, 1)
        gw = torch.zeros_like(wmat) if need_w else None
        sampler.allocate(need_in, need_off, need_mask)
        for r0, r1 in _chunks(geo, grad_out.element_size()):
            go_c = go[:, r0:r1]
            if need_w:
                cols = _cols_by_group(sampler.columns(r0, r1) if ctx.cols is None else ctx.cols, r1 - r0, geo)
                if geo.groups == 1:  # mm takes transposed operands without copies; bmm may not
                    gw[0].addmm_(cols[0].t(), go_c[0])
                else:
                    gw.baddbmm_(cols.transpose(1, 2), go_c)
                del cols
            if need_in or need_off or need_mask:
                if geo.groups == 1:
                    gcols = torch.mm(go_c[0], wmat[0].t())
                else:  # (groups, rows, K*cpg) -> (rows, K, groups, cpg)
                    cpg = geo.c // geo.groups
                    gcols = torch.bmm(go_c, wmat_t).view(geo.groups, r1 - r0, geo.k, cpg).permute(1, 2, 0, 3)
                sampler.step(r0, r1, gcols.reshape(-1, geo.cg))
        if need_w:
            co, cpg = geo.co, geo.c // geo.groups
            grads[3] = gw.view(geo.groups, geo.kh, geo.kw, cpg, co // geo.groups).permute(0, 4, 3, 1, 2).reshape(co, cpg, geo.kh, geo.kw)
        grads[:3] = sampler.finish()
        return (*grads, grad_bias, None, None, None, None)


class _TorchSampler:
    """Pure-PyTorch sampling: ``index_select`` gathers, per-corner dot products, ``index_add_`` scatter."""

    def __init__(self, geo, input, offset, mask):
        self.geo, self.input_shape, self.offset_shape = geo, input.shape, offset.shape
        self.mask_shape = None if mask is None else mask.shape
        self.src = _padded_rows(input, geo.g)
        self.off_rows, self.mask_rows = _rows(offset, mask, geo)

    def columns(self, r0, r1):
        idx, wts, *_ = _corners(self.geo, self.off_rows, self.mask_rows, r0, r1)
        return _columns(self.src, idx, wts)

    def allocate(self, need_in, need_off, need_mask):
        n = self.geo.b * self.geo.l
        self.g_src = torch.zeros_like(self.src) if need_in else None
        self.g_off = self.src.new_empty(n, self.geo.k, self.geo.g, 2) if need_off else None
        self.g_mask = self.src.new_empty(n, self.geo.k, self.geo.g) if need_mask else None

    def step(self, r0, r1, gcols):
        geo = self.geo
        idx, wts, ly, lx, m = _corners(geo, self.off_rows, self.mask_rows, r0, r1)
        if self.g_off is not None or self.g_mask is not None:
            s = [torch.bmm(self.src.index_select(0, i).unsqueeze(1), gcols.unsqueeze(2)).view(-1) for i in idx]
            if self.g_off is not None:
                mm = 1 if m is None else m
                gy = ((1 - lx) * (s[2] - s[0]) + lx * (s[3] - s[1])) * mm
                gx = ((1 - ly) * (s[1] - s[0]) + ly * (s[3] - s[2])) * mm
                self.g_off[r0:r1] = torch.stack([gy, gx], 1).view(r1 - r0, geo.k, geo.g, 2)
            if self.g_mask is not None:
                hy, hx = 1 - ly, 1 - lx
                gm = hy * hx * s[0] + hy * lx * s[1] + ly * hx * s[2] + ly * lx * s[3]
                self.g_mask[r0:r1] = gm.view(r1 - r0, geo.k, geo.g)
        if self.g_src is not None:
            for i, w in zip(idx, wts):
                self.g_src.index_add_(0, i, gcols * w)

    def finish(self):
        geo, out = self.geo, [None, None, None]
        if self.g_src is not None:
            out[0] = _unpad(self.g_src, geo)
        if self.g_off is not None:
            out[1] = self.g_off.view(geo.b, geo.l, geo.k, geo.g, 2).permute(0, 3, 2, 4, 1).reshape(self.offset_shape)
        if self.g_mask is not None:
            out[2] = self.g_mask.view(geo.b, geo.l, geo.k, geo.g).permute(0, 3, 2, 1).reshape(self.mask_shape)
        return out


class _KernelSampler:
    """Compiled sampling (:mod:`robustbench_geo.ops._deform_kernel`): one fused pass per chunk."""

    def __init__(self, geo, input, offset, mask):
        self.geo, self.input_shape, self.offset_shape = geo, input.shape, offset.shape
        self.mask_shape = None if mask is None else mask.shape
        self.src = _padded_rows(input, 1)
        self.off = offset.contiguous()
        self.mask = None if mask is None else mask.contiguous()
        self.prm = _kernel.params(geo)

    def columns(self, r0, r1):
        cols = self.src.new_empty((r1 - r0) * self.geo.k, self.geo.c)
        _kernel.columns(self.src, self.off, self.mask, cols, self.prm, r0, r0, r1)
        return cols

    def allocate(self, need_in, need_off, need_mask):
        self.g_src = torch.zeros_like(self.src) if need_in else None
        self.g_off = torch.zeros_like(self.off) if need_off else None
        self.g_mask = torch.zeros_like(self.mask) if need_mask else None

    def step(self, r0, r1, gcols):
        _kernel.backward(self.src, self.off, self.mask, gcols.contiguous(), self.g_src, self.g_off, self.g_mask, self.prm,
                         self.geo.l, r0, r0, r1)

    def finish(self):
        g_in = None if self.g_src is None else _unpad(self.g_src, self.geo)
        return [g_in, self.g_off, self.g_mask]


def _unpad(g_src: torch.Tensor, geo: _Geometry) -> torch.Tensor:
    """Padded channels-last rows -> ``(B, C, H, W)`` input gradient."""
    return g_src.view(geo.b, geo.h + 2, geo.w + 2, geo.c)[:, 1:-1, 1:-1].permute(0, 3, 1, 2).contiguous()


def _rows(offset, mask, geo: _Geometry):
    """Offsets as ``(B * L, K, G, 2)`` and mask as ``(B * L, K, G)`` rows (or None)."""
    off_rows = offset.reshape(geo.b, geo.g, geo.k, 2, geo.l).permute(0, 4, 2, 1, 3).reshape(geo.b * geo.l, geo.k, geo.g, 2)
    mask_rows = None
    if mask is not None:
        mask_rows = mask.reshape(geo.b, geo.g, geo.k, geo.l).permute(0, 3, 2, 1).reshape(geo.b * geo.l, geo.k, geo.g)
    return off_rows, mask_rows


def deform_conv2d_native(input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask=None,
                         impl: str = "auto"):
    """Native deformable convolution (inputs already validated; int pairs for stride/padding/dilation).

    ``impl``: ``"kernel"`` (compiled CPU kernels), ``"torch"`` (pure PyTorch, any device) or ``"auto"``
    (the kernel where it is available: CPU, float32/float64, a C++ compiler).
    """
    return DeformConv2dFunction.apply(input, offset, mask, weight, bias, stride, padding, dilation, impl)
