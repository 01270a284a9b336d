"""Deformable convolution (DCNv1; modulated DCNv2 with ``mask``) with selectable backends.

Same signature and semantics as :func:`torchvision.ops.deform_conv2d`:

* ``input``: ``(B, C_in, H, W)``;
* ``offset``: ``(B, 2 * offset_groups * kh * kw, H_out, W_out)``, per tap ``(dy, dx)`` in pixels;
* ``weight``: ``(C_out, C_in / groups, kh, kw)``;
* ``mask``: ``(B, offset_groups * kh * kw, H_out, W_out)`` or ``None``.

Backends (``BACKENDS``):

* ``native``: this package's op (:mod:`robustbench_geo.ops._deform_native`): bilinear sampling
  into a channels-last column matrix (compiled CPU kernels, pure-PyTorch fallback) + GEMMs,
  memory bounded by :func:`set_column_budget` (default 1 GiB). Tested on CPU (float32/float64).
* ``torchvision``: :func:`torchvision.ops.deform_conv2d`, the reference.
* ``triton``: implicit-GEMM Triton kernels (:mod:`robustbench_geo.ops._deform_triton`) for CUDA
  tensors; no column buffer in global memory. Tested against the other two in Triton's CPU
  interpreter (``TRITON_INTERPRET=1``) and, in float32, on an H200; slower than torchvision there on
  large shapes (``docs/gpu.md``), so ``auto`` never picks it.

``backend="auto"`` picks the fastest correct one for the tensors' device: ``native`` on CPU when its
compiled kernel is available (several times faster than torchvision there, see
``benchmarks/deform_conv.py``), else torchvision (the pure-PyTorch fallback of ``native`` measured
slower than torchvision on a loaded 2-core machine), and torchvision's CUDA op on GPUs (the native
op has not been measured or tested on a GPU).

Gradients at sampling coordinates that are exact integers (kinks of bilinear interpolation) are
right-hand derivatives in both backends. Vision issue #6885: at a coordinate of exactly ``-1`` (a
zero offset on a padding-1 border tap) the forward treats the point as outside the image (value 0,
as for every coordinate below), and the original DCN code returns offset gradient 0, but
torchvision's backward returns the right-hand derivative; ``native`` returns the right-hand
derivative too (the one-sided finite difference from the right confirms it). Inside ``(-1, 0)``
the op is smooth and both equal the central difference (checked with torchvision 0.29.1).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torchvision.ops as tvops
from torch.nn.modules.utils import _pair

from robustbench_geo.check import unknown_name_error
from robustbench_geo.ops import _deform_kernel
from robustbench_geo.ops._deform_native import deform_conv2d_native, get_column_budget, set_column_budget
from robustbench_geo.ops._deform_triton import deform_conv2d_triton


def _torchvision(input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None):
    return tvops.deform_conv2d(input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)


def _native(input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None):
    return deform_conv2d_native(input, offset, weight, bias, _pair(stride), _pair(padding), _pair(dilation), mask)


def _triton(input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None):
    return deform_conv2d_triton(input, offset, weight, bias, _pair(stride), _pair(padding), _pair(dilation), mask)


#: backend name -> callable with :func:`deform_conv2d`'s signature (without ``backend``)
BACKENDS = {"native": _native, "torchvision": _torchvision, "triton": _triton}

#: preferred backends per device type, fastest first (``auto`` takes the first registered);
#: on CUDA torchvision's kernel stays the default: on an H200 the triton kernel was 0.56-0.76x its speed
#: on the two large shapes and 0.9-1.4x on the small ones (``benchmarks/deform_conv.py``, ``docs/gpu.md``)
_AUTO_ORDER = {"cpu": ["native", "torchvision"], "cuda": ["torchvision"]}


def _fast(name: str, device_type: str) -> bool:
    """Whether backend ``name`` is the fast choice on this device type (native: with its compiled CPU kernel;
    its pure-PyTorch fallback measured slower than torchvision, see ``benchmarks/deform_conv.py``)."""
    if name == "native":
        return device_type == "cpu" and _deform_kernel.available()
    return name in BACKENDS


def resolve_backend(backend: str = "auto", device: torch.device | str = "cpu") -> str:
    """The concrete backend name that ``backend`` means on ``device`` (``auto``: the fastest correct one)."""
    if backend == "auto":
        dev = torch.device(device).type
        for name in _AUTO_ORDER.get(dev, ["torchvision"]):
            if _fast(name, dev):
                return name
        return "torchvision"
    if backend not in BACKENDS:
        raise unknown_name_error("deformable-convolution backend", backend, ["auto", *BACKENDS])
    return backend


def _check_args(input, offset, weight, bias, stride, padding, dilation, mask) -> None:
    """Validate shapes/dtypes with "expected ..., got ..." messages (torchvision's semantics)."""
    for name, t in (("input", input), ("offset", offset), ("weight", weight)) + ((("mask", mask),) if mask is not None else ()):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected a 4-D tensor, got {got}")
        if t.dtype != input.dtype or t.device != input.device:
            raise ValueError(f"{name}: expected dtype {input.dtype} on {input.device} like input, got {t.dtype} on {t.device}")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    if min(sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"expected stride >= 1, dilation >= 1, padding >= 0, got stride={stride}, padding={padding}, dilation={dilation}")
    b, c, h, w = input.shape
    co, cpg, kh, kw = weight.shape
    if cpg == 0 or c % cpg or co % (c // cpg):
        raise ValueError(f"weight: expected shape (C_out, C_in / groups, kh, kw) with groups dividing C_in={c} and C_out, got {tuple(weight.shape)}")
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"input: expected a padded input at least as large as the dilated kernel, got {h}x{w} with kernel {kh}x{kw}, padding {(ph, pw)}, dilation {(dh, dw)}")
    taps = kh * kw
    g = offset.shape[1] // (2 * taps) if offset.shape[1] % (2 * taps) == 0 else 0
    if g == 0 or c % g or tuple(offset.shape) != (b, 2 * g * taps, ho, wo):
        raise ValueError(f"offset: expected shape ({b}, 2 * offset_groups * {taps}, {ho}, {wo}) with offset_groups dividing {c}, got {tuple(offset.shape)}")
    if mask is not None and tuple(mask.shape) != (b, g * taps, ho, wo):
        raise ValueError(f"mask: expected shape {(b, g * taps, ho, wo)}, got {tuple(mask.shape)}")
    if bias is not None and tuple(bias.shape) != (co,):
        raise ValueError(f"bias: expected shape ({co},), got {tuple(bias.shape)}")


def deform_conv2d(input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None, *, backend="auto"):
    """Deformable 2-D convolution; see the module docstring for shapes.

    Args:
        input: ``(B, C_in, H, W)``.
        offset: ``(B, 2 * offset_groups * kh * kw, H_out, W_out)``; per tap ``(dy, dx)`` in pixels.
        weight: ``(C_out, C_in / groups, kh, kw)``.
        bias: ``(C_out,)`` or None.
        stride, padding, dilation: int or ``(h, w)`` pair, pixels.
        mask: ``(B, offset_groups * kh * kw, H_out, W_out)`` modulation (DCNv2) or None (DCNv1).
        backend: ``auto``, ``native``, ``torchvision`` or ``triton`` (CUDA tensors; raises where triton or
            CUDA is missing, unless ``TRITON_INTERPRET=1`` runs it on CPU tensors in Triton's interpreter).

    Returns:
        ``(B, C_out, H_out, W_out)``.
    """
    _check_args(input, offset, weight, bias, stride, padding, dilation, mask)
    fn = BACKENDS[resolve_backend(backend, input.device)]
    return fn(input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)


class DeformConv2d(nn.Module):
    """Module holding the weight/bias of a deformable convolution; offsets and mask come at call time."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 backend: str = "auto"):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups: expected in_channels ({in_channels}) and out_channels ({out_channels}) divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding, self.dilation = map(_pair, (kernel_size, stride, padding, dilation))
        self.backend = backend
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            nn.init.uniform_(self.bias, -1 / fan_in ** 0.5, 1 / fan_in ** 0.5)

    def forward(self, input, offset, mask=None):
        return deform_conv2d(input, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask, backend=self.backend)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, backend={self.backend!r}")
