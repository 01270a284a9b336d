"""The ``triton`` deformable-convolution backend: implicit-GEMM Triton kernels, autograd, dispatch.

Same function as the other backends (see :mod:`robustbench_geo.ops.deform_conv`); the kernels are
in :mod:`robustbench_geo.ops._deform_triton_kernels`. Design (details in ``docs/gpu.md``):

* **Forward**: an implicit GEMM ``(B * L) x (K * C_in / groups) -> C_out / groups`` per
  convolution group. A program owns a ``BLOCK_M`` x ``BLOCK_N`` output tile; for every tap and
  offset group it computes the rows' sampling points, corner offsets and bilinear weights once,
  then gathers ``BLOCK_K``-channel slices of the four corners from the channels-last input,
  blends them in registers into the A tile and meets the weight tile in ``tl.dot``. No column
  buffer exists in global memory.
* **Input, offset and mask gradients**: one program per (row block, tap, offset group) forms the
  column gradient ``grad_out @ W^T`` slice by slice in registers, scatters it onto the four
  corners of each point with atomic adds (the input gradient), and reduces it against the
  corner values into the offset and mask gradients, which it stores without atomics because it
  owns the whole offset group.
* **Weight gradient**: an implicit GEMM ``sample^T @ grad_out`` whose A tile is re-sampled from
  the input (never stored); rows are split over programs so that small weights still fill the
  GPU, and the splits meet by atomic adds into ``grad_weight``.

Float32 and float64. Float32 tiles are multiplied in IEEE float32 unless PyTorch's float32
matmul precision allows TF32 (``torch.backends.cuda.matmul.allow_tf32``), the same rule
torchvision's op follows through cuBLAS. Atomic adds make the input and weight gradients
run-to-run non-deterministic in the last bits, like torchvision's CUDA backward.

Devices: CUDA tensors. With ``TRITON_INTERPRET=1`` in the environment before Triton is first
imported (``import torch`` imports it), Triton's interpreter runs the same kernels on CPU tensors
(slowly; this is how the tests check them without a GPU, ``tests/ops/test_deform_triton.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

try:  # triton ships with torch on Linux x86_64 (and torch imports it), elsewhere it may be missing
    import triton
    from triton.runtime.interpreter import InterpretedFunction

    from robustbench_geo.ops import _deform_triton_kernels as _kernels
except ImportError:
    triton = _kernels = InterpretedFunction = None

_INT32_MAX = 2 ** 31 - 1


def interpreter_enabled() -> bool:
    """Whether the kernels were decorated for Triton's interpreter (``TRITON_INTERPRET=1`` at import)."""
    return _kernels is not None and isinstance(_kernels.deform_fwd_kernel, InterpretedFunction)


def unavailable_reason(device: torch.device | str) -> str | None:
    """Why the triton backend cannot run on ``device`` (None when it can)."""
    dev = torch.device(device)
    if triton is None:
        return "backend='triton' needs the triton package (it ships with PyTorch on Linux x86_64; pip install triton)"
    if dev.type == "cuda":
        return None
    if dev.type == "cpu" and interpreter_enabled():
        return None
    return (f"backend='triton' runs on CUDA tensors, got {dev.type} tensors; use backend='native' or 'torchvision' "
            f"there, or set TRITON_INTERPRET=1 before importing torch to run the kernels in Triton's (slow) CPU "
            f"interpreter for testing")


def _pow2_between(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(1, n))))


@dataclass(frozen=True)
class Tiles:
    """Tile sizes of one call (powers of two >= 16; ``weight_rows``: rows per weight-gradient program,
    a multiple of ``block_m``). Chosen by :class:`_Call`; tests pass small ones to exercise every loop."""

    block_m: int
    block_n: int
    block_k: int
    weight_rows: int | None = None

    def __post_init__(self):
        sizes = (self.block_m, self.block_n, self.block_k)
        if any(v < 16 or v & (v - 1) for v in sizes):
            raise ValueError(f"tiles: expected powers of two >= 16 (tl.dot's minimum), got {sizes}")
        if self.weight_rows is not None and (self.weight_rows < 1 or self.weight_rows % self.block_m):
            raise ValueError(f"tiles: expected weight_rows a positive multiple of block_m={self.block_m}, "
                             f"got {self.weight_rows}")


class _Call:
    """Sizes, tile shapes and launch constants of one call."""

    def __init__(self, input, offset, weight, stride, padding, dilation, has_mask, tiles: Tiles | None = None):
        self.b, self.c, self.h, self.w = input.shape
        self.co, self.cpg, self.kh, self.kw = weight.shape
        self.k = self.kh * self.kw
        self.groups = self.c // self.cpg
        self.cog = self.co // self.groups
        self.g = offset.shape[1] // (2 * self.k)
        self.cg = self.c // self.g
        self.ho, self.wo = offset.shape[2:]
        self.l = self.ho * self.wo
        self.m = self.b * self.l
        self.has_mask = has_mask
        self.interpret = interpreter_enabled()
        for name, n in (("input", input.numel()), ("offset", offset.numel()), ("output", self.b * self.co * self.l)):
            if n > _INT32_MAX:
                raise ValueError(f"{name}: expected fewer than 2**31 elements for backend='triton' (32-bit indexing), "
                                 f"got {n}; split the batch")
        if self.interpret:  # the interpreter's cost is per operation, not per element: few, large tiles
            self.block_m = _pow2_between(self.m, 16, 256)
            self.block_n = _pow2_between(self.cog, 16, 64)
            self.block_k = _pow2_between(min(self.cpg, self.cg), 16, 64)
        else:  # register-sized tiles, untuned (docs/gpu.md): wide layers re-sample the input less with wide N tiles
            f64 = input.dtype == torch.float64
            self.block_m = 32 if f64 else 64
            self.block_n = _pow2_between(self.cog, 16, 32 if f64 else 128)
            self.block_k = _pow2_between(min(self.cpg, self.cg), 16, 16 if f64 else 32)
        self.weight_rows = None
        if tiles is not None:
            self.block_m, self.block_n, self.block_k, self.weight_rows = (tiles.block_m, tiles.block_n, tiles.block_k,
                                                                          tiles.weight_rows)
        self.num_warps = 8 if self.block_m * self.block_n >= 64 * 128 else 4
        if triton.cdiv(self.m, self.block_m) > 65535:  # CUDA's limit on the second grid dimension
            raise ValueError(f"input: expected at most {65535 * self.block_m} output positions (B * H_out * W_out) for "
                             f"backend='triton', got {self.m}; split the batch")
        self.precision = "tf32" if (input.dtype == torch.float32 and not self.interpret
                                    and torch.backends.cuda.matmul.allow_tf32) else "ieee"
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        self.geometry = (self.m, self.l, self.h, self.w, self.c, self.co, self.wo, self.g, self.k, self.kw, self.cg,
                         self.cpg, self.cog, sh, sw, ph, pw, dh, dw)

    def weight_split(self, device: torch.device) -> int:
        """Rows per program of the weight-gradient kernel: about 4 programs per multiprocessor in all."""
        if self.weight_rows is not None:
            return self.weight_rows
        tiles = self.k * triton.cdiv(self.cpg, self.block_k) * triton.cdiv(self.cog, self.block_n) * self.groups
        sms = 1 if self.interpret else torch.cuda.get_device_properties(device).multi_processor_count
        splits = max(1, min(triton.cdiv(self.m, 4 * self.block_m), triton.cdiv(4 * sms, tiles)))
        return triton.cdiv(triton.cdiv(self.m, splits), self.block_m) * self.block_m


def _weight_rows(weight: torch.Tensor, call: _Call, transposed: bool) -> torch.Tensor:
    """``(groups, K, cpg, cog)`` (or ``(groups, K, cog, cpg)`` when ``transposed``) copy of the weight."""
    w = weight.reshape(call.groups, call.cog, call.cpg, call.k)
    return (w.permute(0, 3, 1, 2) if transposed else w.permute(0, 3, 2, 1)).contiguous()


class DeformConv2dTriton(torch.autograd.Function):
    """Autograd function of the triton backend (see the module docstring)."""

    @staticmethod
    def forward(ctx, input, offset, mask, weight, bias, stride, padding, dilation, tiles):
        call = _Call(input, offset, weight, stride, padding, dilation, mask is not None, tiles)
        x = input.permute(0, 2, 3, 1).contiguous()  # channels-last (free for channels_last inputs)
        off = offset.contiguous()
        msk = mask.contiguous() if mask is not None else off
        out = input.new_empty(call.b, call.co, call.ho, call.wo)
        ctx.call, ctx.has_bias = call, bias is not None
        ctx.save_for_backward(x, off, mask.contiguous() if mask is not None else None, weight)
        if call.m == 0 or call.co == 0:
            return out
        grid = (triton.cdiv(call.cog, call.block_n), triton.cdiv(call.m, call.block_m), call.groups)
        _kernels.deform_fwd_kernel[grid](
            x, off, msk, _weight_rows(weight, call, False), bias if bias is not None else out, out, *call.geometry,
            HAS_MASK=mask is not None, HAS_BIAS=bias is not None, PRECISION=call.precision,
            BLOCK_M=call.block_m, BLOCK_N=call.block_n, BLOCK_K=call.block_k, num_warps=call.num_warps)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, off, mask, weight = ctx.saved_tensors
        call: _Call = ctx.call
        need_in, need_off, need_mask, need_w, need_b = ctx.needs_input_grad[:5]
        need_mask = need_mask and mask is not None
        grad_bias = grad_out.sum((0, 2, 3)) if ctx.has_bias and need_b else None
        gx = x.new_zeros(x.shape) if need_in else None
        goff = torch.zeros_like(off) if need_off or need_mask else None
        gmask = torch.zeros_like(mask) if need_mask else None
        gw = x.new_zeros(call.groups, call.k, call.cpg, call.cog) if need_w else None
        if call.m > 0 and call.co > 0:
            go = grad_out.contiguous()
            msk = mask if mask is not None else off
            common = dict(HAS_MASK=mask is not None, PRECISION=call.precision, BLOCK_M=call.block_m,
                          BLOCK_N=call.block_n, BLOCK_K=call.block_k, num_warps=call.num_warps)
            if need_in or need_off or need_mask:
                grid = (call.k * call.g, triton.cdiv(call.m, call.block_m))
                _kernels.deform_bwd_data_kernel[grid](
                    x, off, msk, _weight_rows(weight, call, True), go, gx if gx is not None else x,
                    goff if goff is not None else off, gmask if gmask is not None else msk, *call.geometry,
                    NEED_INPUT=need_in, NEED_POINT=need_off or need_mask, **common)
            if need_w:
                rows = call.weight_split(x.device)
                grid = (call.k * triton.cdiv(call.cpg, call.block_k), triton.cdiv(call.cog, call.block_n),
                        call.groups * triton.cdiv(call.m, rows))
                _kernels.deform_bwd_weight_kernel[grid](x, off, msk, go, gw, *call.geometry, rows, **common)
        grad_in = gx.permute(0, 3, 1, 2) if need_in else None  # (B, C, H, W) view of the channels-last gradient
        grad_w = None
        if need_w:
            grad_w = gw.permute(0, 3, 2, 1).reshape(call.co, call.cpg, call.kh, call.kw)
        return (grad_in, goff if need_off else None, gmask, grad_w, grad_bias, None, None, None, None)


def deform_conv2d_triton(input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask=None,
                         tiles: Tiles | None = None):
    """Triton deformable convolution (inputs already validated; int pairs for stride/padding/dilation).

    ``tiles``: tile sizes instead of the automatic choice (for tests and tuning).
    """
    reason = unavailable_reason(input.device)
    if reason is not None:
        raise RuntimeError(reason)
    if input.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"input: expected float32 or float64 for backend='triton', got {input.dtype}")
    return DeformConv2dTriton.apply(input, offset, mask, weight, bias, stride, padding, dilation, tiles)
